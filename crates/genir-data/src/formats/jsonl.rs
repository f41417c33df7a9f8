//! JSON Lines: one document or query per line, in the genir, ir_datasets or BEIR layout.
//!
//! Reading accepts all three layouts: the id is taken from the first present of `docid`, `doc_id`, `_id`,
//! `id` (documents) or `qid`, `query_id`, `_id`, `id` (queries); string or integer ids are accepted;
//! `title` is optional; other keys (e.g. BEIR's `metadata`) are ignored.

use std::io::{BufRead, Write};
use std::path::Path;

use serde_json::{Map, Value};

use super::{write_err, Records};
use crate::error::{Error, Result};
use crate::types::{Document, Query};

/// Key names used when writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `{"docid", "title", "text"}` and `{"qid", "text"}`.
    Genir,
    /// ir_datasets: `{"doc_id", "title", "text"}` and `{"query_id", "text"}`.
    IrDatasets,
    /// BEIR `corpus.jsonl` / `queries.jsonl`: `{"_id", "title", "text"}` and `{"_id", "text"}`.
    Beir,
}

impl Layout {
    fn doc_key(self) -> &'static str {
        match self {
            Layout::Genir => "docid",
            Layout::IrDatasets => "doc_id",
            Layout::Beir => "_id",
        }
    }

    fn query_key(self) -> &'static str {
        match self {
            Layout::Genir => "qid",
            Layout::IrDatasets => "query_id",
            Layout::Beir => "_id",
        }
    }
}

const DOC_ID_KEYS: [&str; 4] = ["docid", "doc_id", "_id", "id"];
const QUERY_ID_KEYS: [&str; 4] = ["qid", "query_id", "_id", "id"];

/// Streams documents from JSONL.
pub fn documents<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Document> {
    Records::new(reader, path.as_ref(), parse_document)
}

/// Streams queries from JSONL.
pub fn queries<R: BufRead>(reader: R, path: impl AsRef<Path>) -> Records<R, Query> {
    Records::new(reader, path.as_ref(), parse_query)
}

fn object(line: &str, path: &Path, line_no: u64) -> Result<Option<Map<String, Value>>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(Error::parse(path, line_no, "<record>", "not a JSON object")),
        Err(e) => Err(Error::parse(
            path,
            line_no,
            "<record>",
            format!("invalid JSON: {e}"),
        )),
    }
}

fn id_field(map: &Map<String, Value>, keys: &[&str], path: &Path, line_no: u64) -> Result<String> {
    let Some((key, value)) = keys.iter().find_map(|k| map.get(*k).map(|v| (*k, v))) else {
        return Err(Error::parse(path, line_no, keys.join("|"), "missing"));
    };
    let id = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => {
            return Err(Error::parse(
                path,
                line_no,
                key,
                "must be a string or an integer",
            ))
        }
    };
    if id.is_empty() {
        return Err(Error::parse(path, line_no, key, "empty"));
    }
    Ok(id)
}

fn string_field(
    map: &Map<String, Value>,
    key: &str,
    optional: bool,
    path: &Path,
    line_no: u64,
) -> Result<String> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None if optional => Ok(String::new()),
        None => Err(Error::parse(path, line_no, key, "missing")),
        Some(_) => Err(Error::parse(path, line_no, key, "must be a string")),
    }
}

fn parse_document(line: &str, path: &Path, line_no: u64) -> Result<Option<Document>> {
    let Some(map) = object(line, path, line_no)? else {
        return Ok(None);
    };
    Ok(Some(Document {
        docid: id_field(&map, &DOC_ID_KEYS, path, line_no)?,
        title: string_field(&map, "title", true, path, line_no)?,
        text: string_field(&map, "text", false, path, line_no)?,
    }))
}

fn parse_query(line: &str, path: &Path, line_no: u64) -> Result<Option<Query>> {
    let Some(map) = object(line, path, line_no)? else {
        return Ok(None);
    };
    Ok(Some(Query {
        qid: id_field(&map, &QUERY_ID_KEYS, path, line_no)?,
        text: string_field(&map, "text", false, path, line_no)?,
    }))
}

/// Writes documents, one JSON object per line.
pub fn write_documents<'a, W: Write + ?Sized>(
    w: &mut W,
    docs: impl IntoIterator<Item = &'a Document>,
    layout: Layout,
) -> Result<()> {
    for d in docs {
        let mut map = Map::new();
        map.insert(layout.doc_key().into(), Value::String(d.docid.clone()));
        map.insert("title".into(), Value::String(d.title.clone()));
        map.insert("text".into(), Value::String(d.text.clone()));
        write_line(w, &Value::Object(map))?;
    }
    Ok(())
}

/// Writes queries, one JSON object per line.
pub fn write_queries<'a, W: Write + ?Sized>(
    w: &mut W,
    queries: impl IntoIterator<Item = &'a Query>,
    layout: Layout,
) -> Result<()> {
    for q in queries {
        let mut map = Map::new();
        map.insert(layout.query_key().into(), Value::String(q.qid.clone()));
        map.insert("text".into(), Value::String(q.text.clone()));
        write_line(w, &Value::Object(map))?;
    }
    Ok(())
}

fn write_line<W: Write + ?Sized>(w: &mut W, value: &Value) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| Error::Unwritable {
        what: "JSON line".into(),
        message: e.to_string(),
    })?;
    w.write_all(line.as_bytes()).map_err(write_err)?;
    w.write_all(b"\n").map_err(write_err)
}
