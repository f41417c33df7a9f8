#!/usr/bin/env python3
"""Rebuild genir's shipped default collection, `data/wiki-genir/`, from real Wikipedia text.

Source: the Wikipedia dump excerpt that the gensim 4.3.3 wheel on PyPI ships as test data,
`gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`.

Run from the repository root:

    python3 tools/data/build_corpus.py            # writes data/wiki-genir/ and data/wiki-genir-mini/

The script makes a throwaway virtual environment in a temporary folder, installs the pinned
`mwparserfromhell` there, downloads the pinned gensim wheel with pip, and re-runs itself inside that
environment. Only the standard library is needed outside it. The output is deterministic given the seed.
See data/README.md for what is built and how.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

GENSIM_VERSION = "4.3.3"
MWPARSER_VERSION = "0.6.6"
DUMP_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# sha256 of the member above, as shipped in every gensim 4.3.3 wheel; the build refuses other bytes.
DUMP_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"

SEED = 20240611
PASSAGE_WORDS = 100  # a passage closes at the first sentence end at or after this many words
MIN_PASSAGE_WORDS = 40  # a shorter tail is merged into the passage before it
MAX_PASSAGES_PER_ARTICLE = 30  # keeps the collection small enough for CPU training
MIN_ARTICLE_WORDS = 300
ICT_MIN_SENTENCES = 3  # a passage needs this many sentences to give one up as a query
ICT_QUERY_WORDS = (6, 40)
SPLIT = (0.8, 0.1, 0.1)  # train / validation / test fractions of the queries
MINI_MAX_PASSAGES = 200

DROP_SECTIONS = {
    "see also", "references", "external links", "further reading", "notes", "bibliography",
    "sources", "footnotes", "citations", "notes and references", "references and notes",
    "works cited", "gallery", "discography", "filmography", "selected works", "works",
    "publications", "primary sources", "secondary sources",
}
NON_ARTICLE_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?|simple)\s*:", re.I)
ABBREVIATIONS = {
    "e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "no.", "c.", "ca.",
    "u.s.", "u.k.", "fig.", "vol.", "pp.", "p.", "ed.", "eds.", "approx.", "mt.", "gen.", "col.", "lt.",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Stage 1 (system Python): a throwaway venv, the wheel, then stage 2 inside the venv.


def bootstrap(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="genir-corpus-") as tmp:
        tmp_path = Path(tmp)
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"mwparserfromhell=={MWPARSER_VERSION}"], check=True)
        wheels = tmp_path / "wheels"
        subprocess.run(
            [str(py), "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "-d", str(wheels), f"gensim=={GENSIM_VERSION}"],
            check=True,
        )
        (wheel,) = sorted(wheels.glob(f"gensim-{GENSIM_VERSION}-*.whl"))
        dump = tmp_path / "dump.xml.bz2"
        with zipfile.ZipFile(wheel) as zf:
            dump.write_bytes(zf.read(DUMP_MEMBER))
        cmd = [str(py), __file__, "--stage", "build", "--dump", str(dump), "--out", str(args.out),
               "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)


# ---------------------------------------------------------------------------------------------------
# Stage 2 (inside the venv): clean, split into passages, make queries, write.


def iter_pages(dump: Path):
    """Yield (title, wikitext) for main-namespace, non-redirect pages."""
    with bz2.open(dump, "rb") as fh:
        title = ns = text = None
        redirect = False
        for event, elem in ET.iterparse(fh, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text or ""
            elif tag == "ns":
                ns = elem.text
            elif tag == "redirect":
                redirect = True
            elif tag == "text":
                text = elem.text or ""
            elif tag == "page":
                if ns == "0" and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                    yield title, text
                title = ns = text = None
                redirect = False
                elem.clear()


def clean_wikitext(text: str) -> list[str]:
    """Return the article's prose paragraphs, markup removed."""
    import mwparserfromhell as mw

    code = mw.parse(text)
    for node in list(code.filter_comments(recursive=True)):
        _remove(code, node)
    for node in list(code.filter_templates(recursive=False)):
        _remove(code, node)
    for node in list(code.filter_tags(recursive=True)):
        if str(node.tag).lower() in {"ref", "references", "table", "gallery", "math", "timeline", "imagemap", "div", "center"}:
            _remove(code, node)
    for node in list(code.filter_wikilinks(recursive=True)):
        if NON_ARTICLE_LINK.match(str(node.title)):
            _remove(code, node)
    raw = str(code)
    # Tables the parser left as text and stray template braces.
    raw = re.sub(r"\{\|.*?\|\}", " ", raw, flags=re.S)
    raw = re.sub(r"\{\{.*?\}\}", " ", raw, flags=re.S)

    paragraphs: list[str] = []
    dropping = False
    for line in raw.split("\n"):
        stripped = line.strip()
        heading = re.match(r"^(=+)\s*(.*?)\s*\1$", stripped)
        if heading:
            name = mw.parse(heading.group(2)).strip_code().strip().lower()
            dropping = name in DROP_SECTIONS
            continue
        if dropping or not stripped or stripped[0] in "*#:;|!{}" or stripped.startswith("----"):
            continue
        prose = mw.parse(stripped).strip_code(normalize=True, collapse=True)
        prose = re.sub(r"'{2,}", "", prose)
        prose = re.sub(r"<[^>]+>", " ", prose)
        prose = re.sub(r"\[https?://\S+\s*([^\]]*)\]", r"\1", prose)
        prose = re.sub(r"https?://\S+", " ", prose)
        prose = re.sub(r"\(\s*[,;]?\s*\)", " ", prose)  # brackets emptied by the removals above
        prose = re.sub(r"\s+([,.;:])", r"\1", prose)
        prose = re.sub(r"\s+", " ", prose).strip()
        if len(prose.split()) >= 8 and prose[-1] in ".!?\"')":
            paragraphs.append(prose)
    return paragraphs


