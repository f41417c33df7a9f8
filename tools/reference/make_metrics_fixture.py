"""Reference values of genir's retrieval measures, computed by pytrec_eval (trec_eval 9.0.x) on a random
run and qrels with tied scores, graded and zero-grade judgments, queries whose relevant documents are
not retrieved, and judged queries without a relevant document.

Run by hand (needs pytrec_eval, e.g. the venv of ../shared/tools/reference-venv.sh):
    python tools/reference/make_metrics_fixture.py crates/genir-train/tests/fixtures/metrics
Writes qrels.trec, run.trec and expected.json (per-query and mean measures).

MRR@10 is trec_eval's recip_rank on the run cut to its top 10 in trec_eval's order (score descending, then
docid descending); Hits@k is success_k; Recall@k is recall_k.
"""
import json
import os
import random
import sys

import pytrec_eval

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(20261123)
docs = [f"d{i}" for i in range(300)]
qrels, run = {}, {}
for q in range(60):
    qid = f"q{q}"
    rel = rng.sample(docs, rng.randint(1, 4))
    qrels[qid] = {d: rng.choice([1, 1, 2, 3]) for d in rel}
    for d in rng.sample(docs, 2):
        qrels[qid].setdefault(d, 0)
    n = rng.randint(5, 150)
    retrieved = rng.sample(docs, n)
    # coarse scores so that many ties occur
    run[qid] = {d: float(rng.randint(0, 20)) / 4.0 for d in retrieved}
    if q % 3 == 0:  # make sure some relevant documents are retrieved near the top
        for d in rel[:2]:
            run[qid][d] = 5.0 + rng.randint(0, 2) / 4.0
# judged queries without a relevant document (only grade 0): trec_eval counts them, with zeros
# (a generator of their own: the other queries' files stay as they were)
rng_zero = random.Random(20261206)
zero_relevant = {f"q{q}" for q in range(60, 63)}
for q in range(60, 63):
    qid = f"q{q}"
    judged = rng_zero.sample(docs, 23)
    qrels[qid] = {d: 0 for d in judged[:3]}
    run[qid] = {d: float(rng_zero.randint(0, 20)) / 4.0 for d in judged}

# explicit descending-docid tie-break, compared as trec_eval does (strcmp on the docno)
def trec_order(scores):
    items = list(scores.items())
    items.sort(key=lambda kv: kv[0], reverse=True)
    items.sort(key=lambda kv: kv[1], reverse=True)
    return items

top10 = {q: dict(trec_order(s)[:10]) for q, s in run.items()}
ev = pytrec_eval.RelevanceEvaluator(qrels, {"success.1,10", "recall.1,5,10,100"})
ev10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
full = ev.evaluate(run)
cut = ev10.evaluate(top10)
expected = {}
for q in sorted(run):
    expected[q] = {
        "hits_at_1": full[q]["success_1"],
        "hits_at_10": full[q]["success_10"],
        "mrr_at_10": cut[q]["recip_rank"],
        "recall_at_1": full[q]["recall_1"],
        "recall_at_5": full[q]["recall_5"],
        "recall_at_10": full[q]["recall_10"],
        "recall_at_100": full[q]["recall_100"],
    }
with open(os.path.join(out, "qrels.trec"), "w") as f:
    for q in sorted(qrels):
        for d, g in sorted(qrels[q].items()):
            f.write(f"{q} 0 {d} {g}\n")
with open(os.path.join(out, "run.trec"), "w") as f:
    for q in sorted(run):
        # written in a shuffled order with meaningless ranks: evaluation must not trust the file order
        items = list(run[q].items())
        (rng_zero if q in zero_relevant else rng).shuffle(items)
        for i, (d, s) in enumerate(items):
            f.write(f"{q} Q0 {d} {i + 1} {s} ref\n")
mean = {k: sum(v[k] for v in expected.values()) / len(expected) for k in next(iter(expected.values()))}
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump({"per_query": expected, "mean": mean,
               "pytrec_eval": getattr(pytrec_eval, "__version__", "unknown")}, f, indent=1, sort_keys=True)
print("wrote", out, "mean:", mean)
