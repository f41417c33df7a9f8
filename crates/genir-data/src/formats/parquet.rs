//! Parquet files of the typed collections, through [`Table`].
//!
//! Column layouts: documents `docid, title, text` (strings); queries `qid, text`; qrels `qid, docid` (strings),
//! `grade` (i32); runs `qid, docid` (strings), `rank` (u32), `score` (f64), `tag` (string). Reading takes any
//! integer type (or integral floats) for `grade` and `rank`, any float or integer type for `score` (finite), and a
//! missing or null `title`; a value out of these bounds is an error naming the file, row and column.

use std::path::Path;

use crate::error::{Error, Result};
use crate::table::{Column, Table, Values};
use crate::types::{Corpus, Document, Qrel, Qrels, Queries, Query, Run, RunEntry};

fn strings<'a, T: 'a>(items: &'a [T], f: impl Fn(&'a T) -> &'a str) -> Vec<&'a str> {
    items.iter().map(f).collect()
}

/// A table with columns `docid, title, text`.
pub fn corpus_to_table(corpus: &Corpus) -> Result<Table> {
    let d = corpus.as_slice();
    Table::new(vec![
        Column::new("docid", strings(d, |x| &x.docid)),
        Column::new("title", strings(d, |x| &x.title)),
        Column::new("text", strings(d, |x| &x.text)),
    ])
}

/// A table with columns `qid, text`.
pub fn queries_to_table(queries: &Queries) -> Result<Table> {
    let q = queries.as_slice();
    Table::new(vec![
        Column::new("qid", strings(q, |x| &x.qid)),
        Column::new("text", strings(q, |x| &x.text)),
    ])
}

/// A table with columns `qid, docid, grade`.
pub fn qrels_to_table(qrels: &Qrels) -> Result<Table> {
    let q = qrels.as_slice();
    Table::new(vec![
        Column::new("qid", strings(q, |x| &x.qid)),
        Column::new("docid", strings(q, |x| &x.docid)),
        Column::new("grade", q.iter().map(|x| x.grade).collect::<Vec<i32>>()),
    ])
}

/// A table with columns `qid, docid, rank, score, tag`; a score that is not a finite number is an error (the
/// reader refuses it too, as the TREC writer does).
pub fn run_to_table(run: &Run) -> Result<Table> {
    let r = run.entries.as_slice();
    if let Some(e) = r.iter().find(|e| !e.score.is_finite()) {
        return Err(Error::Unwritable {
            what: format!("score of `{}` for `{}`", e.docid, e.qid),
            message: "not a finite number".into(),
        });
    }
    Table::new(vec![
        Column::new("qid", strings(r, |x| &x.qid)),
        Column::new("docid", strings(r, |x| &x.docid)),
        Column::new("rank", r.iter().map(|x| x.rank).collect::<Vec<u32>>()),
        Column::new("score", r.iter().map(|x| x.score).collect::<Vec<f64>>()),
        Column::new("tag", strings(r, |x| &x.tag)),
    ])
}

fn str_column(t: &Table, name: &str, path: &Path, optional: bool) -> Result<Vec<String>> {
    let col = match t.column(name) {
        Ok(c) => c,
        Err(_) if optional => return Ok(vec![String::new(); t.height()]),
        Err(e) => return Err(Error::parse(path, 0, name, e.to_string())),
    };
    let values = col
        .opt_strs()
        .map_err(|e| Error::parse(path, 0, name, e.to_string()))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(s) => Ok(s.to_string()),
            None if optional => Ok(String::new()),
            None => Err(Error::parse(path, i as u64 + 1, name, "null")),
        })
        .collect()
}

fn no_nulls(t: &Table, name: &str, path: &Path) -> Result<()> {
    let c = t
        .column(name)
        .map_err(|e| Error::parse(path, 0, name, e.to_string()))?;
    match (0..c.len()).find(|&i| c.is_null(i)) {
        Some(i) => Err(Error::parse(path, i as u64 + 1, name, "null")),
        None => Ok(()),
    }
}