def _remove(code, node) -> None:
    try:
        code.remove(node)
    except ValueError:
        pass  # already gone with a removed parent


def split_sentences(paragraph: str) -> list[str]:
    words = paragraph.split(" ")
    sentences, current = [], []
    for i, word in enumerate(words):
        current.append(word)
        nxt = words[i + 1] if i + 1 < len(words) else ""
        ends = re.search(r"[.!?][\"')\]]*$", word) is not None
        if not ends or not nxt:
            continue
        lower = word.lower().rstrip("\"')]")
        is_initial = re.fullmatch(r"[A-Z]\.", word) is not None
        if lower in ABBREVIATIONS or is_initial or not re.match(r"[\"'(\[]?[A-Z0-9]", nxt):
            continue
        sentences.append(" ".join(current))
        current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def passages_of(paragraphs: list[str]) -> list[list[str]]:
    """Greedy packing of whole sentences into passages of about PASSAGE_WORDS words."""
    passages: list[list[str]] = []
    current: list[str] = []
    count = 0
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            current.append(sentence)
            count += len(sentence.split())
            if count >= PASSAGE_WORDS:
                passages.append(current)
                current, count = [], 0
    if current:
        if passages and count < MIN_PASSAGE_WORDS:
            passages[-1].extend(current)
        else:
            passages.append(current)
    return passages


