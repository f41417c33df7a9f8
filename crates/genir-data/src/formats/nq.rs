//! Natural Questions (raw JSONL, as released by Google) grouped into the DSI-style NQ collections.
//!
//! DSI-style NQ collections (NQ10k / NQ100k / NQ320k in Tay et al. 2022 and later GenIR work) treat each
//! Wikipedia page as one document and each NQ question as a query whose relevant document is the page it was
//! asked about. [`DsiBuilder`] reads raw NQ lines (full format with `document_tokens`, or the simplified format
//! with `document_text`), keeps the first `doc_words` non-HTML words of each page as its text, deduplicates
//! pages by title (docids `0, 1, ...` in order of first appearance), and records one qrel (grade 1) per
//! question. Smaller forms are seeded document subsets: see [`crate::split::subset_by_documents`].

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::types::{Collection, Corpus, Document, Qrel, Qrels, Queries, Query, QuerySet};

#[derive(Deserialize)]
struct Example {
    example_id: serde_json::Value,
    question_text: String,
    document_title: Option<String>,
    document_url: Option<String>,
    document_text: Option<String>,
    document_tokens: Option<Vec<Token>>,
}

#[derive(Deserialize)]
struct Token {
    token: String,
    #[serde(default)]
    html_token: bool,
}

/// Builds a DSI-style collection from raw NQ files, one split at a time.
#[derive(Debug)]
pub struct DsiBuilder {
    doc_words: usize,
    docs: Vec<Document>,
    by_title: HashMap<String, usize>,
    splits: BTreeMap<String, (Vec<Query>, Vec<Qrel>)>,
}

impl DsiBuilder {
    /// A builder keeping the first `doc_words` words of each page.
    pub fn new(doc_words: usize) -> Self {
        DsiBuilder {
            doc_words,
            docs: Vec::new(),
            by_title: HashMap::new(),
            splits: BTreeMap::new(),
        }
    }

    /// Adds every example of a raw NQ JSONL stream to `split`.
    pub fn add<R: BufRead>(
        &mut self,
        reader: R,
        path: impl AsRef<Path>,
        split: &str,
    ) -> Result<()> {
        let path = path.as_ref();
        for line in super::numbered_lines(reader, path) {
            let (line_no, line) = line?;
            if line.trim().is_empty() {
                continue;
            }
            let ex: Example = serde_json::from_str(&line).map_err(|e| {
                let field = missing_field(&e).unwrap_or("<record>");
                Error::parse(path, line_no, field, e.to_string())
            })?;
            self.add_example(ex, path, line_no, split)?;
        }
        Ok(())
    }

    fn add_example(&mut self, ex: Example, path: &Path, line_no: u64, split: &str) -> Result<()> {
        let qid = match &ex.example_id {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(Error::parse(
                    path,
                    line_no,
                    "example_id",
                    "must be a string or a number",
                ))
            }
        };
        let title = ex
            .document_title
            .filter(|t| !t.is_empty())
            .or_else(|| ex.document_url.as_deref().and_then(title_from_url))
            .ok_or_else(|| {
                Error::parse(
                    path,
                    line_no,
                    "document_title",
                    "missing (and no document_url)",
                )
            })?;
        let words: Vec<&str> = if let Some(tokens) = &ex.document_tokens {
            tokens
                .iter()
                .filter(|t| !t.html_token)
                .map(|t| t.token.as_str())
                .take(self.doc_words)
                .collect()
        } else if let Some(text) = &ex.document_text {
            text.split_whitespace()
                .filter(|t| !(t.starts_with('<') && t.ends_with('>')))
                .take(self.doc_words)
                .collect()
        } else {
            return Err(Error::parse(
                path,
                line_no,
                "document_tokens|document_text",
                "missing",
            ));
        };
        let next = self.docs.len();
        let doc_index = *self.by_title.entry(title.clone()).or_insert(next);
        if doc_index == next {
            self.docs.push(Document {
                docid: next.to_string(),
                title,
                text: words.join(" "),
            });
        }
        let (queries, qrels) = self.splits.entry(split.to_string()).or_default();
        qrels.push(Qrel::new(qid.clone(), doc_index.to_string(), 1));
        queries.push(Query::new(qid, ex.question_text));
        Ok(())
    }

    /// The collection built so far.
    pub fn finish(self, name: &str) -> Collection {
        Collection {
            name: name.to_string(),
            corpus: Corpus::new(self.docs),
            splits: self
                .splits
                .into_iter()
                .map(|(k, (q, r))| {
                    (
                        k,
                        QuerySet {
                            queries: Queries::new(q),
                            qrels: Qrels::new(r),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// The page title in a Wikipedia `index.php?title=...` URL, with `_` as spaces and `%XX` escapes decoded.
fn title_from_url(url: &str) -> Option<String> {
    let key = "title=";
    let start = url.find(key)? + key.len();
    let raw = url[start..].split('&').next().unwrap_or_default();
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() && raw.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&raw[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'_' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    let title = String::from_utf8_lossy(&out).trim().to_string();
    (!title.is_empty()).then_some(title)
}

fn missing_field(e: &serde_json::Error) -> Option<&'static str> {
    let msg = e.to_string();
    ["example_id", "question_text", "document_tokens", "token"]
        .into_iter()
        .find(|f| msg.contains(&format!("`{f}`")))
}

#[cfg(test)]
mod tests {
    use super::title_from_url;

    #[test]
    fn titles_from_wikipedia_urls() {
        let url = "https://en.wikipedia.org//w/index.php?title=Batman:_Arkham_City&amp;oldid=1";
        assert_eq!(title_from_url(url).as_deref(), Some("Batman: Arkham City"));
        let url = "https://en.wikipedia.org//w/index.php?title=Schr%C3%B6dinger%27s_cat";
        assert_eq!(title_from_url(url).as_deref(), Some("Schrödinger's cat"));
        assert_eq!(
            title_from_url("https://example.org/?title=100%").as_deref(),
            Some("100%")
        );
        assert_eq!(title_from_url("https://example.org/wiki/X"), None);
    }
}
