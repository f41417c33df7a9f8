//! TREC qrels (`qid iteration docid grade`) and runs (`qid Q0 docid rank score tag`).
//!
//! Fields are separated by any whitespace, so MS MARCO's tab-separated `qrels.dev.tsv` reads as TREC qrels.
//! A line with a tab must have the same columns split on tabs as on whitespace: an empty column or one with a
//! space (`q1<TAB>doc one<TAB>1`) is an error, not a shifted field. The qrels reader also accepts 3-column
//! judgments (`qid docid grade`: BEIR TSV, Cranfield), and skips a BEIR header (`query-id corpus-id score`) on
//! the first line.

use std::io::{BufRead, Write};
use std::path::Path;

use super::{parse_grade, required, write_err, Records};
use crate::error::{Error, Result};
use crate::types::{Qrel, Run, RunEntry};

/// Streams qrels (3 or 4 columns).
pub fn qrels<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Qrel> {
    Records::new(reader, path.as_ref(), parse_qrel)
}

/// Streams BEIR qrels (`query-id corpus-id score`, exactly 3 columns, as ir_datasets' `BeirQrels`).
pub fn beir_qrels<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Qrel> {
    Records::new(reader, path.as_ref(), parse_beir_qrel)
}

/// Streams run rows.
pub fn run<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, RunEntry> {
    Records::new(reader, path.as_ref(), parse_run_entry)
}

/// The whitespace-separated fields of a line; a line with a tab must split into the same fields on tabs.
fn fields<'a>(line: &'a str, path: &Path, line_no: u64) -> Result<Vec<&'a str>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if line.contains('\t') {
        let columns = line.trim().split('\t').count();
        if columns != fields.len() {
            return Err(Error::parse(
                path,
                line_no,
                "<columns>",
                format!(
                    "{columns} tab-separated columns but {} whitespace-separated fields (a column is empty or \
                     contains a space)",
                    fields.len()
                ),
            ));
        }
    }
    Ok(fields)
}

fn parse_qrel(line: &str, path: &Path, line_no: u64) -> Result<Option<Qrel>> {
    qrel_of(line, path, line_no, false)
}

fn parse_beir_qrel(line: &str, path: &Path, line_no: u64) -> Result<Option<Qrel>> {
    qrel_of(line, path, line_no, true)
}

fn qrel_of(line: &str, path: &Path, line_no: u64, beir: bool) -> Result<Option<Qrel>> {
    let fields = fields(line, path, line_no)?;
    if fields.is_empty() {
        return Ok(None);
    }
    if line_no == 1 && fields.first() == Some(&"query-id") {
        return Ok(None);
    }
    let (qid, docid, grade) = match (fields.as_slice(), beir) {
        ([qid, _iteration, docid, grade], false) => (*qid, *docid, *grade),
        ([qid, docid, grade], _) => (*qid, *docid, *grade),
        _ => {
            let expected = if beir {
                "`query-id corpus-id score`"
            } else {
                "`qid 0 docid grade` or `qid docid grade`"
            };
            return Err(Error::parse(
                path,
                line_no,
                "<columns>",
                format!("expected {expected}, found {} fields", fields.len()),
            ));
        }
    };
    Ok(Some(Qrel {
        qid: required(Some(qid), path, line_no, "qid")?.to_string(),
        docid: required(Some(docid), path, line_no, "docid")?.to_string(),
        grade: parse_grade(grade, path, line_no, "grade")?,
    }))
}

fn parse_run_entry(line: &str, path: &Path, line_no: u64) -> Result<Option<RunEntry>> {
    let fields = fields(line, path, line_no)?;
    if fields.is_empty() {
        return Ok(None);
    }
    let [qid, _q0, docid, rank, score, tag] = fields.as_slice() else {
        return Err(Error::parse(
            path,
            line_no,
            "<columns>",
            format!(
                "expected `qid Q0 docid rank score tag`, found {} fields",
                fields.len()
            ),
        ));
    };
    let rank = rank.parse::<u32>().map_err(|_| {
        Error::parse(
            path,
            line_no,
            "rank",
            format!("`{rank}` is not a non-negative integer"),
        )
    })?;
    let score = score
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .ok_or_else(|| {
            Error::parse(
                path,
                line_no,
                "score",
                format!("`{score}` is not a finite number"),
            )
        })?;
    Ok(Some(RunEntry {
        qid: qid.to_string(),
        docid: docid.to_string(),
        rank,
        score,
        tag: tag.to_string(),
    }))
}

fn check(value: &str, what: &str) -> Result<()> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(Error::Unwritable {
            what: format!("{what} `{value}` in a TREC file"),
            message: "ids and tags must be non-empty and contain no whitespace".into(),
        });
    }
    Ok(())
}

/// Writes qrels as `qid 0 docid grade`.
pub fn write_qrels<'a, W: Write + ?Sized>(
    w: &mut W,
    qrels: impl IntoIterator<Item = &'a Qrel>,
) -> Result<()> {
    for q in qrels {
        check(&q.qid, "qid")?;
        check(&q.docid, "docid")?;
        writeln!(w, "{} 0 {} {}", q.qid, q.docid, q.grade).map_err(write_err)?;
    }
    Ok(())
}

/// Writes a run as `qid Q0 docid rank score tag`.
pub fn write_run<W: Write + ?Sized>(w: &mut W, run: &Run) -> Result<()> {
    for e in &run.entries {
        check(&e.qid, "qid")?;
        check(&e.docid, "docid")?;
        check(&e.tag, "tag")?;
        if !e.score.is_finite() {
            return Err(Error::Unwritable {
                what: format!("score of `{}` for `{}`", e.docid, e.qid),
                message: "not a finite number".into(),
            });
        }
        writeln!(
            w,
            "{} Q0 {} {} {} {}",
            e.qid, e.docid, e.rank, e.score, e.tag
        )
        .map_err(write_err)?;
    }
    Ok(())
}
