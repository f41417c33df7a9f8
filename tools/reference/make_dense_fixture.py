"""Reference dense retrieval for genir_train::dense::DenseIndex: sentence-transformers (5.7.0) with the real
all-MiniLM-L6-v2 (the folder tools/models/install_reference_models.sh installs: mean pooling, Normalize, cosine),
every query of a collection against every document (`title text`, as genir's Document::full_text), exact
ranking (no approximate index).

Run by hand (the venv of ../shared/tools/reference-venv.sh has sentence-transformers):
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/make_dense_fixture.py models/all-MiniLM-L6-v2 \
        data/wiki-genir-mini crates/genir-train/tests/fixtures/dense/minilm-wiki-genir-mini.json
Writes, for every query of every split, its ten best documents (docid, cosine), best first, ties by docid, and
the model's Hits@1 / Hits@10 on each split (any relevant document counts).
"""
import json
import sys

import torch
from sentence_transformers import SentenceTransformer

model_dir, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(2)

docs = [json.loads(line) for line in open(f"{src}/corpus.jsonl", encoding="utf-8")]
docids = [d["docid"] for d in docs]
texts = [d["text"] if not d.get("title") else f"{d['title']} {d['text']}" for d in docs]

model = SentenceTransformer(model_dir, device="cpu")
with torch.no_grad():
    emb = model.encode(texts, batch_size=32, convert_to_tensor=True, normalize_embeddings=False)
    emb = torch.nn.functional.normalize(emb, dim=1)

result = {"model": "all-MiniLM-L6-v2 (sentence-transformers 5.7.0)", "collection": src, "queries": {},
          "hits": {}}
for split in ["train", "validation", "test"]:
    queries = []
    for line in open(f"{src}/queries.{split}.tsv", encoding="utf-8"):
        qid, text = line.rstrip("\n").split("\t", 1)
        queries.append((qid, text))
    rel = {}
    for line in open(f"{src}/qrels.{split}.trec", encoding="utf-8"):
        qid, _, docid, grade = line.split()
        if int(grade) > 0:
            rel.setdefault(qid, set()).add(docid)
    with torch.no_grad():
        q = model.encode([t for _, t in queries], batch_size=32, convert_to_tensor=True)
        q = torch.nn.functional.normalize(q, dim=1)
        scores = (q @ emb.T).tolist()
    h1 = h10 = 0
    for (qid, _), row in zip(queries, scores):
        ranked = sorted(zip(docids, row), key=lambda x: (-x[1], x[0]))[:10]
        result["queries"][qid] = [[d, round(s, 7)] for d, s in ranked]
        h1 += ranked[0][0] in rel.get(qid, ())
        h10 += any(d in rel.get(qid, ()) for d, _ in ranked)
    result["hits"][split] = {"queries": len(queries), "hits_at_1": h1 / len(queries),
                             "hits_at_10": h10 / len(queries)}
    print(split, result["hits"][split])

with open(out, "w", encoding="utf-8") as f:  # one query per line
    f.write("{\n")
    for key in ["model", "collection", "hits"]:
        f.write(f"{json.dumps(key)}: {json.dumps(result[key], ensure_ascii=False)},\n")
    f.write('"queries": {\n')
    rows = [f"{json.dumps(q)}: {json.dumps(r)}" for q, r in result["queries"].items()]
    f.write(",\n".join(rows))
    f.write("\n}\n}\n")
