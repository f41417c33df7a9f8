//! genir-train: train, search and evaluate generative retrieval (DSI) models.
//!
//! - [`docid`]: atomic, naive-string and semantic (hierarchical k-means) docids, and the prefix trie that
//!   constrains decoding to them.
//! - [`examples`]: indexing (text -> docid) and retrieval (query -> docid) examples, mixed in a ratio.
//! - [`train`]: burn autodiff + AdamW with warm-up/decay and gradient clipping, seeded, with atomic
//!   checkpoints that resume bit for bit, validation Hits@k, data-parallel shards over several devices.
//! - [`optim`]: AdamW with a fused update on `flex`, bit-identical to burn's.
//! - [`search`]: batched constrained beam search returning ranked docids with scores.
//! - [`dense`]: exact dense retrieval with a bi-encoder (the dual-encoder reference).
//! - [`metrics`]: Hits@1, Hits@10, MRR@10, Recall@k with trec_eval's semantics.
//!
//! ```no_run
//! use burn::prelude::*;
//! use genir_train::{train::{Trainer, TrainConfig, LogProgress}, bundle::GenirModel, metrics::evaluate};
//!
//! # fn main() -> Result<(), genir_train::TrainError> {
//! let wiki = genir_data::shipped::load_default()?;
//! let out = std::path::Path::new("models/dsi");
//! Trainer::new(TrainConfig::default(), Device::flex()).train(&wiki, out, false, &mut LogProgress)?;
//! let model = GenirModel::load(out, &Device::flex())?;
//! let test = wiki.split("test").expect("test split");
//! let run = model.searcher()?.run(&test.queries, 10, 64, "dsi")?;
//! println!("{}", evaluate(&run, &test.qrels, None).summary());
//! # Ok(()) }
//! ```

pub mod bundle;
pub mod dense;
pub mod docid;
pub mod embed;
pub mod error;
pub mod examples;
pub mod metrics;
pub mod optim;
pub mod search;
pub mod train;
pub mod vocab;

pub use error::{Result, TrainError};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
