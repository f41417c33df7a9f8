//! JSON Lines: one document or query per line, in the genir, ir_datasets or BEIR layout.
//!
//! Reading accepts all three layouts: the id is taken from the first present of `docid`, `doc_id`, `_id`,
//! `id` (documents) or `qid`, `query_id`, `_id`, `id` (queries); string or integer ids are accepted;
//! `title` is optional; a query's text is `text` (or `query`); other keys (e.g. BEIR's `metadata`) are
//! ignored. A `.json` file may instead hold one array of such objects ([`is_array`]; the paper's code,
//! technion-cs-nlp/re-gen-ir, writes its corpus and queries so, queries with their `relevant_docs`).

use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde_json::{Map, Value};

use super::{write_err, Records};
use crate::error::{Error, Result};
use crate::types::{Document, Qrel, Query};

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
    id_value(value, key, path, line_no)
}

/// An id: a non-empty string or an integer (written in decimal).
fn id_value(value: &Value, key: &str, path: &Path, line_no: u64) -> Result<String> {
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
    document_of(&map, path, line_no).map(Some)
}

fn document_of(map: &Map<String, Value>, path: &Path, line_no: u64) -> Result<Document> {
    Ok(Document {
        docid: id_field(map, &DOC_ID_KEYS, path, line_no)?,
        title: string_field(map, "title", true, path, line_no)?,
        text: string_field(map, "text", false, path, line_no)?,
    })
}

fn parse_query(line: &str, path: &Path, line_no: u64) -> Result<Option<Query>> {
    let Some(map) = object(line, path, line_no)? else {
        return Ok(None);
    };
    query_of(&map, path, line_no).map(Some)
}

