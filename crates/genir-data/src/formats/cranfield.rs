//! The Cranfield collection's original SMART-style files: `cran.all.1400`, `cran.qry` and `cranqrel`.
//!
//! Records start with `.I <id>`; fields start with `.T` (title), `.A` (authors), `.B` (bibliography) and `.W`
//! (text), each followed by its lines. Documents keep `.T` as the title and `.W` as the text.
//!
//! Two conventions follow ir_datasets: query ids are renumbered `1..=225` in file order (the `.I` numbers in
//! `cran.qry` have gaps, while `cranqrel` uses the sequential numbers), and `cranqrel` lines are
//! `qid docid grade`. Cranfield grades run the other way from TREC (1 = complete answer ... 4 = minimal
//! interest, -1 = of no interest); [`ascending_grade`] maps them to TREC order.

use std::io::BufRead;
use std::path::Path;

use super::{numbered_lines, parse_grade, required};
use crate::error::{Error, Result};
use crate::types::{Document, Qrel, Query};

struct Record {
    id: String,
    line: u64,
    fields: Vec<(char, String)>,
}

fn records<R: BufRead>(reader: R, path: &Path) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::new();
    for line in numbered_lines(reader, path) {
        let (line_no, line) = line?;
        let trimmed = line.trim_end();
        if let Some(rest) = trimmed.strip_prefix(".I") {
            let id = rest.trim();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                return Err(Error::parse(
                    path,
                    line_no,
                    ".I",
                    format!("`{id}` is not a numeric id"),
                ));
            }
            out.push(Record {
                id: id.to_string(),
                line: line_no,
                fields: Vec::new(),
            });
            continue;
        }
        let Some(record) = out.last_mut() else {
            if trimmed.is_empty() {
                continue;
            }
            return Err(Error::parse(
                path,
                line_no,
                ".I",
                "content before the first `.I` record",
            ));
        };
        let marker = trimmed
            .strip_prefix('.')
            .filter(|m| m.len() == 1)
            .and_then(|m| m.chars().next());
        match marker {
            Some(c @ ('T' | 'A' | 'B' | 'W')) => record.fields.push((c, String::new())),
            Some(c) => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(".{c}"),
                    "unknown field marker",
                ))
            }
            None => match record.fields.last_mut() {
                Some((_, text)) => {
                    let piece = trimmed.trim();
                    if !piece.is_empty() {
                        if !text.is_empty() {
                            text.push(' ');
                        }
                        text.push_str(piece);
                    }
                }
                None if trimmed.trim().is_empty() => {}
                None => return Err(Error::parse(path, line_no, ".W", "text outside a field")),
            },
        }
    }
    Ok(out)
}

fn field(record: &Record, marker: char) -> Option<&str> {
    record
        .fields
        .iter()
        .find(|(c, _)| *c == marker)
        .map(|(_, t)| t.as_str())
}

/// Reads `cran.all.1400`.
pub fn documents<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Result<Vec<Document>> {
    let path = path.as_ref();
    records(reader, path)?
        .into_iter()
        .map(|r| {
            let text = field(&r, 'W')
                .ok_or_else(|| Error::parse(path, r.line, ".W", "missing"))?
                .to_string();
            let title = field(&r, 'T').unwrap_or_default().to_string();
            Ok(Document {
                docid: r.id,
                title,
                text,
            })
        })
        .collect()
}

/// Reads `cran.qry`, renumbering queries `1, 2, ...` in file order (as ir_datasets and `cranqrel` do).
pub fn queries<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Result<Vec<Query>> {
    let path = path.as_ref();
    records(reader, path)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let text = field(&r, 'W')
                .ok_or_else(|| Error::parse(path, r.line, ".W", "missing"))?
                .to_string();
            Ok(Query {
                qid: (i + 1).to_string(),
                text,
            })
        })
        .collect()
}

/// Reads `cranqrel` (`qid docid grade`), keeping Cranfield's own grades.
pub fn qrels<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Result<Vec<Qrel>> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for line in numbered_lines(reader, path) {
        let (line_no, line) = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 3 {
            return Err(Error::parse(
                path,
                line_no,
                "<columns>",
                format!("expected `qid docid grade`, found {} fields", fields.len()),
            ));
        }
        out.push(Qrel {
            qid: required(fields.first().copied(), path, line_no, "qid")?.to_string(),
            docid: required(fields.get(1).copied(), path, line_no, "docid")?.to_string(),
            grade: parse_grade(fields[2], path, line_no, "grade")?,
        });
    }
    Ok(out)
}

/// Maps a Cranfield grade to TREC order (higher = more relevant): 1→4, 2→3, 3→2, 4→1, anything else→0.
pub fn ascending_grade(cranfield_grade: i32) -> i32 {
    match cranfield_grade {
        1..=4 => 5 - cranfield_grade,
        _ => 0,
    }
}
