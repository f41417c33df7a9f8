#!/usr/bin/env python3
"""The paper's analyses, computed with TransformerLens on a genir model exported for Python code, against
genir's own tables on the same queries.

The paper (technion-cs-nlp/re-gen-ir, analysis/eval_residual_rank.py and the zero-patching scripts) loads a
DSI checkpoint into TransformerLens's HookedEncoderDecoder and runs each query of its correct_valid.json with
decoder input [[0]]. This script does the same computations (written here, not copied) and compares them with
genir's:
  --lens           the logit lens: the rank of the correct docid token in the logits of each decoder component's
                   output read through the final norm (times d_model^-0.5 when the head is tied) and the
                   unembedding, against `genir interp lens` (genir's ranks are 1-based); exact.
  --contributions  each component's length, its ratio to the layer's residual change (resid_post - resid_pre)
                   and its cosine with resid_post, against `genir interp contributions` (norm, ratio_to_delta,
                   cos_resid_post); relative difference under 1e-4.
  --ablation       zero and mean ablation: every row of `genir interp ablate --mode zero|mean` rerun with
                   TransformerLens hooks that zero the same points or put their mean over the analysed queries
                   (at the first decoder position); Hits@1, Hits@10 and MRR@10 among the docid tokens; exact.

  genir export --model M --out EXPORTED --collection-out DATA --corpus C
  genir interp lens --model EXPORTED --corpus C --split validation --out LENS
  genir interp contributions --model EXPORTED --corpus C --split validation --out CONTRIB
  genir interp ablate --model EXPORTED --corpus C --split validation --mode zero \\
      --points 'decoder.blocks.*.hook_self_attn_out' --out ABL
  HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/check_paper_lens.py EXPORTED DATA \\
      --lens LENS/logit_lens.csv --contributions CONTRIB/contributions.csv --ablation ABL/ablation.csv

TransformerLens 2.18 supports ReLU T5 only (not gated-GELU models such as flan-t5).
"""
import argparse
import csv
import json
import os
import sys

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paper_tl  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("folder")
ap.add_argument("data")
ap.add_argument("--lens")
ap.add_argument("--contributions")
ap.add_argument("--ablation")
ap.add_argument("--correct", help="[docid token, query id] pairs (default: DATA/correct_valid.json)")
ap.add_argument("--queries", help="their queries (default: DATA/queries.validation.json)")
args = ap.parse_args()

hf = AutoModelForSeq2SeqLM.from_pretrained(args.folder)
tok = AutoTokenizer.from_pretrained(args.folder)
tl = paper_tl.load(args.folder, hf)

pairs = json.load(open(args.correct or os.path.join(args.data, "correct_valid.json")))
queries_file = args.queries or os.path.join(args.data, "queries.validation.json")
queries = {q["id"]: q["query"] for q in json.load(open(queries_file))}
docids = json.load(open(os.path.join(args.folder, "docids.json")))["docids"]
rows = torch.tensor(tok.convert_tokens_to_ids([f"@DOC_ID_{d}@" for d in docids]))


def encode(qid):
    return tok(queries[qid], return_tensors="pt", truncation=True, max_length=64)["input_ids"]


def table(path, key):
    return {key(r): r for r in csv.DictReader(open(path))} if path else {}


lens = table(args.lens, lambda r: (r["qid"], int(r["layer"]), r["component"]))
contrib = table(args.contributions, lambda r: (r["qid"], int(r["layer"]), r["component"]))
failures = []
counts = {"lens": 0, "contributions": 0, "ablation": 0}

for token, qid in pairs:
    _, cache = tl.run_with_cache(encode(qid), paper_tl.START, remove_batch_dim=True)
    target = tok.convert_tokens_to_ids(token)
    for layer in range(tl.cfg.n_layers):
        for name, hook in paper_tl.PARTS.items():
            row = contrib.get((qid, layer, name))
            if row is None:
                continue
            for key, want in paper_tl.measures(cache, layer, hook).items():
                got = float(row[key])
                counts["contributions"] += 1
                if abs(got - want) > 1e-4 * max(1.0, abs(want)):
                    failures.append(f"{qid} layer {layer} {name} {key}: TransformerLens {want:.6g}, genir {got:.6g}")
        for name, hook in paper_tl.LENS.items():
            row = lens.get((qid, layer, name))
            if row is None:
                continue
            rank = paper_tl.lens_rank(tl, cache, layer, hook, target)
            counts["lens"] += 1
            if int(row["rank"]) != rank:
                failures.append(f"{qid} layer {layer} {name}: TransformerLens rank {rank}, genir {row['rank']}")

# genir's CLI mean ablation averages each output over the queries it evaluates
ablation_rows = [r for r in csv.DictReader(open(args.ablation))] if args.ablation else []
means = paper_tl.mean_outputs(tl, [encode(q) for _, q in pairs]) if ablation_rows else {}
targets = [(encode(qid), docids.index(token[len("@DOC_ID_"):-1])) for token, qid in pairs]
for row in ablation_rows:
    if row["mode"] not in ("zero", "mean"):
        continue
    hooks = paper_tl.ablation_hooks(row["points"].split(","), row["mode"], means)
    counts["ablation"] += 1
    for key, want in paper_tl.ablated_metrics(tl, targets, rows, hooks).items():
        if abs(float(row[key]) - want) > 1e-9:
            failures.append(f"ablation {row['label']} {row['mode']} {key}: TransformerLens {want:.4f}, genir {row[key]}")

for f in failures:
    print(f)
print(
    f"{len(pairs)} queries; compared {counts['lens']} lens ranks, {counts['contributions']} residual-stream "
    f"measures, {counts['ablation']} ablations; {len(failures)} differ"
)
sys.exit(1 if failures or not any(counts.values()) else 0)
