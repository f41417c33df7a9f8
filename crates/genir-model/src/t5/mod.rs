//! The T5 encoder-decoder (`T5ForConditionalGeneration`), its config, and its layers.

mod config;
mod layers;
mod model;

pub use config::{Activation, T5Config};
pub use layers::{
    linear, position_bias, relative_position_bucket, AttnAt, FeedForward, KvPair, RmsNorm,
    T5Attention, MASK_VALUE,
};
pub use model::{pad_batch, BlockInputs, DecoderState, Seq2SeqInput, T5Block, T5Model, T5Stack};
