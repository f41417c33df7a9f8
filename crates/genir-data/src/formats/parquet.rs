//! Parquet through polars, and conversions between the typed collections and polars `DataFrame`s.
//!
//! Column layouts: documents `docid, title, text` (strings); queries `qid, text`; qrels `qid, docid` (strings),
//! `grade` (i32); runs `qid, docid` (strings), `rank` (u32), `score` (f64), `tag` (string).

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::types::{Corpus, Document, Qrel, Qrels, Queries, Query, Run, RunEntry};

fn pe(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

fn strings<'a, T: 'a>(items: &'a [T], f: impl Fn(&'a T) -> &'a str) -> Vec<&'a str> {
    items.iter().map(f).collect()
}

/// A DataFrame with columns `docid, title, text`.
pub fn corpus_to_frame(corpus: &Corpus) -> PolarsResult<DataFrame> {
    let d = corpus.as_slice();
    DataFrame::new_infer_height(vec![
        Column::new("docid".into(), strings(d, |x| &x.docid)),
        Column::new("title".into(), strings(d, |x| &x.title)),
        Column::new("text".into(), strings(d, |x| &x.text)),
    ])
}

/// A DataFrame with columns `qid, text`.
pub fn queries_to_frame(queries: &Queries) -> PolarsResult<DataFrame> {
    let q = queries.as_slice();
    DataFrame::new_infer_height(vec![
        Column::new("qid".into(), strings(q, |x| &x.qid)),
        Column::new("text".into(), strings(q, |x| &x.text)),
    ])
}

/// A DataFrame with columns `qid, docid, grade`.
pub fn qrels_to_frame(qrels: &Qrels) -> PolarsResult<DataFrame> {
    let q = qrels.as_slice();
    DataFrame::new_infer_height(vec![
        Column::new("qid".into(), strings(q, |x| &x.qid)),
        Column::new("docid".into(), strings(q, |x| &x.docid)),
        Column::new(
            "grade".into(),
            q.iter().map(|x| x.grade).collect::<Vec<i32>>(),
        ),
    ])
}

/// A DataFrame with columns `qid, docid, rank, score, tag`.
pub fn run_to_frame(run: &Run) -> PolarsResult<DataFrame> {
    let r = run.entries.as_slice();
    DataFrame::new_infer_height(vec![
        Column::new("qid".into(), strings(r, |x| &x.qid)),
        Column::new("docid".into(), strings(r, |x| &x.docid)),
        Column::new(
            "rank".into(),
            r.iter().map(|x| x.rank).collect::<Vec<u32>>(),
        ),
        Column::new(
            "score".into(),
            r.iter().map(|x| x.score).collect::<Vec<f64>>(),
        ),
        Column::new("tag".into(), strings(r, |x| &x.tag)),
    ])
}

fn str_column(df: &DataFrame, name: &str, path: &Path, optional: bool) -> Result<Vec<String>> {
    let col = match df.column(name) {
        Ok(c) => c,
        Err(_) if optional => return Ok(vec![String::new(); df.height()]),
        Err(_) => return Err(Error::parse(path, 0, name, "column missing")),
    };
    let values = col
        .str()
        .map_err(|e| Error::parse(path, 0, name, format!("not a string column: {e}")))?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(s) => Ok(s.to_string()),
            None if optional => Ok(String::new()),
            None => Err(Error::parse(path, i as u64 + 1, name, "null")),
        })
        .collect()
}

fn cast_column<T>(
    df: &DataFrame,
    name: &str,
    dtype: DataType,
    path: &Path,
    get: impl Fn(&Column) -> PolarsResult<Vec<Option<T>>>,
) -> Result<Vec<T>> {
    let col = df
        .column(name)
        .map_err(|_| Error::parse(path, 0, name, "column missing"))?;
    let cast = col
        .strict_cast(&dtype)
        .map_err(|e| Error::parse(path, 0, name, format!("cannot read as {dtype}: {e}")))?;
    let values = get(&cast).map_err(pe(path))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| Error::parse(path, i as u64 + 1, name, "null")))
        .collect()
}

