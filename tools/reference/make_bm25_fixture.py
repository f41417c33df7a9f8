"""Reference BM25 scores for genir_data::bm25, computed by the Python package bm25s (0.3.16, method "lucene":
idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b len / mean_len))), float64, k1 0.9, b 0.4.

Run by hand (needs bm25s: `pip install bm25s` into e.g. the venv of ../shared/tools/reference-venv.sh):
    python tools/reference/make_bm25_fixture.py data/wiki-genir-mini crates/genir-data/tests/fixtures/bm25/wiki-genir-mini.json
Writes, for every validation and test query of the collection, its ten best documents (docid, score), best
first, ties by docid, only documents with a positive score.

Terms as genir's `perturb::tokenize`: lowercase, split on every character that is not alphanumeric. Python's
str.isalnum and Rust's char::is_alphanumeric agree on this corpus's characters (the test would fail otherwise).
"""
import json
import re
import sys

import bm25s
import numpy as np

src, out = sys.argv[1], sys.argv[2]
K1, B = 0.9, 0.4


def tokenize(text):
    # split on every non-alphanumeric character (Unicode), drop empty pieces, lowercase
    pieces, cur = [], []
    for ch in text:
        if ch.isalnum():
            cur.append(ch)
        elif cur:
            pieces.append("".join(cur))
            cur = []
    if cur:
        pieces.append("".join(cur))
    return [p.lower() for p in pieces]


docs = [json.loads(line) for line in open(f"{src}/corpus.jsonl", encoding="utf-8")]
corpus_tokens = [tokenize(d["title"]) + tokenize(d["text"]) for d in docs]
retriever = bm25s.BM25(k1=K1, b=B, method="lucene", dtype="float64")
retriever.index(corpus_tokens, show_progress=False)
vocab = retriever.vocab_dict

queries = []
for split in ["validation", "test"]:
    for line in open(f"{src}/queries.{split}.tsv", encoding="utf-8"):
        qid, text = line.rstrip("\n").split("\t", 1)
        queries.append((qid, text))

result = {"k1": K1, "b": B, "source": "bm25s " + bm25s.__version__ + " method=lucene float64", "queries": []}
for qid, text in queries:
    toks = [vocab[t] for t in tokenize(text) if t in vocab]
    if toks:
        scores = np.asarray(retriever.get_scores(toks), dtype=np.float64)
    else:
        scores = np.zeros(len(docs))
    ranked = sorted(
        ((docs[i]["docid"], float(s)) for i, s in enumerate(scores) if s > 0),
        key=lambda x: (-x[1], x[0]),
    )[:10]
    result["queries"].append({"qid": qid, "text": text, "top": ranked})

with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")
print(f"wrote {out}: {len(queries)} queries")
