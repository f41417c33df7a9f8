//! Tab-separated files: MS MARCO style collections and queries, and BEIR qrels.
//!
//! - documents: `docid<TAB>text` (MS MARCO `collection.tsv`) or `docid<TAB>title<TAB>text`;
//! - queries: `qid<TAB>text`;
//! - qrels: BEIR's `query-id<TAB>corpus-id<TAB>score` with its header line (read by [`super::trec::qrels`],
//!   which accepts 3- and 4-column judgments).
//!
//! Fields cannot contain tabs or line breaks: writing such a value is an error, not a silent rewrite.

use std::io::{BufRead, Write};
use std::path::Path;

use super::{required, write_err, Records};
use crate::error::{Error, Result};
use crate::types::{Document, Qrel, Query};

/// Streams documents from TSV (2 or 3 columns).
pub fn documents<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Document> {
    Records::new(reader, path.as_ref(), parse_document)
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
