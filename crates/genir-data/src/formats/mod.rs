//! Readers and writers for the file formats of IR collections.
//!
//! | format | documents | queries | qrels | runs |
//! | --- | --- | --- | --- | --- |
//! | JSONL ([`jsonl`]) | genir / ir_datasets / BEIR layouts; or one JSON array (the paper's code, re-gen-ir) | idem | a JSON array's inline `relevant_docs` | – |
//! | TSV ([`tsv`]) | `docid<TAB>text` or `docid<TAB>title<TAB>text` (MS MARCO) | `qid<TAB>text` | BEIR `query-id corpus-id score` | – |
//! | TREC ([`trec`]) | – | – | `qid 0 docid grade` | `qid Q0 docid rank score tag` |
//! | Parquet ([`parquet`], feature `parquet`) | columns `docid, title, text` | `qid, text` | `qid, docid, grade` | `qid, docid, rank, score, tag` |
//! | Cranfield ([`cranfield`]) | `cran.all.1400` | `cran.qry` | `cranqrel` | – |
//! | Natural Questions ([`nq`]) | raw NQ JSONL, grouped into DSI-style pages | idem | idem | – |
//!
//! Line readers are iterators of `Result`, so a corpus larger than memory can be streamed. Files ending in
//! `.gz` are decompressed on the fly. Every parse error names the file, the 1-based line and the field.

pub mod cranfield;
pub mod jsonl;
pub mod nq;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod trec;
pub mod tsv;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::types::{Corpus, Document, Qrels, Queries, Run};

/// A file format, as detected from a file name by [`Format::from_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Tab-separated values.
    Tsv,
    /// TREC qrels or run files (whitespace-separated).
    Trec,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Detects the format from the extension (after removing a trailing `.gz`): `.jsonl`/`.json`, `.tsv`,
    /// `.trec`/`.qrels`/`.run`/`.txt`, `.parquet`.
    pub fn from_path(path: &Path) -> Result<Format> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit('.').next().unwrap_or("");
        match ext {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "tsv" => Ok(Format::Tsv),
            "trec" | "qrels" | "run" | "txt" => Ok(Format::Trec),
            "parquet" => Ok(Format::Parquet),
            _ => Err(Error::InvalidArgument(format!(
                "{}: cannot tell the format from the file name (use .jsonl, .tsv, .trec, .qrels, .run, .txt or .parquet)",
                path.display()
            ))),
        }
    }
}

/// Whether the file name ends in `.gz` (in any case, as [`Format::from_path`] reads it).
fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Opens a file for buffered reading, decompressing it when its name ends in `.gz` (in any case).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if is_gz(path) {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// Parses one line (without its line ending) into a record, or `None` to skip it (blank lines, headers).
pub type LineParser<T> = fn(line: &str, path: &Path, line_no: u64) -> Result<Option<T>>;

/// A streaming iterator of records parsed line by line from a reader.
///
/// It stops after the first error, which names the file and line.
pub struct Records<R, T> {
    reader: R,
    path: PathBuf,
    line_no: u64,
    buf: String,
    parse: LineParser<T>,
    failed: bool,
    _item: PhantomData<fn() -> T>,
}

impl<R: BufRead, T> Records<R, T> {
    /// Parses `reader` with `parse`; `path` labels errors (a file name, or e.g. `<memory>`).
    pub fn new(reader: R, path: impl Into<PathBuf>, parse: LineParser<T>) -> Self {
        Records {
            reader,
            path: path.into(),
            line_no: 0,
            buf: String::new(),
            parse,
            failed: false,
            _item: PhantomData,
        }
    }
}

impl<R: BufRead, T> Iterator for Records<R, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Error::read_line(&self.path, self.line_no + 1, e)));
                }
            }
            self.line_no += 1;
            let line = self.buf.trim_end_matches(['\n', '\r']);
            let line = if self.line_no == 1 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            match (self.parse)(line, &self.path, self.line_no) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => continue,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A boxed streaming iterator of documents.
