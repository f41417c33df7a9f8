#!/usr/bin/env python3
"""Builds the fixture of `genir import`: an atomic-docid DSI checkpoint written the way Python DSI code writes
one (run by hand, not by CI).

It follows the recipe of the paper's code (Reusch & Belinkov, technion-cs-nlp/re-gen-ir, preprocess.py): every
docid becomes one added token `@DOC_ID_<docid>@` (`tokenizer.add_tokens`, in an arbitrary order), the model's
embedding and output tables are resized to the tokenizer (`resize_token_embeddings(len(tokenizer))`), and model
and tokenizer are saved with `save_pretrained`. The start is the seeded random gated-untied T5 fixture of
genir-model (3 encoder + 2 decoder layers, d_model 32, a 300-token Unigram tokenizer; its table has 312 rows,
like T5's 32,128 for 32,100 tokens). The new rows are set from a seeded generator, five of them along one
query's own direction, so that different queries prefer different docids. `expected.json` holds, per query, the token ids transformers feeds the encoder
and the logits of every docid token at the first decoder position (decoder start token 0), independent of genir.

Usage: tools/reference/make_hf_dsi_fixture.py [OUT_DIR]   (default crates/genir-train/tests/fixtures/hf-dsi-atomic)
Needs the reference venv (../shared/tools/reference-venv.sh): torch, transformers 4.57, tokenizers, safetensors.
"""
import json
import os
import sys

import torch
from transformers import PreTrainedTokenizerFast, T5ForConditionalGeneration

SRC = "crates/genir-model/tests/fixtures/t5/gated-untied"
OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/genir-train/tests/fixtures/hf-dsi-atomic"

# docids as a collection names them; added in this (shuffled) order, as `list(set(...))` does in the paper's code
DOCIDS = ["12", "3", "doc-7", "0", "15", "9", "1", "14", "5", "10", "2", "13", "8", "11", "4", "6"]
QUERIES = [
    "Return a new list containing all items from the iterable.",
    "The quick brown fox.",
    "Open file and return a stream.",
    "Raise an error upon failure of the device.",
    "sorted items in ascending order",
]

torch.manual_seed(7)
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(SRC, "tokenizer.json"),
                              pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
model = T5ForConditionalGeneration.from_pretrained(SRC).eval()
assert len(tok) == 300 and model.config.vocab_size == 312

added = tok.add_tokens([f"@DOC_ID_{d}@" for d in DOCIDS])
assert added == len(DOCIDS)
model.resize_token_embeddings(len(tok))
assert model.config.vocab_size == 300 + len(DOCIDS)
gen = torch.Generator().manual_seed(11)
n = len(DOCIDS)


def first_states():
    # the decoder's last hidden state at the first position, per query (what the untied head reads)
    out = []
    for q in QUERIES:
        enc = tok(q, return_tensors="pt")
        with torch.no_grad():
            o = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                      decoder_input_ids=torch.tensor([[0]]), output_hidden_states=True)
        out.append(o.decoder_hidden_states[-1][0, 0])
    return torch.stack(out)


with torch.no_grad():
    model.shared.weight[300:] = torch.randn(n, 32, generator=gen)
    model.lm_head.weight[300:] = torch.randn(n, 32, generator=gen) * 0.05
    # the first len(QUERIES) added docids each get a row along one query's own direction (its state minus the
    # mean), so different queries retrieve different docids
    h = first_states()
    c = h - h.mean(0, keepdim=True)
    c = c / c.norm(dim=1, keepdim=True)
    for i in range(len(QUERIES)):
        model.lm_head.weight[300 + i] += 3.0 * c[i]

os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)
tok.save_pretrained(OUT)

expected = {"pattern": "@DOC_ID_{}@", "docids_by_token_id": [], "queries": []}
ids_of = {d: tok.convert_tokens_to_ids(f"@DOC_ID_{d}@") for d in DOCIDS}
assert sorted(ids_of.values()) == list(range(300, 300 + n))
expected["docids_by_token_id"] = [d for d, _ in sorted(ids_of.items(), key=lambda kv: kv[1])]
for q in QUERIES:
    enc = tok(q, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                       decoder_input_ids=torch.tensor([[0]])).logits[0, 0]
    scores = {d: float(logits[i]) for d, i in ids_of.items()}
    expected["queries"].append({
        "text": q,
        "input_ids": enc.input_ids[0].tolist(),
        "docid_logits": scores,
        "top": max(scores, key=scores.get),
    })
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
print("tops:", [x["top"] for x in expected["queries"]])
