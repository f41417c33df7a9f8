//! genir's Parquet reader against files written by pyarrow (tools/reference/make_parquet_fixtures.py): every
//! compression, dictionary and plain pages, data pages v1 and v2, several row groups, nulls, large strings,
//! int64 grades, float32 scores, unsigned ranks and a list column genir does not read.

use genir_data::formats::{self, parquet};
use genir_data::Table;
use serde_json::Value;

use crate::fixture;

fn expected() -> Value {
    let p = fixture("parquet/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn strs(v: &Value) -> Vec<Option<String>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

#[test]
fn pyarrow_corpora_read_with_every_compression() {
    let want = &expected()["corpus"];
    let docids = strs(&want["docid"]);
    let titles = strs(&want["title"]);
    let texts = strs(&want["text"]);
    assert!(
        titles.iter().any(Option::is_none),
        "the fixture has null titles"
    );
    for codec in ["snappy", "gzip", "zstd", "brotli", "lz4"] {
        let path = fixture(&format!("parquet/corpus-{codec}.parquet"));
        let t = Table::read_parquet(&path).unwrap();
        assert_eq!(t.height(), 300, "{codec}");
        // The list column is not read, and asking for it says why.
        assert_eq!(t.names(), ["docid", "title", "text"], "{codec}");
        let e = t.column("embedding").unwrap_err().to_string();
        assert!(e.contains("embedding") && e.contains("nested"), "{e}");
        let title = t.column("title").unwrap().opt_strs().unwrap();
        let title: Vec<Option<String>> = title.iter().map(|s| s.map(str::to_string)).collect();
        assert_eq!(title, titles, "{codec}");
        let corpus = parquet::read_corpus(&path).unwrap();
        assert_eq!(corpus.len(), 300);
        for (i, d) in corpus.iter().enumerate() {
            assert_eq!(Some(&d.docid), docids[i].as_ref());
            assert_eq!(
                d.title,
                titles[i].clone().unwrap_or_default(),
                "null title -> empty"
            );
            assert_eq!(Some(&d.text), texts[i].as_ref());
        }
        // The generic reader picks the format from the extension.
        assert_eq!(formats::load_corpus(&path).unwrap().len(), 300);
    }
}

#[test]
fn pyarrow_qrels_and_runs_read_with_their_integer_and_float_types() {
    let want = expected();
    let qrels = parquet::read_qrels(&fixture("parquet/qrels.parquet")).unwrap();
    let grades: Vec<i64> = want["qrels"]["grade"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_i64().unwrap())
        .collect();
    assert_eq!(qrels.len(), grades.len());
    for (q, g) in qrels.iter().zip(&grades) {
        assert_eq!(i64::from(q.grade), *g);
    }
    let run = parquet::read_run(&fixture("parquet/run.parquet")).unwrap();
    let scores = want["run"]["score"].as_array().unwrap();
    assert_eq!(run.entries.len(), 5);
    for (i, e) in run.entries.iter().enumerate() {
        assert_eq!(e.rank, i as u32 + 1);
        // float32 in the file: exactly representable values, read exactly.
        assert_eq!(e.score, scores[i].as_f64().unwrap());
        assert_eq!(e.tag, "bm25");
    }
    let t = Table::read_parquet(&fixture("parquet/run.parquet")).unwrap();
    assert!(matches!(
        t.column("rank").unwrap().values(),
        genir_data::Values::U32(_)
    ));
}

#[test]
fn a_truncated_parquet_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("parquet/qrels.parquet")).unwrap();
    let p = dir.path().join("cut.parquet");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = parquet::read_qrels(&p).unwrap_err().to_string();
    assert!(e.contains("cut.parquet"), "{e}");
    // A run without its `score` column names the column.
    let t = Table::read_parquet(&fixture("parquet/qrels.parquet")).unwrap();
    let e = parquet::run_from_table(&t, &p).unwrap_err().to_string();
    assert!(e.contains("rank") || e.contains("score"), "{e}");
}