/// Documents from a DataFrame with `docid, text` and optionally `title` columns; `path` labels errors.
pub fn corpus_from_frame(df: &DataFrame, path: &Path) -> Result<Corpus> {
    let ids = str_column(df, "docid", path, false)?;
    let titles = str_column(df, "title", path, true)?;
    let texts = str_column(df, "text", path, false)?;
    Ok(ids
        .into_iter()
        .zip(titles)
        .zip(texts)
        .map(|((docid, title), text)| Document { docid, title, text })
        .collect())
}

/// Queries from a DataFrame with `qid, text` columns.
pub fn queries_from_frame(df: &DataFrame, path: &Path) -> Result<Queries> {
    let ids = str_column(df, "qid", path, false)?;
    let texts = str_column(df, "text", path, false)?;
    Ok(ids
        .into_iter()
        .zip(texts)
        .map(|(qid, text)| Query { qid, text })
        .collect())
}

/// Qrels from a DataFrame with `qid, docid, grade` columns (any integer type for `grade`).
pub fn qrels_from_frame(df: &DataFrame, path: &Path) -> Result<Qrels> {
    let qids = str_column(df, "qid", path, false)?;
    let docids = str_column(df, "docid", path, false)?;
    let grades = cast_column(df, "grade", DataType::Int32, path, |c| {
        Ok(c.i32()?.iter().collect())
    })?;
    Ok(qids
        .into_iter()
        .zip(docids)
        .zip(grades)
        .map(|((qid, docid), grade)| Qrel { qid, docid, grade })
        .collect())
}

/// A run from a DataFrame with `qid, docid, rank, score, tag` columns.
pub fn run_from_frame(df: &DataFrame, path: &Path) -> Result<Run> {
    let qids = str_column(df, "qid", path, false)?;
    let docids = str_column(df, "docid", path, false)?;
    let ranks = cast_column(df, "rank", DataType::UInt32, path, |c| {
        Ok(c.u32()?.iter().collect())
    })?;
    let scores = cast_column(df, "score", DataType::Float64, path, |c| {
        Ok(c.f64()?.iter().collect())
    })?;
    let tags = str_column(df, "tag", path, false)?;
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

/// Reads a whole Parquet file into a DataFrame.
pub fn read_frame(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(file).finish().map_err(pe(path))
}

/// Writes a DataFrame to a Parquet file (creating parent folders).
pub fn write_frame(path: &Path, df: &mut DataFrame) -> Result<()> {
    let out = super::create(path)?;
    ParquetWriter::new(out).finish(df).map_err(pe(path))?;
    Ok(())
}

/// Reads documents from Parquet.
pub fn read_corpus(path: &Path) -> Result<Corpus> {
    corpus_from_frame(&read_frame(path)?, path)
}

/// Reads queries from Parquet.
pub fn read_queries(path: &Path) -> Result<Queries> {
    queries_from_frame(&read_frame(path)?, path)
}

/// Reads qrels from Parquet.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    qrels_from_frame(&read_frame(path)?, path)
}

/// Reads a run from Parquet.
pub fn read_run(path: &Path) -> Result<Run> {
    run_from_frame(&read_frame(path)?, path)
}

/// Writes documents to Parquet.
pub fn write_corpus(path: &Path, corpus: &Corpus) -> Result<()> {
    write_frame(path, &mut corpus_to_frame(corpus).map_err(pe(path))?)
}

/// Writes queries to Parquet.
pub fn write_queries(path: &Path, queries: &Queries) -> Result<()> {
    write_frame(path, &mut queries_to_frame(queries).map_err(pe(path))?)
}

/// Writes qrels to Parquet.
pub fn write_qrels(path: &Path, qrels: &Qrels) -> Result<()> {
    write_frame(path, &mut qrels_to_frame(qrels).map_err(pe(path))?)
}

/// Writes a run to Parquet.
pub fn write_run(path: &Path, run: &Run) -> Result<()> {
    write_frame(path, &mut run_to_frame(run).map_err(pe(path))?)
}
