"""Parquet files written by pyarrow, read back by genir's own Parquet reader (crates/genir-data/tests).

They cover what other tools write and genir must read: snappy, gzip, zstd, brotli and lz4 compression,
dictionary and plain encodings, several row groups, nulls, large strings, int64 grades, float32 scores,
unsigned ranks, a column genir does not read (a list) beside the ones it does, and data pages v1 and v2; and a
table written by polars (the library genir wrote its tables with before 2026-12: old result files must still
read), when polars is installed.

    /work/venv-ref/bin/python tools/reference/make_parquet_fixtures.py

Writes crates/genir-data/tests/fixtures/parquet/*.parquet and expected.json (the values, as JSON).
"""

import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/genir-data/tests/fixtures/parquet"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    n = 300
    docids = [f"d{i}" for i in range(n)]
    titles = [None if i % 7 == 3 else f"Title {i % 5}" for i in range(n)]
    texts = [f"passage {i} \u00e9t\u00e9, \"quoted\"" for i in range(n)]
    corpus = pa.table(
        {
            "docid": pa.array(docids, pa.large_string()),
            "title": pa.array(titles, pa.string()),
            "text": pa.array(texts, pa.string()),
            "embedding": pa.array([[float(i), 1.0] for i in range(n)], pa.list_(pa.float32())),
        }
    )
    for codec in ["snappy", "gzip", "zstd", "brotli", "lz4"]:
        pq.write_table(
            corpus,
            OUT / f"corpus-{codec}.parquet",
            compression=codec,
            row_group_size=128,
            use_dictionary=["title"],
            data_page_version="2.0" if codec == "zstd" else "1.0",
        )
    qrels = pa.table(
        {
            "qid": pa.array([f"q{i // 2}" for i in range(20)], pa.string()),
            "docid": pa.array([f"d{i}" for i in range(20)], pa.string()),
            "grade": pa.array([i % 3 for i in range(20)], pa.int64()),
        }
    )
    pq.write_table(qrels, OUT / "qrels.parquet", compression="snappy")
    run = pa.table(
        {
            "qid": pa.array(["q1"] * 5, pa.string()),
            "docid": pa.array([f"d{i}" for i in range(5)], pa.string()),
            "rank": pa.array(list(range(1, 6)), pa.uint32()),
            "score": pa.array([2.5, 2.0, 1.5, 1.0, 0.5], pa.float32()),
            "tag": pa.array(["bm25"] * 5, pa.string()),
        }
    )
    pq.write_table(run, OUT / "run.parquet", compression="zstd")
    # Columns genir does not read, before and between ones it does: a list first, a non-UTF-8 binary column,
    # a decimal, a date and a timestamp (each must be left unread, not read as a plain number).
    import datetime
    import decimal

    mixed = pa.table(
        {
            "tags": pa.array([["a"], [], ["b", "c"]], pa.list_(pa.string())),
            "docid": pa.array(["x1", "x2", "x3"], pa.string()),
            "blob": pa.array([b"\xff\x00", b"\x80", b"ok"], pa.binary()),
            "price": pa.array([decimal.Decimal("12.34"), None, decimal.Decimal("-1.00")], pa.decimal128(9, 2)),
            "day": pa.array([datetime.date(2026, 12, 3)] * 3, pa.date32()),
            "grade": pa.array([2, None, 0], pa.int32()),
            "at": pa.array([datetime.datetime(2026, 12, 3, 20, 0)] * 3, pa.timestamp("ms")),
            "score": pa.array([0.25, 1.5, None], pa.float32()),
        }
    )
    pq.write_table(mixed, OUT / "mixed.parquet", compression="snappy")

    polars_table = {
        "qid": ["q1", None, "q3"],
        "layer": [0, 1, 2],
        "rank": [1, 2, 3],
        "value": [0.5, -1.25, float("nan")],
        "hit": [True, False, True],
    }
    try:
        import polars as pl

        pl.DataFrame(
            polars_table,
            schema={"qid": pl.String, "layer": pl.Int64, "rank": pl.UInt32, "value": pl.Float64, "hit": pl.Boolean},
        ).write_parquet(OUT / "polars.parquet")
        polars_version = pl.__version__
    except ImportError:
        polars_version = None
    polars_table["value"][2] = "NaN"
    expected = {
        "corpus": {"docid": docids, "title": titles, "text": texts},
        "qrels": qrels.to_pydict(),
        "run": {k: v for k, v in run.to_pydict().items()},
        "polars_table": polars_table,
        "pyarrow": pa.__version__,
        "polars": polars_version,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=0) + "\n")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
