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
import re
import sys

import torch
from transformer_lens import HookedEncoderDecoder
from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

torch.set_grad_enabled(False)
ap = argparse.ArgumentParser()
ap.add_argument("folder")
ap.add_argument("data")
ap.add_argument("--lens")
ap.add_argument("--contributions")
ap.add_argument("--ablation")
ap.add_argument("--correct", help="[docid token, query id] pairs (default: DATA/correct_valid.json)")
ap.add_argument("--queries", help="their queries (default: DATA/queries.validation.json)")
args = ap.parse_args()

OFFICIAL_MODEL_NAMES.append(args.folder)  # TransformerLens loads only names it knows
hf = AutoModelForSeq2SeqLM.from_pretrained(args.folder)
tok = AutoTokenizer.from_pretrained(args.folder)
tl = HookedEncoderDecoder.from_pretrained(args.folder, hf_model=hf, device="cpu")

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
components = ["resid_mid", "resid_mid_cross", "cross_attn_out", "mlp_out", "resid_post"]
# genir's component names -> the paper's (TransformerLens) hook names
hooks = {"self_attn": "attn_out", "cross_attn": "cross_attn_out", "mlp": "mlp_out"}
failures = []
counts = {"lens": 0, "contributions": 0, "ablation": 0}

for token, qid in pairs:
    _, cache = tl.run_with_cache(encode(qid), torch.tensor([[0]]), remove_batch_dim=True)
    target = tok.convert_tokens_to_ids(token)
    for layer in range(tl.cfg.n_layers):
        post = cache[f"decoder.{layer}.hook_resid_post"][0]
        delta = post - cache[f"decoder.{layer}.hook_resid_pre"][0]
        for name, hook in hooks.items():
            row = contrib.get((qid, layer, name))
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
                counts["contributions"] += 1
                if abs(got - want) > 1e-4 * max(1.0, abs(want)):
                    failures.append(f"{qid} layer {layer} {name} {key}: TransformerLens {want:.6g}, genir {got:.6g}")
        for comp in components:
            row = lens.get((qid, layer, comp))
            if row is None:
                continue
            x = tl.decoder_final_ln(cache[f"decoder.{layer}.hook_{comp}"])
            if tl.cfg.tie_word_embeddings:
                x = x * tl.cfg.d_model ** -0.5
            logits = tl.unembed(x)[0]
            rank = int((logits > logits[target]).sum().item()) + 1
            counts["lens"] += 1
            if int(row["rank"]) != rank:
                failures.append(f"{qid} layer {layer} {comp}: TransformerLens rank {rank}, genir {row['rank']}")

# zero ablation: genir hook names -> TransformerLens hook names
tl_hook = {"hook_self_attn_out": "hook_attn_out", "hook_cross_attn_out": "hook_cross_attn_out", "hook_mlp_out": "hook_mlp_out"}
means = {}  # hook -> its mean output over the analysed queries at the first decoder position (genir's CLI
# mean ablation averages over the queries it evaluates)
for _, qid in pairs if args.ablation else []:
    _, cache = tl.run_with_cache(encode(qid), torch.tensor([[0]]), remove_batch_dim=True)
    for layer in range(tl.cfg.n_layers):
        for hook in tl_hook.values():
            name = f"decoder.{layer}.{hook}"
            v = cache[name].reshape(-1, cache[name].shape[-1])[0].double()
            means[name] = means.get(name, 0) + v / len(pairs)


def replaced_by(value):
    return lambda act, hook: value.to(act.dtype).expand_as(act).clone()


for row in csv.DictReader(open(args.ablation)) if args.ablation else []:
    if row["mode"] not in ("zero", "mean"):
        continue
    points = []
    for p in row["points"].split(","):
        m = re.fullmatch(r"decoder\.blocks\.(\d+)\.(\w+)", p)
        if not m or m.group(2) not in tl_hook:
            sys.exit(f"ablation point {p} has no TransformerLens counterpart here")
        name = f"decoder.{m.group(1)}.{tl_hook[m.group(2)]}"
        if row["mode"] == "zero":
            points.append((name, lambda act, hook: torch.zeros_like(act)))
        else:
            points.append((name, replaced_by(means[name])))
    h1 = h10 = mrr = 0.0
    for token, qid in pairs:
        logits = tl.run_with_hooks(encode(qid), torch.tensor([[0]]), fwd_hooks=points)[0, 0, rows]
        rank = int((logits > logits[docids.index(token[len("@DOC_ID_"):-1])]).sum()) + 1
        h1 += rank == 1
        h10 += rank <= 10
        mrr += 1 / rank if rank <= 10 else 0.0
    n = len(pairs)
    counts["ablation"] += 1
    for key, want in [("hits_at_1", h1 / n), ("hits_at_10", h10 / n), ("mrr_at_10", mrr / n)]:
        if abs(float(row[key]) - want) > 1e-9:
            failures.append(f"ablation {row['label']} {key}: TransformerLens {want:.4f}, genir {row[key]}")

for f in failures:
    print(f)
print(
    f"{len(pairs)} queries; compared {counts['lens']} lens ranks, {counts['contributions']} residual-stream "
    f"measures, {counts['ablation']} ablations; {len(failures)} differ"
)
sys.exit(1 if failures or not any(counts.values()) else 0)
