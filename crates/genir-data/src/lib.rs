//! genir-data: corpora, queries, relevance judgments and runs for generative IR, with readers and writers for
//! the usual formats, seeded splits, an ir_datasets-style registry of remote datasets with a verified download
//! cache, the shipped default collection, and document perturbations.
//!
//! ```
//! use genir_data::{shipped, split, validate};
//!
//! // The shipped default collection: embedded, no network.
//! let wiki = shipped::load("wiki-genir-mini")?;
//! let test = wiki.split("test").expect("shipped collections have a test split");
//! assert!(validate::validate(&wiki.corpus, &test.queries, &test.qrels).is_clean());
//!
//! // A "corpus minus these documents" view for missing-document experiments.
//! let first = wiki.corpus.as_slice()[0].docid.clone();
//! let view = split::CorpusView::without(&wiki.corpus, [first.clone()]);
//! assert!(!view.contains(&first));
//! assert_eq!(view.len(), wiki.corpus.len() - 1);
//! # Ok::<(), genir_data::Error>(())
//! ```

pub mod archive;
pub mod bm25;
pub mod download;
pub mod error;
pub mod formats;
pub mod perturb;
pub mod registry;
pub mod shipped;
pub mod split;
pub mod table;
pub mod types;
pub mod validate;

pub use error::{Error, Result};
pub use table::{Column, Table, Values};
pub use types::{
    Collection, Corpus, Document, Qrel, Qrels, Queries, Query, QuerySet, Run, RunEntry,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
