"""Times the Python MechIR package (0.2.0) on the inputs of genir-mechir's criterion bench
(crates/genir-mechir/benches/patching.rs), for the speed-up figure in crates/genir-mechir/README.md.

Cases (all-MiniLM-L6-v2 as MechIR's Dot with mean pooling, TFC1 perturbation):
* head patching (`head_all`, 6 x 12 cells) of 16 pairs with 112-token documents;
* block patching (`block_all`, 3 x 6 x 64 cells) of 4 pairs with 64-token documents.

Documents are made so that the original, padded with "a", and the perturbed document are both exactly the
document length in tokens ([CLS] and [SEP] included): no padding, the appended term inside the window. The
inputs are written to crates/genir-mechir/benches/inputs.json (the Rust bench reads the same file).

Usage (from the repository root, on an otherwise idle machine):
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/bench_mechir.py [MINILM_DIR] [--repeat N]
"""

import json
import os
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
INPUTS = ROOT / "crates/genir-mechir/benches/inputs.json"
sys.path.insert(0, str(Path(__file__).parent))
from make_mechir_fixtures import first_term, minilm_dir, tfc1  # noqa: E402

WORDS = (
    "the of and to in is was for on that with as by at from his her an are were which this be or has had "
    "not but also its their first new after other one two three city river school music history war team "
    "game season film album song book world state county village church station railway language people "
    "family year years century time place area population district region island park bridge road water "
    "mountain forest lake coast north south east west national international public private early late "
    "major small large old modern ancient local central general special political social economic "
    "science art theatre player coach club league cup match final record studio band singer writer "
    "author novel series character story television radio network company industry market trade "
    "energy power solar wind coal oil gas plant factory engine car train ship aircraft airport"
).split()

QUERIES = [
    "solar energy plant", "river bridge history", "football club league", "railway station city",
    "music album record", "mountain lake park", "novel writer story", "film studio actor",
    "church village history", "airport aircraft engine", "market trade company", "island coast region",
    "school science art", "television network series", "war century state", "oil gas industry",
]


def build_inputs(tok, n_pairs, doc_len, seed):
    """Pairs whose original and perturbed documents are exactly `doc_len` tokens with [CLS] and [SEP]."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n_pairs):
        q = QUERIES[i % len(QUERIES)]
        term = len(tok.tokenize(first_term(q)))
        words = []
        while True:
            cand = words + [rng.choice(WORDS)]
            n = len(tok.tokenize(" ".join(cand)))
            if n + term + 2 > doc_len:
                break
            words = cand
        # Top up with one-token words to hit the length exactly.
        while len(tok.tokenize(" ".join(words))) + term + 2 < doc_len:
            words.append("the")
        doc = " ".join(words)
        assert len(tok.tokenize(tfc1(doc, q))) + 2 == doc_len, (i, doc_len)
        pairs.append({"query": q, "document": doc})
    return pairs


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    repeat = 1
    if "--repeat" in sys.argv:
        repeat = int(sys.argv[sys.argv.index("--repeat") + 1])
        args = [a for a in args if a != str(repeat)]
    if args:
        os.environ["GENIR_MINILM_DIR"] = args[0]
    from mechir import Dot
    from mechir.data import DotDataCollator

    path = minilm_dir()
    model = Dot(path, pooling_type="mean")
    cases = {
        "heads_16x112": (16, 112, "head_all"),
        "blocks_4x64": (4, 64, "block_all"),
    }
    inputs = {name: build_inputs(model.tokenizer, n, d, seed=7) for name, (n, d, _) in cases.items()}
    INPUTS.write_text(json.dumps(inputs, indent=1) + "\n")
    print(f"inputs written to {INPUTS}")
    results = {"torch_threads": torch.get_num_threads(), "load_before": os.getloadavg()}
    for name, (n, d, patch_type) in cases.items():
        coll = DotDataCollator(model.tokenizer, tfc1, q_max_length=30, d_max_length=d)
        batch = coll([(p["query"], p["document"]) for p in inputs[name]])
        assert batch["documents"]["attention_mask"].all(), "documents must fill the window"
        times = []
        with torch.no_grad():
            for _ in range(repeat):
                t = time.perf_counter()
                out, _ = model.patch(**batch, patch_type=patch_type)
                times.append(time.perf_counter() - t)
        results[name] = {"seconds": times, "shape": list(out.shape)}
        print(f"{name}: MechIR {patch_type} {min(times):.2f} s (runs: {[round(x, 2) for x in times]})", flush=True)
    results["load_after"] = os.getloadavg()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
