#!/usr/bin/env python3
"""Reference scores for `genir import --docids text` (run by hand, not by CI): docids written as text in the
model's own vocabulary, the way Python DSI code trains naive docids (the paper's code, technion-cs-nlp/re-gen-ir:
`tokenizer(inputs, text_target=str(docid))`, so a docid's target is its tokens, then `</s>`).

The model is genir-model's seeded random gated-untied T5 fixture (an HF folder). For each query and docid it
computes with transformers, by teacher forcing, the docid's log-probability (each step's log-softmax over the
whole vocabulary, summed over the docid's tokens and `</s>`: the score a constrained beam search in
transformers sums), independent of genir; the same for semantic ids in the paper's form (cluster numbers as
separate words). Writes `expected.json`.

Usage: tools/reference/make_hf_dsi_text_fixture.py [OUT_DIR]   (default crates/genir-train/tests/fixtures/hf-dsi-text)
Needs the reference venv (../shared/tools/reference-venv.sh): torch, transformers 4.57, tokenizers.
"""
import json
import os
import sys

import torch
from transformers import PreTrainedTokenizerFast, T5ForConditionalGeneration

SRC = "crates/genir-model/tests/fixtures/t5/gated-untied"
OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/genir-train/tests/fixtures/hf-dsi-text"
DOCIDS = ["12", "3", "100", "45", "7", "1010", "26", "0", "9", "31", "64", "5"]
# semantic ids in the paper's form (`--semantic-doc-id-mapping`: cluster numbers joined by `_`), which its code
# tokenizes as separate words (`text_target=[id.split("_")]`, `is_split_into_words=True`)
SEMANTIC = {d: s for d, s in zip(DOCIDS, ["0_0", "0_1", "0_2_0", "0_2_1", "1_0", "1_1", "1_2", "2_0",
                                          "2_1_0", "2_1_1", "2_1_2", "3"])}
QUERIES = [
    "Return a new list containing all items from the iterable.",
    "The quick brown fox.",
    "Open file and return a stream.",
]

tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(SRC, "tokenizer.json"),
                              pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
model = T5ForConditionalGeneration.from_pretrained(SRC).eval()
eos = tok.eos_token_id


def score_all(targets):
    out = []
    for q in QUERIES:
        enc = tok(q, return_tensors="pt")
        scores = {}
        for d, t in targets.items():
            dec = torch.tensor([[model.config.decoder_start_token_id] + t[:-1]])
            with torch.no_grad():
                logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                               decoder_input_ids=dec).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            scores[d] = float(sum(lp[s, t[s]] for s in range(len(t))))
        out.append({"text": q, "scores": scores, "top": max(scores, key=scores.get)})
    return out


targets = {d: tok(text_target=d).input_ids for d in DOCIDS}
semantic = {d: tok(text_target=[SEMANTIC[d].split("_")], is_split_into_words=True).input_ids[0] for d in DOCIDS}
assert all(t[-1] == eos for t in list(targets.values()) + list(semantic.values()))

expected = {
    "model": SRC,
    "docids": DOCIDS,
    "targets": {d: tok.convert_ids_to_tokens(t[:-1]) for d, t in targets.items()},
    "queries": score_all(targets),
    "semantic": {
        "ids": SEMANTIC,
        "targets": {d: tok.convert_ids_to_tokens(t[:-1]) for d, t in semantic.items()},
        "queries": score_all(semantic),
    },
}
os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, ensure_ascii=False)
print(expected["targets"], expected["semantic"]["targets"])
print([x["top"] for x in expected["queries"]], [x["top"] for x in expected["semantic"]["queries"]])