pub type DocumentStream = Box<dyn Iterator<Item = Result<Document>> + Send>;

/// Streams documents from a JSONL or TSV file (optionally gzipped), without loading it whole.
pub fn stream_documents(path: &Path) -> Result<DocumentStream> {
    let reader = open(path)?;
    match Format::from_path(path)? {
        Format::Jsonl => Ok(Box::new(jsonl::documents(reader, path))),
        Format::Tsv => Ok(Box::new(tsv::documents(reader, path))),
        other => Err(Error::InvalidArgument(format!(
            "{}: documents cannot be streamed from {other:?}",
            path.display()
        ))),
    }
}

/// Reads a collection from a folder laid out like the shipped ones: one `corpus.*` file and, per split,
/// `queries.<split>.*` and `qrels.<split>.*` (any readable format, e.g. `queries.test.tsv`,
/// `qrels.test.trec`). A split with queries but no qrels (or the reverse) is an error naming the file, except
/// that queries kept as a JSON array may judge themselves (`relevant_docs`, the paper's code's layout: e.g.
/// `corpus.json` and `queries.train.json` from its `documents.json` and `train_queries.json`).
pub fn load_collection_dir(dir: &Path) -> Result<crate::Collection> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut corpus = None;
    let mut queries = std::collections::BTreeMap::new();
    let mut qrels = std::collections::BTreeMap::new();
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().to_string()) else {
            continue;
        };
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["corpus", ..] if corpus.is_none() => corpus = Some(path.clone()),
            ["queries", split, _, ..] => {
                queries.insert(split.to_string(), path.clone());
            }
            ["qrels", split, _, ..] => {
                qrels.insert(split.to_string(), path.clone());
            }
            _ => {}
        }
    }
    let corpus_path = corpus.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{}: no corpus.* file (expected corpus.jsonl, corpus.tsv or corpus.parquet)",
            dir.display()
        ))
    })?;
    let mut splits = std::collections::BTreeMap::new();
    for (split, qpath) in &queries {
        let set = match qrels.get(split) {
            Some(rpath) => crate::QuerySet {
                queries: load_queries(qpath)?,
                qrels: load_qrels(rpath)?,
            },
            // a JSON array of queries may judge them inline (`relevant_docs`)
            None => match inline_judged(qpath)? {
                Some((queries, judged)) => crate::QuerySet {
                    queries: Queries::new(queries),
                    qrels: Qrels::new(judged),
                },
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: no qrels.{split}.* beside it (and its queries list no relevant_docs)",
                        qpath.display()
                    )))
                }
            },
        };
        splits.insert(split.clone(), set);
    }
    if let Some((split, path)) = qrels.iter().find(|(s, _)| !queries.contains_key(*s)) {
        return Err(Error::InvalidArgument(format!(
            "{}: no queries.{split}.* beside it",
            path.display()
        )));
    }
    Ok(crate::Collection {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        corpus: load_corpus(&corpus_path)?,
        splits,
    })
}

/// Queries of a JSON-array file whose queries list their relevant documents, with those judgments.
fn inline_judged(path: &Path) -> Result<Option<(Vec<crate::Query>, Vec<crate::Qrel>)>> {
    if Format::from_path(path)? != Format::Jsonl || !jsonl::is_array(path)? {
        return Ok(None);
    }
    let (queries, judged) = jsonl::array_queries(path)?;
    Ok(judged.map(|j| (queries, j)))
}

/// Reads a corpus from a JSONL (or JSON array), TSV or Parquet file, chosen by the file name.
pub fn load_corpus(path: &Path) -> Result<Corpus> {
    match Format::from_path(path)? {
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::read_corpus(path),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        Format::Jsonl if jsonl::is_array(path)? => Ok(Corpus::new(jsonl::array_documents(path)?)),
        _ => stream_documents(path)?.collect(),
    }
}

