//! The T5 encoder-decoder (`T5ForConditionalGeneration`), its config, its layers, and the MonoT5 re-ranker.

mod config;
mod layers;
mod model;
mod monot5;

pub use config::{Activation, T5Config};
pub use layers::{
    linear, position_bias, relative_position_bucket, AttnAt, FeedForward, KvPair, KvSource,
    RmsNorm, RowGroups, T5Attention, MASK_VALUE,
};
pub use model::{
    pad_batch, BlockInputs, DecoderState, Removed, Seq2SeqInput, T5Block, T5Model, T5Stack,
    REMOVED_KEY, REMOVED_MEANS_KEY,
};
pub use monot5::MonoT5;