#[test]
fn a_polars_written_table_reads() {
    // genir wrote its result tables with polars until 2026-12; such files must still read.
    let want = &expected()["polars_table"];
    let t = Table::read_parquet(&fixture("parquet/polars.parquet")).unwrap();
    assert_eq!(t.names(), ["qid", "layer", "rank", "value", "hit"]);
    let qid = t.column("qid").unwrap().opt_strs().unwrap();
    assert_eq!(qid, [Some("q1"), None, Some("q3")]);
    assert_eq!(t.i64s("layer").unwrap(), [0, 1, 2]);
    assert!(
        matches!(t.column("rank").unwrap().values(), genir_data::Values::U32(v) if v == &[1, 2, 3])
    );
    let v = t.f64s("value").unwrap();
    assert_eq!((v[0], v[1]), (0.5, -1.25));
    assert!(v[2].is_nan() && want["value"][2] == "NaN");
    assert_eq!(t.strs("hit").unwrap(), ["true", "false", "true"]);
}

#[test]
fn columns_genir_does_not_read_are_left_out_by_name_and_the_rest_read_right() {
    // A list column first (leaf indices shift), a non-UTF-8 binary column, a decimal, a date and a timestamp
    // between flat columns genir reads.
    let t = Table::read_parquet(&fixture("parquet/mixed.parquet")).unwrap();
    assert_eq!(t.names(), ["docid", "grade", "score"]);
    assert_eq!(t.strs("docid").unwrap(), ["x1", "x2", "x3"]);
    assert_eq!(t.i64s("grade").unwrap(), [2, -1, 0]);
    let score = t.column("score").unwrap();
    assert!(matches!(score.values(), genir_data::Values::F32(_)));
    assert_eq!(score.f64s().unwrap()[..2], [0.25, 1.5]);
    assert!(score.is_null(2));
    for (name, why) in [
        ("tags", "nested"),
        ("blob", "UTF-8"),
        ("price", "Decimal"),
        ("day", "Date"),
        ("at", "Timestamp"),
    ] {
        let e = t.column(name).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(why), "{name}: {e}");
    }
}

#[test]
fn nan_or_fractional_grades_and_nan_scores_are_errors_naming_the_row() {
    use genir_data::{Column, Error};
    let dir = tempfile::tempdir().unwrap();
    let ids = |n: usize| -> Vec<String> { (0..n).map(|i| format!("x{i}")).collect() };
    let qrels = |grades: Vec<f64>| {
        Table::new(vec![
            Column::new("qid", ids(grades.len())),
            Column::new("docid", ids(grades.len())),
            Column::new("grade", grades),
        ])
        .unwrap()
    };
    let p = dir.path().join("qrels.parquet");
    qrels(vec![1.0, 2.0]).write_parquet(&p).unwrap();
    assert_eq!(formats::load_qrels(&p).unwrap().grade("x1", "x1"), Some(2));
    for (grades, row) in [
        (vec![1.0, f64::NAN], 2),
        (vec![1.5], 1),
        (vec![0.0, 1.0, 3.0e9], 3),
    ] {
        qrels(grades).write_parquet(&p).unwrap();
        let err = formats::load_qrels(&p).unwrap_err();
        assert!(
            matches!(&err, Error::Parse { line, field, .. } if *line == row && field == "grade"),
            "{err}"
        );
        assert!(err.to_string().contains("qrels.parquet"), "{err}");
    }

    let p = dir.path().join("run.parquet");
    Table::new(vec![
        Column::new("qid", ids(2)),
        Column::new("docid", ids(2)),
        Column::new("rank", vec![1u32, 2]),
        Column::new("score", vec![1.0f64, f64::NAN]),
        Column::new("tag", vec!["t", "t"]),
    ])
    .unwrap()
    .write_parquet(&p)
    .unwrap();
    let err = formats::load_run(&p).unwrap_err();
    assert!(
        matches!(&err, Error::Parse { line: 2, field, .. } if field == "score"),
        "{err}"
    );
}