/// Reads queries from a JSONL (or JSON array), TSV or Parquet file, chosen by the file name.
pub fn load_queries(path: &Path) -> Result<Queries> {
    match Format::from_path(path)? {
        Format::Jsonl if jsonl::is_array(path)? => Ok(Queries::new(jsonl::array_queries(path)?.0)),
        Format::Jsonl => jsonl::queries(open(path)?, path).collect(),
        Format::Tsv => tsv::queries(open(path)?, path).collect(),
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::read_queries(path),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        other => unsupported(path, "queries", other),
    }
}

/// Reads qrels from a TREC (`qid 0 docid grade`), BEIR TSV (`query-id corpus-id score`, header optional) or
/// Parquet file, chosen by the file name.
pub fn load_qrels(path: &Path) -> Result<Qrels> {
    match Format::from_path(path)? {
        Format::Trec | Format::Tsv => trec::qrels(open(path)?, path).collect(),
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::read_qrels(path),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        other => unsupported(path, "qrels", other),
    }
}

/// Reads a run from a TREC run file or a Parquet file.
pub fn load_run(path: &Path) -> Result<Run> {
    match Format::from_path(path)? {
        Format::Trec | Format::Tsv => Ok(Run::new(
            trec::run(open(path)?, path).collect::<Result<_>>()?,
        )),
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::read_run(path),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        other => unsupported(path, "runs", other),
    }
}

/// Writes a corpus as JSONL (genir layout), TSV (`docid, title, text`) or Parquet, chosen by the file name.
pub fn save_corpus(path: &Path, corpus: &Corpus) -> Result<()> {
    match Format::from_path(path)? {
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::write_corpus(path, corpus),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        Format::Jsonl => finish(path, |w| {
            jsonl::write_documents(w, corpus, jsonl::Layout::Genir)
        }),
        Format::Tsv => finish(path, |w| tsv::write_documents(w, corpus, true)),
        other => unsupported(path, "documents", other),
    }
}

