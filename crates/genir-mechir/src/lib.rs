//! genir-mechir: MechIR-style activation patching of neural rankers under axiomatic document perturbations.
//!
//! Pairs of (query, document, perturbed document) come from any genir collection ([`PairDataset`]); a
//! ranker ([`genir_model::bert::Dot`] bi-encoder or [`genir_model::bert::Cat`] cross-encoder, through
//! [`PatchModel`]) is run on the original and perturbed inputs, and activations of the perturbed run are
//! patched into the original run: per layer and position of the residual stream, attention output and MLP
//! output ([`sweep_blocks`]), or per attention head ([`sweep_heads`]). The numbers are MechIR 0.2.0's; the
//! sweeps batch many patched cells into one forward pass and resume at the patched layer.

pub mod align;
pub mod attention;
pub mod error;
pub mod pairs;
pub mod patch;
pub mod plot;
pub mod ranker;
pub mod table;

pub use align::Alignment;
pub use error::{MechirError, Result};
pub use pairs::{Pair, PairDataset, PairPerturbation, Sampling};
pub use patch::{
    linear_rank_metric, pairs_frame, patch_blocks, patch_heads, sweep_blocks, sweep_heads,
    BlockComponent, BlockPatching, HeadPatching, PairScores, PatchConfig,
};
pub use ranker::{EncodeConfig, EncodedPairs, PatchModel, ScoreContext};
