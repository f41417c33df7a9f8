"""Agreement of attribution patching with exact patching on encoder positions, as genir-interp's README reports it.

Usage: python tools/analysis/attribution_agreement.py OUT [OUT ...]
where each OUT is a folder written by `genir interp patch --attribution` (it holds patching.csv and attribution.csv).
Needs pandas and numpy (e.g. the venv of ../shared/tools/reference-venv.sh).

Per folder, over the encoder-position cells both tables have (NaN rows, pairs whose clean and corrupted metrics are
equal, left out): the number of cells, Pearson r of the normalised values, the cells whose exact effect exceeds 0.1
in absolute value and how many of them the estimate misses (|estimate| under 0.033) or gets the sign of,
top-decile recall (of the tenth of the cells with the largest |exact|, the share also in the estimate's largest
tenth), and the mean over pairs of the per-pair Pearson r.
"""
import sys

import numpy as np
import pandas as pd

KEY = ["qid", "target", "layer", "component", "head", "position"]


def cells(folder):
    exact = pd.read_csv(f"{folder}/patching.csv")
    attr = pd.read_csv(f"{folder}/attribution.csv")
    # the n-th row of a cell key belongs to the n-th pair of that qid (several corruptions of one query), as
    # genir_interp::attribution::agreement matches them; "pair" tells the pairs of one qid apart
    for t in (exact, attr):
        t["occurrence"] = t.groupby(KEY).cumcount()
        t["pair"] = t["qid"].astype(str) + "#" + t.groupby(["qid"] + KEY[1:]).cumcount().astype(str)
    m = exact.merge(attr, on=KEY + ["occurrence"], suffixes=("_exact", "_attr"))
    m = m[m.target == "encoder_positions"]
    return m.dropna(subset=["value_exact", "value_attr"])


def main(folders):
    for folder in folders:
        m = cells(folder)
        x, e = m.value_exact.to_numpy(), m.value_attr.to_numpy()
        large = np.abs(x) > 0.1
        k = max(1, len(x) // 10)
        top_x = set(np.argsort(-np.abs(x))[:k])
        top_e = set(np.argsort(-np.abs(e))[:k])
        per_pair = [
            np.corrcoef(g.value_exact, g.value_attr)[0, 1]
            for _, g in m.groupby("pair_exact")
            if len(g) > 2 and g.value_exact.std() > 0 and g.value_attr.std() > 0
        ]
        print(
            f"{folder}: cells {len(x)}, Pearson r {np.corrcoef(x, e)[0, 1]:.3f}, "
            f"|exact| > 0.1: {large.sum()} (missed {(large & (np.abs(e) < 0.033)).sum()}, "
            f"same sign {(large & (np.sign(x) == np.sign(e))).sum()}), "
            f"top-decile recall {len(top_x & top_e) / k:.2f}, "
            f"mean per-pair r {np.mean(per_pair):.2f} ({len(per_pair)} pairs)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
