//! Tab-separated files: MS MARCO style collections and queries, and BEIR qrels.
//!
//! - documents: `docid<TAB>text` (MS MARCO `collection.tsv`) or `docid<TAB>title<TAB>text`;
//! - queries: `qid<TAB>text`;
//! - qrels: BEIR's `query-id<TAB>corpus-id<TAB>score` with its header line (read by [`super::trec::qrels`],
//!   which accepts 3- and 4-column judgments).
//!
//! Fields cannot contain tabs or line breaks: writing such a value is an error, not a silent rewrite.
//!
//! MS MARCO's passage `collection.tsv` mixes proper UTF-8 with UTF-8 read as Latin-1 (`donâ\u{80}\u{99}t`);
//! [`msmarco_passages`] repairs it as ir_datasets does ([`fix_msmarco_encoding`]).

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::path::Path;

use super::{required, write_err, Records};
use crate::error::{Error, Result};
use crate::types::{Document, Qrel, Query};

/// Streams documents from TSV (2 or 3 columns).
pub fn documents<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Document> {
    Records::new(reader, path.as_ref(), parse_document)
}

/// Streams documents from MS MARCO's passage `collection.tsv`, each line repaired by [`fix_msmarco_encoding`]
/// before it is read as [`documents`] reads it.
pub fn msmarco_passages<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Document> {
    Records::new(reader, path.as_ref(), |line, path, line_no| {
        parse_document(&fix_msmarco_encoding(line), path, line_no)
    })
}

/// Repairs one line of MS MARCO's passage collection as ir_datasets' `FixEncoding` does (0.6.3,
/// `datasets/msmarco_passage.py`): for windows of 4, then 3, then 2 characters, left to right, each window that
/// holds a character in U+0080..=U+00FF is read as Latin-1 bytes decoded as UTF-8, and replaced when that gives
/// exactly one character (`cafÃ©` → `café`). The scan resumes one character after the window's start.
pub fn fix_msmarco_encoding(line: &str) -> Cow<'_, str> {
    let suspicious = |c: &char| ('\u{80}'..='\u{ff}').contains(c);
    if !line.chars().any(|c| suspicious(&c)) {
        return Cow::Borrowed(line);
    }
    let mut chars: Vec<char> = line.chars().collect();
    for width in [4, 3, 2] {
        let mut pos = 0;
        // Python's `.` does not match `\n`; a line here has no line break.
        while let Some(start) = (pos..(chars.len() + 1).saturating_sub(width))
            .find(|&i| chars[i..i + width].iter().any(suspicious))
        {
            if let Some(c) = latin1_as_utf8(&chars[start..start + width]) {
                chars.splice(start..start + width, [c]);
            }
            pos = start + 1;
        }
    }
    Cow::Owned(chars.into_iter().collect())
}

/// The one character that `window`, encoded as Latin-1, decodes to as UTF-8, if it does.
fn latin1_as_utf8(window: &[char]) -> Option<char> {
    let bytes = window
        .iter()
        .map(|&c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()?;
    let mut decoded = std::str::from_utf8(&bytes).ok()?.chars();
    match (decoded.next(), decoded.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// Streams queries from TSV (`qid<TAB>text`).
pub fn queries<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Query> {
    Records::new(reader, path.as_ref(), parse_query)
}

fn parse_document(line: &str, path: &Path, line_no: u64) -> Result<Option<Document>> {
    if line.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split('\t').collect();
    let (docid, title, text) = match fields.as_slice() {
        [id, text] => (*id, "", *text),
        [id, title, text] => (*id, *title, *text),
        _ => {
            return Err(Error::parse(
                path,
                line_no,
                "<columns>",
                format!(
                    "expected 2 (docid, text) or 3 (docid, title, text) tab-separated columns, found {}",
                    fields.len()
                ),
            ))
        }
    };
    let docid = required(Some(docid), path, line_no, "docid")?;
    Ok(Some(Document::new(docid, title, text)))
}

fn parse_query(line: &str, path: &Path, line_no: u64) -> Result<Option<Query>> {
    if line.is_empty() {
        return Ok(None);
    }
    let mut fields = line.splitn(2, '\t');
    let qid = required(fields.next(), path, line_no, "qid")?;
    let text = fields
        .next()
        .ok_or_else(|| Error::parse(path, line_no, "text", "missing (no tab after the qid)"))?;
    Ok(Some(Query::new(qid, text)))
}

fn check(value: &str, what: &str, id: &str) -> Result<()> {
    if value.contains(['\t', '\n', '\r']) {
        return Err(Error::Unwritable {
            what: format!("{what} of `{id}` as TSV"),
            message: "contains a tab or a line break".into(),
        });
    }
    Ok(())
}

/// Writes documents as `docid<TAB>title<TAB>text` (or `docid<TAB>text` without titles).
pub fn write_documents<'a, W: Write + ?Sized>(
    w: &mut W,
    docs: impl IntoIterator<Item = &'a Document>,
    with_title: bool,
) -> Result<()> {
    for d in docs {
        check(&d.docid, "docid", &d.docid)?;
        check(&d.text, "text", &d.docid)?;
        if with_title {
            check(&d.title, "title", &d.docid)?;
            writeln!(w, "{}\t{}\t{}", d.docid, d.title, d.text).map_err(write_err)?;
        } else {
            writeln!(w, "{}\t{}", d.docid, d.text).map_err(write_err)?;
        }
    }
    Ok(())
}

/// Writes queries as `qid<TAB>text`.
pub fn write_queries<'a, W: Write + ?Sized>(
    w: &mut W,
    queries: impl IntoIterator<Item = &'a Query>,
) -> Result<()> {
    for q in queries {
        check(&q.qid, "qid", &q.qid)?;
        check(&q.text, "text", &q.qid)?;
        writeln!(w, "{}\t{}", q.qid, q.text).map_err(write_err)?;
    }
    Ok(())
}

/// Writes qrels in the BEIR layout: a `query-id<TAB>corpus-id<TAB>score` header, then one judgment a line.
pub fn write_qrels<'a, W: Write + ?Sized>(
    w: &mut W,
    qrels: impl IntoIterator<Item = &'a Qrel>,
) -> Result<()> {
    writeln!(w, "query-id\tcorpus-id\tscore").map_err(write_err)?;
    for q in qrels {
        check(&q.qid, "qid", &q.qid)?;
        check(&q.docid, "docid", &q.qid)?;
        writeln!(w, "{}\t{}\t{}", q.qid, q.docid, q.grade).map_err(write_err)?;
    }
    Ok(())
}