def build(args: argparse.Namespace) -> None:
    dump = Path(args.dump)
    digest = sha256(dump.read_bytes())
    if digest != DUMP_SHA256:
        sys.exit(f"unexpected dump checksum {digest}; expected {DUMP_SHA256}")
    rng = random.Random(args.seed)

    articles = []  # (title, [passage sentences])
    skipped = 0
    for title, text in iter_pages(dump):
        if "(disambiguation)" in title or "may refer to" in text[:2000]:
            skipped += 1
            continue
        paragraphs = clean_wikitext(text)
        if sum(len(p.split()) for p in paragraphs) < MIN_ARTICLE_WORDS:
            skipped += 1
            continue
        articles.append((title, passages_of(paragraphs)[:MAX_PASSAGES_PER_ARTICLE]))

    docs, queries, qrels = [], [], []
    for art_index, (title, passages) in enumerate(articles):
        first_doc = len(docs)
        for sentences in passages:
            docid = str(len(docs))
            candidates = [
                i for i, s in enumerate(sentences)
                if ICT_QUERY_WORDS[0] <= len(s.split()) <= ICT_QUERY_WORDS[1]
            ]
            if len(sentences) >= ICT_MIN_SENTENCES and candidates:
                pick = rng.choice(candidates)
                queries.append({"qid": f"ict-{docid}", "text": sentences[pick], "kind": "ict"})
                qrels.append((f"ict-{docid}", docid, 1))
                sentences = sentences[:pick] + sentences[pick + 1:]
            docs.append({"docid": docid, "title": title, "text": " ".join(sentences), "article": art_index})
        qid = f"title-{art_index}"
        queries.append({"qid": qid, "text": title, "kind": "title"})
        for d in range(first_doc, len(docs)):
            qrels.append((qid, str(d), 1))

    order = list(range(len(queries)))
    rng.shuffle(order)
    n_train = round(SPLIT[0] * len(order))
    n_valid = round(SPLIT[1] * len(order))
    split_of = {}
    for rank, qi in enumerate(order):
        split_of[queries[qi]["qid"]] = "train" if rank < n_train else "validation" if rank < n_train + n_valid else "test"

    out = Path(args.out)
    write_collection(out / "wiki-genir", docs, queries, qrels, split_of)

    mini_articles, total = set(), 0
    for art_index, (_, passages) in enumerate(articles):
        if total + len(passages) > MINI_MAX_PASSAGES:
            break
        mini_articles.add(art_index)
        total += len(passages)
    mini_docs = [d for d in docs if d["article"] in mini_articles]
    mini_ids = {d["docid"] for d in mini_docs}
    mini_qrels = [q for q in qrels if q[1] in mini_ids]
    mini_qids = {q[0] for q in mini_qrels}
    mini_queries = [q for q in queries if q["qid"] in mini_qids]
    write_collection(out / "wiki-genir-mini", mini_docs, mini_queries, mini_qrels, split_of)

    stats = {
        "source_sha256": digest,
        "pages_kept": len(articles),
        "pages_skipped": skipped,
        "seed": args.seed,
    }
    print(json.dumps(stats))


def write_collection(folder: Path, docs, queries, qrels, split_of) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for d in docs:
            fh.write(json.dumps({"docid": d["docid"], "title": d["title"], "text": d["text"]}, ensure_ascii=False) + "\n")
    counts = {"documents": len(docs), "words": sum(len(d["text"].split()) for d in docs)}
    for split in ("train", "validation", "test"):
        split_queries = [q for q in queries if split_of[q["qid"]] == split]
        qids = {q["qid"] for q in split_queries}
        with open(folder / f"queries.{split}.tsv", "w", encoding="utf-8", newline="\n") as fh:
            for q in split_queries:
                fh.write(f"{q['qid']}\t{q['text']}\n")
        split_qrels = [q for q in qrels if q[0] in qids]
        with open(folder / f"qrels.{split}.trec", "w", encoding="utf-8", newline="\n") as fh:
            for qid, docid, grade in split_qrels:
                fh.write(f"{qid} 0 {docid} {grade}\n")
        counts[split] = {
            "queries": len(split_queries),
            "ict_queries": sum(q["kind"] == "ict" for q in split_queries),
            "title_queries": sum(q["kind"] == "title" for q in split_queries),
            "qrels": len(split_qrels),
        }
    (folder / "counts.json").write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")
    print(folder, json.dumps(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data", help="output folder (default: data)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--stage", choices=["bootstrap", "build"], default="bootstrap")
    parser.add_argument("--dump", help="(build stage) path of the extracted .bz2 dump")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    if args.stage == "bootstrap":
        bootstrap(args)
    else:
        build(args)


if __name__ == "__main__":
    main()
