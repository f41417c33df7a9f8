//! genir-interp: interpretability analyses of generative retrieval (DSI) models, after *Reverse-Engineering
//! the Retrieval Process in GenIR Models* (Reusch & Belinkov, SIGIR 2025).
//!
//! - [`lens`]: logit lens over the decoder residual stream and components; the share of the residual change
//!   each component writes.
//! - [`patching`]: activation patching of clean into corrupted runs (components, heads, encoder positions,
//!   decoder positions), batched: one forward pass patches many variants, one batch row each.
//! - [`attribution`]: attribution patching (the gradient estimate of every patching cell in one backward
//!   pass) and its agreement with exact patching.
//! - [`swap`]: one model's encoder under another model's decoder, evaluated with Hits@k.
//! - [`ablation`]: zero / mean ablation of any hook points, measured by retrieval quality.
//! - [`stages`]: the decoder's priming / bridging / interaction split derived from the lens and patching
//!   tables, the minimal circuit on it, and path patching between components.
//! - [`heads`]: vocabulary projection of each attention head's output.
//! - [`figures`]: SVG figures of the tables.
//!
//! Every analysis returns a [`genir_data::Table`]; [`write_table`] writes it as Parquet and CSV.
//!
//! ```no_run
//! use std::path::Path;
//! use burn::prelude::*;
//! use genir_interp::{figures, lens, patching, write_table, Probe};
//! use genir_train::bundle::GenirModel;
//!
//! # fn main() -> genir_interp::Result<()> {
//! let device = Device::flex();
//! let gm = GenirModel::load(Path::new("models/dsi"), &device)?;
//! let wiki = genir_data::shipped::load_default()?;
//! let probes = Probe::from_query_set(wiki.split("test").expect("test split"));
//! let out = Path::new("out/interp");
//!
//! let df = lens::logit_lens(&gm, &probes, &lens::LensConfig::default())?;
//! write_table(&df, &out.join("logit_lens"))?;
//! figures::logit_lens_figure(&df, &out.join("logit_lens.svg"))?;
//!
//! let pairs = patching::make_pairs(&probes[..20], &patching::Corruption::OtherQuery { seed: 0 })?;
//! let df = patching::activation_patching(&gm, &pairs, &patching::PatchConfig::default())?;
//! write_table(&df, &out.join("patching"))?;
//! figures::patching_figure(&df, &out.join("patching.svg"))?;
//! # Ok(()) }
//! ```

pub mod ablation;
pub mod attribution;
pub mod common;
pub mod error;
pub mod figures;
pub mod heads;
pub mod lens;
pub mod patching;
pub mod png;
pub mod stages;
pub mod swap;

pub use common::{correctly_retrieved, correctly_retrieved_in, lens_logits, write_table, Probe};
pub use error::{InterpError, Result};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
