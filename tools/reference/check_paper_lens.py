#!/usr/bin/env python3
"""The paper's logit lens, computed with TransformerLens on a genir model exported for Python code, against
genir's own `interp lens` table on the same queries.

The paper (technion-cs-nlp/re-gen-ir, analysis/eval_residual_rank.py) loads a DSI checkpoint into
TransformerLens's HookedEncoderDecoder, runs each query of its correct_valid.json with decoder input [[0]],
and ranks the correct docid token in the logits of each decoder component's output read through the final
norm (times d_model^-0.5 when the head is tied) and the unembedding. This script does that computation
(written here, not copied) and compares every rank with genir's (genir's ranks are 1-based).

  genir export --model M --out EXPORTED --collection-out DATA --corpus C
  genir interp lens --model EXPORTED --corpus C --split validation --out LENS
  genir interp contributions --model EXPORTED --corpus C --split validation --out CONTRIB   # optional
  HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/check_paper_lens.py EXPORTED DATA \
      LENS/logit_lens.csv [CONTRIB/contributions.csv]

With the contributions table it also checks the paper's residual-stream measures of the same script: each
component's length, its ratio to the layer's residual change (resid_post - resid_pre) and its cosine with
resid_post, against genir's norm, ratio_to_delta and cos_resid_post (relative difference under 1e-4).

TransformerLens 2.18 supports ReLU T5 only (not gated-GELU models such as flan-t5).
"""
import csv
import json
import os
import sys

import torch
from transformer_lens import HookedEncoderDecoder
from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

torch.set_grad_enabled(False)
folder, data, lens_csv = sys.argv[1:4]
contrib_csv = sys.argv[4] if len(sys.argv) > 4 else None
OFFICIAL_MODEL_NAMES.append(folder)  # TransformerLens loads only names it knows
hf = AutoModelForSeq2SeqLM.from_pretrained(folder)
tok = AutoTokenizer.from_pretrained(folder)
tl = HookedEncoderDecoder.from_pretrained(folder, hf_model=hf, device="cpu")

pairs = json.load(open(os.path.join(data, "correct_valid.json")))
queries = {q["id"]: q["query"] for q in json.load(open(os.path.join(data, "queries.validation.json")))}
components = ["resid_mid", "resid_mid_cross", "cross_attn_out", "mlp_out", "resid_post"]

genir = {}
for row in csv.DictReader(open(lens_csv)):
    genir[(row["qid"], int(row["layer"]), row["component"])] = int(row["rank"])
measures = {}
if contrib_csv:
    for row in csv.DictReader(open(contrib_csv)):
        measures[(row["qid"], int(row["layer"]), row["component"])] = row
# genir's component names -> the paper's (TransformerLens) hook names
hooks = {"self_attn": "attn_out", "cross_attn": "cross_attn_out", "mlp": "mlp_out"}
measured = measure_differ = 0

compared = differ = 0
for token, qid in pairs:
    ids = tok(queries[qid], return_tensors="pt", truncation=True, max_length=64)["input_ids"]
    _, cache = tl.run_with_cache(ids, torch.tensor([[0]]), remove_batch_dim=True)
    target = tok.convert_tokens_to_ids(token)
    for layer in range(tl.cfg.n_layers):
        post = cache[f"decoder.{layer}.hook_resid_post"][0]
        delta = post - cache[f"decoder.{layer}.hook_resid_pre"][0]
        for name, hook in hooks.items():
            row = measures.get((qid, layer, name))
            if row is None:
                continue
            c = cache[f"decoder.{layer}.hook_{hook}"][0]
            paper = {
                "norm": torch.linalg.norm(c).item(),
                "ratio_to_delta": (torch.linalg.norm(c) / torch.linalg.norm(delta)).item(),
                "cos_resid_post": torch.cosine_similarity(c, post, dim=-1).item(),
            }
            for key, want in paper.items():
                got = float(row[key])
                measured += 1
                if abs(got - want) > 1e-4 * max(1.0, abs(want)):
                    measure_differ += 1
                    print(f"{qid} layer {layer} {name} {key}: TransformerLens {want:.6g}, genir {got:.6g}")
        for comp in components:
            x = tl.decoder_final_ln(cache[f"decoder.{layer}.hook_{comp}"])
            if tl.cfg.tie_word_embeddings:
                x = x * tl.cfg.d_model ** -0.5
            logits = tl.unembed(x)[0]
            rank = int((logits > logits[target]).sum().item())  # 0-based
            want = genir.get((qid, layer, comp))
            if want is None:
                continue
            compared += 1
            if want != rank + 1:
                differ += 1
                print(f"{qid} layer {layer} {comp}: TransformerLens rank {rank + 1}, genir {want}")
print(f"{len(pairs)} queries, {compared} (query, layer, component) ranks compared, {differ} differ")
if contrib_csv:
    print(f"{measured} residual-stream measures compared, {measure_differ} differ by more than 1e-4 (relative)")
sys.exit(1 if differ or measure_differ or not compared or (contrib_csv and not measured) else 0)
