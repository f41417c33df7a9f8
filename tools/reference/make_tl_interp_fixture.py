#!/usr/bin/env python3
"""Builds the fixture of genir-interp's TransformerLens test (run by hand, not by CI): a small ReLU T5 DSI
checkpoint with atomic docid tokens added the paper's way, and what TransformerLens computes on it for the
paper's analyses (Reusch & Belinkov, technion-cs-nlp/re-gen-ir: analysis/eval_residual_rank.py and the
zero-patching scripts), independent of genir.

The model: a seeded random T5 (ReLU, tied head, 2 encoder + 2 decoder layers, d_model 32, 4 heads; TransformerLens
2.18 loads ReLU T5 with as many decoder as encoder layers only) over the 300-token Unigram tokenizer of
genir-model's fixtures, with 16 added tokens `@DOC_ID_<docid>@` (`add_tokens`, `resize_token_embeddings`). Six
docid rows point along one query's final decoder state each, so the six queries retrieve six docids; each
query's probe docid is its top docid.

`expected.json`, per probe (decoder input [[0]], as the paper): the logit lens (rank, 1 = top, of the probe's
docid token in the full-vocabulary logits of each decoder hook read through the final norm, times d_model^-0.5
for the tied head, and the unembedding), the residual-stream measures of each component (length, ratio to the
layer's residual change, cosine with resid_post), and zero and mean ablations (hooks replacing the listed
outputs with zeros, or with their mean over eight reference queries at the first decoder position, the paper's
mean patching; Hits@1, Hits@10 and MRR@10 of the probe docids among the docid tokens).

Usage: tools/reference/make_tl_interp_fixture.py [OUT_DIR]   (default crates/genir-interp/tests/fixtures/tl-dsi)
Needs the reference venv (../shared/tools/reference-venv.sh) with transformer-lens 2.18.
"""
import json
import os
import sys

import torch
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

TOKENIZER = "crates/genir-model/tests/fixtures/t5/relu-tied/tokenizer.json"
OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/genir-interp/tests/fixtures/tl-dsi"
DOCIDS = ["7", "12", "3", "0", "15", "9", "1", "14", "5", "10", "2", "13", "8", "11", "4", "6"]
QUERIES = [
    "Return a new list containing all items from the iterable.",
    "The quick brown fox.",
    "Open file and return a stream.",
    "Raise an error upon failure of the device.",
    "sorted items in ascending order",
    "A stream of bytes read from the file.",
]

torch.manual_seed(5)
tok = PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
assert len(tok) == 300
cfg = T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
               feed_forward_proj="relu", tie_word_embeddings=True, dropout_rate=0.0, decoder_start_token_id=0,
               pad_token_id=0, eos_token_id=1)
model = T5ForConditionalGeneration(cfg).eval()
tok.add_tokens([f"@DOC_ID_{d}@" for d in DOCIDS])
model.resize_token_embeddings(len(tok))
n = len(DOCIDS)
ids_of = {d: tok.convert_tokens_to_ids(f"@DOC_ID_{d}@") for d in DOCIDS}
assert sorted(ids_of.values()) == list(range(300, 300 + n))
gen = torch.Generator().manual_seed(13)
with torch.no_grad():
    states = []
    for q in QUERIES:
        enc = tok(q, return_tensors="pt")
        o = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                  decoder_input_ids=torch.tensor([[0]]), output_hidden_states=True)
        states.append(o.decoder_hidden_states[-1][0, 0])  # after the final norm
    h = torch.stack(states)
    c = h - h.mean(0, keepdim=True)
    c = c / c.norm(dim=1, keepdim=True)
    model.shared.weight[300:] = torch.randn(n, 32, generator=gen) * 0.5
    for i in range(len(QUERIES)):
        model.shared.weight[300 + i] += 40.0 * c[i]
os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)
tok.save_pretrained(OUT)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_tl  # noqa: E402

hf = T5ForConditionalGeneration.from_pretrained(OUT).eval()
tl = paper_tl.load(OUT, hf)
rows = torch.tensor([ids_of[d] for d in DOCIDS])


def encode(q):
    return tok(q, return_tensors="pt")["input_ids"]


probes, lens, contributions = [], [], []
for k, q in enumerate(QUERIES):
    logits, cache = tl.run_with_cache(encode(q), paper_tl.START, remove_batch_dim=True)
    top = paper_tl.first(logits)
    hf_logits = hf(input_ids=encode(q), decoder_input_ids=paper_tl.START).logits[0, 0]
    assert (top - hf_logits).abs().max() < 1e-4
    docid = DOCIDS[int(top[rows].argmax())]
    qid = f"q{k}"
    probes.append({"qid": qid, "text": q, "docid": docid})
    for layer in range(tl.cfg.n_layers):
        for name, hook in paper_tl.LENS.items():
            if name == "resid_pre" and layer > 0:
                continue  # genir reads resid_pre before the first layer only (it is the last resid_post)
            lens.append({"qid": qid, "layer": layer, "component": name,
                         "rank": paper_tl.lens_rank(tl, cache, layer, hook, ids_of[docid])})
        for name, hook in paper_tl.PARTS.items():
            contributions.append({"qid": qid, "layer": layer, "component": name,
                                  **paper_tl.measures(cache, layer, hook)})
assert len({p["docid"] for p in probes}) == len(QUERIES), [p["docid"] for p in probes]

ABLATIONS = [
    ["decoder.blocks.0.hook_self_attn_out", "decoder.blocks.1.hook_self_attn_out"],
    ["decoder.blocks.0.hook_cross_attn_out"],
    ["decoder.blocks.1.hook_cross_attn_out"],
    ["decoder.blocks.0.hook_mlp_out"],
    ["decoder.blocks.1.hook_mlp_out"],
    ["decoder.blocks.0.hook_mlp_out", "decoder.blocks.1.hook_mlp_out"],
]
# mean ablation (the paper's "mean patching"): each output replaced by its mean over these reference queries at
# the first decoder position
REFERENCE = [
    "Close the file when done.",
    "A list of numbers in order.",
    "The device failed to start.",
    "Read all bytes from a stream.",
    "items are returned as a new list",
    "the brown dog jumps over the fox",
    "raise an exception on error",
    "sort the list in place",
]
means = paper_tl.mean_outputs(tl, [encode(q) for q in REFERENCE])
targets = [(encode(p["text"]), DOCIDS.index(p["docid"])) for p in probes]
ablations = []
for mode, points in [("zero", p) for p in ABLATIONS] + [("mean", p) for p in ABLATIONS]:
    hooks = paper_tl.ablation_hooks(points, mode, means)
    ablations.append({"mode": mode, "points": points, **paper_tl.ablated_metrics(tl, targets, rows, hooks)})

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"pattern": "@DOC_ID_{}@", "probes": probes, "lens": lens, "contributions": contributions,
               "reference": REFERENCE, "ablations": ablations}, f, indent=1)
print("probes:", [p["docid"] for p in probes])
print("ablations:", [(a["mode"], a["points"], round(a["hits_at_1"], 3), round(a["mrr_at_10"], 3)) for a in ablations])
