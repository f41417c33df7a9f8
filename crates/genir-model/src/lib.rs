//! genir-model: a hooked T5 encoder-decoder for generative retrieval, BERT-family encoders for dense retrieval
//! ([`bert::Dot`]) and re-ranking ([`bert::Cat`], [`t5::MonoT5`]), on burn, exact against Hugging Face.
//!
//! Every component has a named [`HookPoint`](hooks::HookPoint) (`decoder.blocks.3.cross_attn.hook_z`, ...)
//! that can be cached, patched, ablated or replaced through one mechanism, [`Hooks`](hooks::Hooks).
//!
//! ```
//! use burn::prelude::*;
//! use genir_model::hooks::{HookFilter, HookPoint, Hooks, Intervention, Selection};
//! use genir_model::t5::{Seq2SeqInput, T5Config, T5Model};
//!
//! # fn main() -> Result<(), genir_model::ModelError> {
//! let device = Device::flex();
//! let model = T5Model::init(T5Config::small(100, 32, 64, 2, 4), 7, &device)?;
//! let clean = Seq2SeqInput::from_ids(&[vec![5, 6, 7, 1]], &[vec![0, 9]], 0, &device)?;
//! let corrupt = Seq2SeqInput::from_ids(&[vec![8, 6, 7, 1]], &[vec![0, 9]], 0, &device)?;
//! // Cache the clean run, then patch its decoder residual stream into the corrupted run.
//! let (_, cache) = model.run_with_cache(&clean, HookFilter::all())?;
//! let point: HookPoint = "decoder.blocks.1.hook_resid_post".parse()?;
//! let mut hooks = Hooks::none().patch_from(&cache, point, Selection::all())?;
//! let patched = model.forward(&corrupt, &mut hooks)?;
//! assert_eq!(patched.dims(), [1, 2, 100]);
//! # Ok(()) }
//! ```

pub mod bert;
pub mod device;
pub mod error;
pub mod fastmath;
pub mod hooks;
pub mod t5;
pub mod tokenizer;
pub mod weights;

pub use error::ModelError;
