//! The collections shipped in the repository's `data/` folder, embedded in the binary: loadable by name with
//! no network and no files at run time.
//!
//! - `wiki-genir`: 1,985 passages of about 100 words from 89 English Wikipedia articles (the dump excerpt
//!   shipped in the gensim 4.3.3 wheel), with inverse-cloze and title queries split train / validation / test.
//! - `wiki-genir-mini`: the first articles of `wiki-genir` up to 200 passages, with their queries, for tests.
//!
//! See `data/README.md` for the construction, licences and counts.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::formats;
use crate::types::{Collection, QuerySet};

/// The default collection of every genir command.
pub const DEFAULT: &str = "wiki-genir";

struct Embedded {
    name: &'static str,
    corpus: &'static str,
    splits: [(&'static str, &'static str, &'static str); 3],
}

macro_rules! embedded {
    ($name:literal) => {
        Embedded {
            name: $name,
            corpus: include_str!(concat!("../../../data/", $name, "/corpus.jsonl")),
            splits: [
                (
                    "train",
                    include_str!(concat!("../../../data/", $name, "/queries.train.tsv")),
                    include_str!(concat!("../../../data/", $name, "/qrels.train.trec")),
                ),
                (
                    "validation",
                    include_str!(concat!("../../../data/", $name, "/queries.validation.tsv")),
                    include_str!(concat!("../../../data/", $name, "/qrels.validation.trec")),
                ),
                (
                    "test",
                    include_str!(concat!("../../../data/", $name, "/queries.test.tsv")),
                    include_str!(concat!("../../../data/", $name, "/qrels.test.trec")),
                ),
            ],
        }
    };
}

const SHIPPED: [Embedded; 2] = [embedded!("wiki-genir"), embedded!("wiki-genir-mini")];

/// Names of the shipped collections.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|e| e.name).collect()
}

/// Loads a shipped collection by name, or else a collection folder (see
/// [`formats::load_collection_dir`]); an argument that is neither is an error listing the shipped names.
pub fn load_name_or_dir(spec: &str) -> Result<Collection> {
    if names().contains(&spec) {
        return load(spec);
    }
    let path = std::path::Path::new(spec);
    if path.is_dir() {
        return formats::load_collection_dir(path);
    }
    Err(Error::UnknownDataset {
        name: spec.to_string(),
        known: format!("{} (or a collection folder)", names().join(", ")),
    })
}

/// Loads a shipped collection by name (`wiki-genir` or `wiki-genir-mini`).
pub fn load(name: &str) -> Result<Collection> {
    let Some(e) = SHIPPED.iter().find(|e| e.name == name) else {
        return Err(Error::UnknownDataset {
            name: name.to_string(),
            known: names().join(", "),
        });
    };
    let label = |file: &str| format!("<embedded>/data/{}/{file}", e.name);
    let corpus = formats::documents_from_str(e.corpus, &label("corpus.jsonl"))?;
    let mut splits = BTreeMap::new();
    for (split, queries, qrels) in e.splits {
        let queries = formats::queries_from_str(queries, &label(&format!("queries.{split}.tsv")))?;
        let qrels = formats::qrels_from_str(qrels, &label(&format!("qrels.{split}.trec")))?;
        splits.insert(split.to_string(), QuerySet { queries, qrels });
    }
    Ok(Collection {
        name: e.name.to_string(),
        corpus,
        splits,
    })
}

/// Loads the default collection, [`DEFAULT`].
pub fn load_default() -> Result<Collection> {
    load(DEFAULT)
}
