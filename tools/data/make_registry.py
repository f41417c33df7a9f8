#!/usr/bin/env python3
"""Write crates/genir-data/registry.json from the ir_datasets facts in ../shared/.

Only the entries genir registers are copied (URLs, sizes, MD5s from ir_datasets-downloads.json; expected counts
from ir_datasets-metadata.json). Run from the repository root:

    python3 tools/data/make_registry.py [--shared ../shared]
"""

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="../shared")
    parser.add_argument("--out", default="crates/genir-data/registry.json")
    args = parser.parse_args()
    downloads = json.loads((Path(args.shared) / "ir_datasets-downloads.json").read_text())
    metadata = json.loads((Path(args.shared) / "ir_datasets-metadata.json").read_text())

    files = {}

    def file(top: str, key: str, cache_path: str | None = None) -> str:
        entry = downloads[top][key]
        name = f"{top}/{key}"
        path = entry.get("cache_path") or cache_path or entry["url"].rsplit("/", 1)[-1]
        headers = sorted(entry.get("download_args", {}).get("headers", {}).items())
        files[name] = {
            "url": entry["url"],
            "size": entry.get("size_hint"),
            "md5": entry.get("expected_md5"),
            "cache_path": f"{top}/{path}",
            "headers": [list(h) for h in headers],
        }
        return name

    def counts(corpus_key: str, splits: dict) -> dict:
        docs = metadata.get(corpus_key, {}).get("docs", {}).get("count")
        out = {"documents": docs, "splits": {}}
        for split, key in splits.items():
            meta = metadata[key]
            out["splits"][split] = {
                "queries": meta.get("queries", {}).get("count"),
                "qrels": meta.get("qrels", {}).get("count"),
            }
        return out

    def src(file_key, fmt, member=None):
        s = {"file": file_key, "format": fmt}
        if member:
            s["member"] = member
        return s

    datasets = []
    marco = file("msmarco-passage", "collectionandqueries")
    # ir_datasets repairs collection.tsv's mis-encoded characters (FixEncoding): genir's msmarco-passages reader does the same
    marco_docs = src(marco, "msmarco-passages", "collection.tsv")
    datasets.append({
        "name": "msmarco-passage/dev/small",
        "description": "MS MARCO passage ranking, the 6,980 'dev small' queries over the 8.8M-passage collection.",
        "layout": {"kind": "files", "corpus": marco_docs, "splits": {"dev": {
            "queries": src(marco, "tsv-queries", "queries.dev.small.tsv"),
            "qrels": src(marco, "trec-qrels", "qrels.dev.small.tsv")}}},
        "counts": counts("msmarco-passage", {"dev": "msmarco-passage/dev/small"}),
    })
    for year in ("2019", "2020"):
        q = file("msmarco-passage", f"trec-dl-{year}/queries", f"trec-dl-{year}/queries.tsv.gz")
        r = file("msmarco-passage", f"trec-dl-{year}/qrels")
        datasets.append({
            "name": f"msmarco-passage/trec-dl-{year}",
            "description": f"TREC Deep Learning {year} passage task: 200 queries (most unjudged) with graded "
                           "judgments over the MS MARCO passage collection.",
            "layout": {"kind": "files", "corpus": marco_docs, "splits": {"test": {
                "queries": src(q, "tsv-queries"), "qrels": src(r, "trec-qrels")}}},
            "counts": counts("msmarco-passage", {"test": f"msmarco-passage/trec-dl-{year}"}),
        })
    for name, splits in (("scifact", ["train", "test"]), ("nfcorpus", ["train", "dev", "test"])):
        z = file("beir", name)
        datasets.append({
            "name": f"beir/{name}",
            "description": f"BEIR {name}: corpus.jsonl, queries.jsonl and qrels/<split>.tsv from the BEIR zip.",
            "layout": {"kind": "files", "corpus": src(z, "beir-corpus", f"{name}/corpus.jsonl"), "splits": {
                s: {"queries": src(z, "beir-queries", f"{name}/queries.jsonl"),
                    "qrels": src(z, "beir-qrels", f"{name}/qrels/{s}.tsv"),
                    "judged_queries_only": True} for s in splits}},
            "counts": counts(f"beir/{name}", {s: f"beir/{name}/{s}" for s in splits}),
        })
    c = file("cranfield", "main")
    datasets.append({
        "name": "cranfield",
        "description": "Cranfield: 1,400 aeronautics abstracts, 225 queries; grades mapped to TREC order "
                       "(1->4, 2->3, 3->2, 4->1, -1->0).",
        "layout": {"kind": "files", "corpus": src(c, "cranfield-documents", "cran.all.1400"), "splits": {"test": {
            "queries": src(c, "cranfield-queries", "cran.qry"),
            "qrels": src(c, "cranfield-qrels", "cranqrel")}}},
        "counts": counts("cranfield", {"test": "cranfield"}),
    })
    nq = downloads["natural-questions"]
    train = [file("natural-questions", k, f"{k}.jsonl.gz") for k in sorted(nq) if k.startswith("nq-train-")]
    dev = [file("natural-questions", k, f"{k}.jsonl.gz") for k in sorted(nq) if k.startswith("nq-dev-")]
    nq_counts = {"documents": None, "splits": {
        "train": {"queries": metadata["natural-questions/train"]["queries"]["count"], "qrels": None},
        "test": {"queries": metadata["natural-questions/dev"]["queries"]["count"], "qrels": None}}}
    for name, subset in (("nq320k", None), ("nq100k", 100000), ("nq10k", 10000)):
        datasets.append({
            "name": f"nq-dsi/{name}",
            "description": "Natural Questions in the DSI form: one document per Wikipedia page (title + first "
                           "words), NQ train questions as train, NQ dev questions as test"
                           + (f"; a seeded subset of {subset:,} pages with their questions." if subset else
                              "; all pages (about 109k) and all questions (about 315k)."),
            "layout": {"kind": "nq-dsi", "train": train, "test": dev, "doc_words": 200,
                       "subset_documents": subset, "seed": 0},
            "counts": nq_counts if subset is None else None,
        })
    registry = {
        "source": "ir_datasets 0.6.3 (Apache-2.0): downloads.json and metadata.json, copied by "
                  "tools/data/make_registry.py",
        "files": files,
        "datasets": datasets,
    }
    Path(args.out).write_text(json.dumps(registry, indent=1) + "\n")
    print(f"{args.out}: {len(datasets)} datasets, {len(files)} files")


if __name__ == "__main__":
    main()