/// An integer column; a float column is read when every value is integral (not NaN, not fractional, in
/// range), and an error names the row otherwise.
fn int_column<T: TryFrom<i64>>(t: &Table, name: &str, path: &Path) -> Result<Vec<T>> {
    no_nulls(t, name, path)?;
    let col = t
        .column(name)
        .map_err(|e| Error::parse(path, 0, name, e.to_string()))?;
    let v: Vec<i64> = match col.values() {
        Values::F64(_) | Values::F32(_) => col
            .f64s()
            .map_err(|e| Error::parse(path, 0, name, e.to_string()))?
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                if x.fract() == 0.0 && x.abs() < 9.0e15 {
                    Ok(x as i64)
                } else {
                    Err(Error::parse(
                        path,
                        i as u64 + 1,
                        name,
                        format!("{x} is not an integer"),
                    ))
                }
            })
            .collect::<Result<_>>()?,
        _ => col
            .i64s()
            .map_err(|e| Error::parse(path, 0, name, e.to_string()))?,
    };
    v.into_iter()
        .enumerate()
        .map(|(i, x)| {
            T::try_from(x).map_err(|_| {
                Error::parse(
                    path,
                    i as u64 + 1,
                    name,
                    format!("{x} is out of range for {}", std::any::type_name::<T>()),
                )
            })
        })
        .collect()
}

/// Documents from a table with `docid, text` and optionally `title` columns; `path` labels errors.
pub fn corpus_from_table(t: &Table, path: &Path) -> Result<Corpus> {
    let ids = str_column(t, "docid", path, false)?;
    let titles = str_column(t, "title", path, true)?;
    let texts = str_column(t, "text", path, false)?;
    Ok(ids
        .into_iter()
        .zip(titles)
        .zip(texts)
        .map(|((docid, title), text)| Document { docid, title, text })
        .collect())
}

/// Queries from a table with `qid, text` columns.
pub fn queries_from_table(t: &Table, path: &Path) -> Result<Queries> {
    let ids = str_column(t, "qid", path, false)?;
    let texts = str_column(t, "text", path, false)?;
    Ok(ids
        .into_iter()
        .zip(texts)
        .map(|(qid, text)| Query { qid, text })
        .collect())
}

/// Qrels from a table with `qid, docid, grade` columns (any integer type for `grade`).
pub fn qrels_from_table(t: &Table, path: &Path) -> Result<Qrels> {
    let qids = str_column(t, "qid", path, false)?;
    let docids = str_column(t, "docid", path, false)?;
    let grades: Vec<i32> = int_column(t, "grade", path)?;
    Ok(qids
        .into_iter()
        .zip(docids)
        .zip(grades)
        .map(|((qid, docid), grade)| Qrel { qid, docid, grade })
        .collect())
}

/// A run from a table with `qid, docid, rank, score, tag` columns.
pub fn run_from_table(t: &Table, path: &Path) -> Result<Run> {
    let qids = str_column(t, "qid", path, false)?;
    let docids = str_column(t, "docid", path, false)?;
    let ranks: Vec<u32> = int_column(t, "rank", path)?;
    no_nulls(t, "score", path)?;
    let scores = t
        .f64s("score")
        .map_err(|e| Error::parse(path, 0, "score", e.to_string()))?;
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::parse(
            path,
            i as u64 + 1,
            "score",
            format!("{} is not a finite number", scores[i]),
        ));
    }
    let tags = str_column(t, "tag", path, false)?;
    let entries = qids
        .into_iter()
        .zip(docids)
        .zip(ranks)
        .zip(scores)
        .zip(tags)
        .map(|((((qid, docid), rank), score), tag)| RunEntry {
            qid,
            docid,
            rank,
            score,
            tag,
        })
        .collect();
    Ok(Run::new(entries))
}

/// Reads documents from Parquet.
pub fn read_corpus(path: &Path) -> Result<Corpus> {
    corpus_from_table(&Table::read_parquet(path)?, path)
}

/// Reads queries from Parquet.
pub fn read_queries(path: &Path) -> Result<Queries> {
    queries_from_table(&Table::read_parquet(path)?, path)
}

/// Reads qrels from Parquet.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    qrels_from_table(&Table::read_parquet(path)?, path)
}

/// Reads a run from Parquet.
pub fn read_run(path: &Path) -> Result<Run> {
    run_from_table(&Table::read_parquet(path)?, path)
}

/// Writes documents to Parquet.
pub fn write_corpus(path: &Path, corpus: &Corpus) -> Result<()> {
    corpus_to_table(corpus)?.write_parquet(path)
}

/// Writes queries to Parquet.
pub fn write_queries(path: &Path, queries: &Queries) -> Result<()> {
    queries_to_table(queries)?.write_parquet(path)
}

/// Writes qrels to Parquet.
pub fn write_qrels(path: &Path, qrels: &Qrels) -> Result<()> {
    qrels_to_table(qrels)?.write_parquet(path)
}

/// Writes a run to Parquet.
pub fn write_run(path: &Path, run: &Run) -> Result<()> {
    run_to_table(run)?.write_parquet(path)
}
