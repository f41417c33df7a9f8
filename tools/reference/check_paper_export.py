#!/usr/bin/env python3
"""Checks a folder written by `genir export` (docid tokens named like the paper's code, `@DOC_ID_<docid>@`)
from Python, the way technion-cs-nlp/re-gen-ir looks docids up: AutoTokenizer and
T5ForConditionalGeneration from the folder, `convert_tokens_to_ids("@DOC_ID_<docid>@")` for each docid's row,
the first decoding step's logits over those rows. Prints the top docids per query, for comparison with
`genir search --model FOLDER QUERY...` (same order; score differences to the top docid within 1e-4).
Run by hand in the reference venv:
  HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/check_paper_export.py FOLDER "query" ...
"""
import json
import os
import sys

import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration

folder, queries = sys.argv[1], sys.argv[2:]
tok = AutoTokenizer.from_pretrained(folder)
model = T5ForConditionalGeneration.from_pretrained(folder).eval()
docids = json.load(open(os.path.join(folder, "docids.json")))["docids"]
rows = tok.convert_tokens_to_ids([f"@DOC_ID_{d}@" for d in docids])
assert tok.unk_token_id not in rows, "a docid has no @DOC_ID_<docid>@ token"
rows_t = torch.tensor(rows)
for q in queries:
    enc = tok(q, return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        logits = model(**enc, decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id]])).logits[0, 0]
    scores = torch.log_softmax(logits[rows_t], dim=-1)
    top = torch.topk(scores, 5)
    print(f"query: {q}")
    for rank, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        print(f"  {rank}  {docids[i]:>8}  {s - top.values[0].item():+.4f}")