/// Writes a collection in the layout of the paper's code (technion-cs-nlp/re-gen-ir): `corpus.json`, one JSON
/// array of documents, and `queries.<split>.json` per split, JSON arrays of queries with their relevant
/// documents inline. These are the files its `preprocess.py` takes (`-d`, `-t`, `-v`, `--test`), and
/// [`load_collection_dir`] reads the folder back as the same collection (judgments of grade > 0, as grade 1).
/// Returns the files written.
pub fn save_json_array_collection(dir: &Path, c: &crate::Collection) -> Result<Vec<PathBuf>> {
    let mut written = vec![dir.join("corpus.json")];
    finish(&written[0], |w| {
        jsonl::write_array_documents(w, c.corpus.iter())
    })?;
    for (name, set) in &c.splits {
        let path = dir.join(format!("queries.{name}.json"));
        finish(&path, |w| {
            jsonl::write_array_queries(w, set.queries.iter(), &set.qrels)
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes queries as JSONL (genir layout), TSV or Parquet, chosen by the file name.
pub fn save_queries(path: &Path, queries: &Queries) -> Result<()> {
    match Format::from_path(path)? {
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::write_queries(path, queries),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        Format::Jsonl => finish(path, |w| {
            jsonl::write_queries(w, queries, jsonl::Layout::Genir)
        }),
        Format::Tsv => finish(path, |w| tsv::write_queries(w, queries)),
        other => unsupported(path, "queries", other),
    }
}

/// Writes qrels as TREC (`.trec`, `.qrels`, `.txt`), BEIR TSV with header (`.tsv`) or Parquet.
pub fn save_qrels(path: &Path, qrels: &Qrels) -> Result<()> {
    match Format::from_path(path)? {
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::write_qrels(path, qrels),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        Format::Trec => finish(path, |w| trec::write_qrels(w, qrels)),
        Format::Tsv => finish(path, |w| tsv::write_qrels(w, qrels)),
        other => unsupported(path, "qrels", other),
    }
}

/// Writes a run as a TREC run file or Parquet.
pub fn save_run(path: &Path, run: &Run) -> Result<()> {
    match Format::from_path(path)? {
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::write_run(path, run),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(parquet_off(path)),
        Format::Trec => finish(path, |w| trec::write_run(w, run)),
        other => unsupported(path, "runs", other),
    }
}

#[cfg(not(feature = "parquet"))]
fn parquet_off(path: &Path) -> Error {
    Error::InvalidArgument(format!(
        "{}: Parquet support is off (enable the `parquet` feature of genir-data)",
        path.display()
    ))
}

fn unsupported<T>(path: &Path, what: &str, format: Format) -> Result<T> {
    Err(Error::InvalidArgument(format!(
        "{}: {what} cannot be stored as {format:?}",
        path.display()
    )))
}

/// Writes through `body` into a new file, atomically (a temporary file renamed over `path`), mapping I/O
/// errors to the path. A `.gz` name is compressed.
fn finish(path: &Path, body: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    genir_io::write_atomic_with(path, |out| {
        if is_gz(path) {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            body(&mut gz).map_err(|e| relabel(e, path))?;
            // flate2's finish writes the trailer without flushing; flush here so an error names `path`
            gz.finish()
                .and_then(|w| w.flush())
                .map_err(|e| Error::io(path, e))
        } else {
            body(out).map_err(|e| relabel(e, path))?;
            out.flush().map_err(|e| Error::io(path, e))
        }
    })
}

fn relabel(e: Error, path: &Path) -> Error {
    match e {
        Error::Io { source, .. } => Error::io(path, source),
        other => other,
    }
}

pub(crate) fn write_err(e: std::io::Error) -> Error {
    Error::io("<output>", e)
}

/// The lines of `reader`, numbered from 1, without line endings, a leading byte-order mark removed; a read
/// error (I/O, or bytes that are not UTF-8) names the file and the line.
pub(crate) fn numbered_lines<'a, R: BufRead + 'a>(
    reader: R,
    path: &'a Path,
) -> impl Iterator<Item = Result<(u64, String)>> + 'a {
    reader.lines().enumerate().map(move |(i, line)| {
        let line_no = i as u64 + 1;
        let mut line = line.map_err(|e| Error::read_line(path, line_no, e))?;
        if line_no == 1 && line.starts_with('\u{feff}') {
            line.drain(..'\u{feff}'.len_utf8());
        }
        Ok((line_no, line))
    })
}

/// A required, non-empty field of a delimited line.
pub(crate) fn required<'a>(
    value: Option<&'a str>,
    path: &Path,
    line: u64,
    field: &str,
) -> Result<&'a str> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(Error::parse(path, line, field, "empty")),
        None => Err(Error::parse(path, line, field, "missing")),
    }
}

/// Parses a relevance grade: an integer, or a float with no fractional part (`1.0`).
pub(crate) fn parse_grade(value: &str, path: &Path, line: u64, field: &str) -> Result<i32> {
    if let Ok(g) = value.parse::<i32>() {
        return Ok(g);
    }
    match value.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX) => Ok(f as i32),
        _ => Err(Error::parse(
            path,
            line,
            field,
            format!("`{value}` is not an integer grade"),
        )),
    }
}

/// Queries and documents as read from memory, e.g. the embedded shipped collection.
pub(crate) fn queries_from_str(text: &str, label: &str) -> Result<Queries> {
    tsv::queries(text.as_bytes(), label).collect()
}

pub(crate) fn documents_from_str(text: &str, label: &str) -> Result<Corpus> {
    jsonl::documents(text.as_bytes(), label).collect()
}

pub(crate) fn qrels_from_str(text: &str, label: &str) -> Result<Qrels> {
    trec::qrels(text.as_bytes(), label).collect()
}
