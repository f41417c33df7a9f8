//! BERT-family encoders (BERT, MiniLM, DistilBERT, ELECTRA) with the same hook points as genir's T5 encoder,
//! and the two retrieval wrappers built on them: [`Dot`] (bi-encoder) and [`Cat`] (cross-encoder).
//!
//! Hook points are `encoder.hook_embed` and `encoder.blocks.{l}.…` (see [`HookPoint::encoder_only`]). The blocks
//! are post-LN, so the residual-stream points sit after the norms: `hook_resid_mid` is
//! `LN(resid_pre + attn_out)` (what the MLP reads) and `hook_resid_post` is `LN(resid_mid + mlp_out)` (what the
//! next block reads; the last one is the model output). There is no `encoder.ln_final`.
//!
//! [`HookPoint::encoder_only`]: crate::hooks::HookPoint::encoder_only

mod cat;
mod config;
mod dot;
mod layers;
mod model;

pub use cat::{Cat, ClassifierHead, HeadActivation};
pub use config::{BertConfig, BertFamily};
pub use dot::{l2_normalize, Dot, Pooling, Similarity};
pub use layers::{BertAttention, BertBlock, BertEmbeddings, LayerNorm, Linear};
pub use model::{attention_bias, BertEncoder, BertInput};