/// A query's text is `text`, or `query` where there is no `text` (the paper's code, re-gen-ir).
fn query_of(map: &Map<String, Value>, path: &Path, line_no: u64) -> Result<Query> {
    let key = if map.contains_key("text") || !map.contains_key("query") {
        "text"
    } else {
        "query"
    };
    Ok(Query {
        qid: id_field(map, &QUERY_ID_KEYS, path, line_no)?,
        text: string_field(map, key, false, path, line_no)?,
    })
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// Whether a `.json` file holds one JSON array (its first non-blank character, after a byte-order mark, is `[`)
/// rather than one object per line.
pub fn is_array(path: &Path) -> Result<bool> {
    let mut bom = 0;
    for (i, b) in super::open(path)?.bytes().enumerate() {
        let b = b.map_err(|e| Error::io(path, e))?;
        if i == bom && BOM.get(i) == Some(&b) {
            bom += 1;
            continue;
        }
        if !b.is_ascii_whitespace() {
            return Ok(b == b'[');
        }
    }
    Ok(false)
}

/// The objects of a file that holds one JSON array; errors number them from 1, like lines.
fn array_objects(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let mut bytes = Vec::new();
    super::open(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
            + 1;
        Error::read_line(
            path,
            line,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let items = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        Ok(_) => return Err(Error::parse(path, 1, "<file>", "not a JSON array")),
        Err(e) => {
            return Err(Error::parse(
                path,
                e.line() as u64,
                "<file>",
                format!("invalid JSON: {e}"),
            ))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(map) => Ok(map),
            _ => Err(Error::parse(
                path,
                i as u64 + 1,
                "<record>",
                "not a JSON object",
            )),
        })
        .collect()
}

/// Documents of a file holding one JSON array of objects (the fields of the JSONL layouts; e.g. the paper's
/// code, technion-cs-nlp/re-gen-ir, keeps its corpus as `[{"id", "text"}, ...]`). Errors name the file and
/// the record (1-based).
pub fn array_documents(path: &Path) -> Result<Vec<Document>> {
    array_objects(path)?
        .iter()
        .enumerate()
        .map(|(i, m)| document_of(m, path, i as u64 + 1))
        .collect()
}

/// Queries of a file holding one JSON array of objects, and the judgments of those that list their relevant
/// documents inline (re-gen-ir: `{"id", "query", "relevant_docs": [docid, ...]}`; grade 1 each). The
/// judgments are `None` when no query has a `relevant_docs` field.
pub fn array_queries(path: &Path) -> Result<(Vec<Query>, Option<Vec<Qrel>>)> {
    let mut queries = Vec::new();
    let mut qrels: Option<Vec<Qrel>> = None;
    for (i, map) in array_objects(path)?.iter().enumerate() {
        let n = i as u64 + 1;
        let q = query_of(map, path, n)?;
        match map.get("relevant_docs") {
            None | Some(Value::Null) => {}
            Some(Value::Array(docs)) => {
                let judged = qrels.get_or_insert_with(Vec::new);
                for d in docs {
                    judged.push(Qrel::new(
                        q.qid.clone(),
                        id_value(d, "relevant_docs", path, n)?,
                        1,
                    ));
                }
            }
            Some(_) => {
                return Err(Error::parse(
                    path,
                    n,
                    "relevant_docs",
                    "must be an array of docids",
                ))
            }
        }
        queries.push(q);
    }
    Ok((queries, qrels))
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

/// An id as the paper's JSON files (re-gen-ir) write it: a number when the id is a canonical integer (`12`,
/// `-5462359833619124697`), else a string; [`array_documents`] reads either back as the same string.
fn json_id(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(n) if n.to_string() == id => Value::from(n),
        _ => Value::String(id.into()),
    }
}

/// Writes documents as one JSON array of `{"id", "title", "text"}` objects: re-gen-ir's document file
/// (`preprocess.py -d`), which reads `id` and `text`.
pub fn write_array_documents<'a, W: Write + ?Sized>(
    w: &mut W,
    docs: impl IntoIterator<Item = &'a Document>,
) -> Result<()> {
    let items: Vec<Value> = docs
        .into_iter()
        .map(|d| {
            let mut map = Map::new();
            map.insert("id".into(), json_id(&d.docid));
            map.insert("title".into(), Value::String(d.title.clone()));
            map.insert("text".into(), Value::String(d.text.clone()));
            Value::Object(map)
        })
        .collect();
    write_array(w, items)
}

/// Writes queries as one JSON array of `{"id", "query", "relevant_docs"}` objects: re-gen-ir's query files
/// (`-t`, `-v`, `--test`). A query's relevant documents are its judgments of grade > 0, highest grade first
/// (the paper's code reads their order as rank), ties in judgment order.
pub fn write_array_queries<'a, W: Write + ?Sized>(
    w: &mut W,
    queries: impl IntoIterator<Item = &'a Query>,
    qrels: &crate::types::Qrels,
) -> Result<()> {
    let items: Vec<Value> = queries
        .into_iter()
        .map(|q| {
            let mut judged: Vec<&Qrel> = qrels.for_query(&q.qid).filter(|r| r.grade > 0).collect();
            judged.sort_by_key(|r| std::cmp::Reverse(r.grade));
            let mut map = Map::new();
            map.insert("id".into(), Value::String(q.qid.clone()));
            map.insert("query".into(), Value::String(q.text.clone()));
            map.insert(
                "relevant_docs".into(),
                Value::Array(judged.iter().map(|r| json_id(&r.docid)).collect()),
            );
            Value::Object(map)
        })
        .collect();
    write_array(w, items)
}

fn write_array<W: Write + ?Sized>(w: &mut W, items: Vec<Value>) -> Result<()> {
    serde_json::to_writer(&mut *w, &Value::Array(items)).map_err(|e| Error::Unwritable {
        what: "JSON array".into(),
        message: e.to_string(),
    })?;
    w.write_all(b"\n").map_err(write_err)
}

fn write_line<W: Write + ?Sized>(w: &mut W, value: &Value) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| Error::Unwritable {
        what: "JSON line".into(),
        message: e.to_string(),
    })?;
    w.write_all(line.as_bytes()).map_err(write_err)?;
    w.write_all(b"\n").map_err(write_err)
}
