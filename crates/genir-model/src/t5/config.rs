//! The T5 configuration, read from a Hugging Face `config.json`.

use std::path::Path;

use burn::tensor::{activation, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

fn d_model() -> usize {
    512
}
fn d_kv() -> usize {
    64
}
fn d_ff() -> usize {
    2048
}
fn num_layers() -> usize {
    6
}
fn num_heads() -> usize {
    8
}
fn buckets() -> usize {
    32
}
fn max_distance() -> usize {
    128
}
fn eps() -> f64 {
    1e-6
}
fn ff_proj() -> String {
    "relu".into()
}
fn dropout() -> f64 {
    0.1
}
fn vocab() -> usize {
    32128
}
fn eos() -> usize {
    1
}

/// Hugging Face `T5Config` fields that change the computation; unknown fields are kept for saving.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct T5Config {
    /// Vocabulary size (rows of the shared embedding).
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[serde(default = "d_model")]
    pub d_model: usize,
    /// Width of each attention head.
    #[serde(default = "d_kv")]
    pub d_kv: usize,
    /// Hidden width of the feed-forward block.
    #[serde(default = "d_ff")]
    pub d_ff: usize,
    /// Encoder blocks.
    #[serde(default = "num_layers")]
    pub num_layers: usize,
    /// Decoder blocks (defaults to `num_layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads per module.
    #[serde(default = "num_heads")]
    pub num_heads: usize,
    /// Relative-position buckets.
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: usize,
    /// Largest distance with its own logarithmic bucket.
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMS-norm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f64,
    /// `relu`, `gelu`, `gated-gelu`, `gated-silu`, ...
    #[serde(default = "ff_proj")]
    pub feed_forward_proj: String,
    /// Dropout probability of Hugging Face training, kept as read; genir trains without dropout (see
    /// docs/training.md).
    #[serde(default = "dropout")]
    pub dropout_rate: f64,
    /// Whether the LM head is the shared embedding (transformers 4 default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// transformers 5: whether decoder outputs are scaled by `d_model^-0.5` before the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_decoder_outputs: Option<bool>,
    /// Padding id (also the decoder start id in T5).
    #[serde(default)]
    pub pad_token_id: usize,
    /// End-of-sequence id.
    #[serde(default = "eos")]
    pub eos_token_id: usize,
    /// First decoder input id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_start_token_id: Option<usize>,
    /// Every other field of the file, written back unchanged on save.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The feed-forward non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// Tanh-approximated GELU (`gelu_new`, used by `gated-gelu`).
    GeluNew,
    /// `x * sigmoid(x)`.
    Silu,
}

impl Activation {
    /// Applies the non-linearity: the one function every T5 and BERT MLP uses, so that code re-running part of
    /// a block (genir-mechir's patching sweeps) computes exactly what the forward pass does. The exact GELU is
    /// [`crate::fastmath::gelu`] (burn's on other devices and under autodiff).
    pub fn apply<const D: usize>(self, h: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => activation::relu(h),
            Activation::Gelu => crate::fastmath::gelu(h),
            Activation::GeluNew => activation::gelu_approximate(h),
            Activation::Silu => activation::silu(h),
        }
    }
}

impl T5Config {
    /// A small config for tests and training from scratch.
    pub fn small(
        vocab_size: usize,
        d_model: usize,
        d_ff: usize,
        layers: usize,
        heads: usize,
    ) -> Self {
        Self {
            vocab_size,
            d_model,
            d_kv: d_model.checked_div(heads).unwrap_or(0),
            d_ff,
            num_layers: layers,
            num_decoder_layers: Some(layers),
            num_heads: heads,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
            dropout_rate: 0.1,
            tie_word_embeddings: Some(true),
            scale_decoder_outputs: None,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: Some(0),
            extra: Default::default(),
        }
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let cfg: T5Config = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.check().map_err(|message| ModelError::Config {
            path: path.into(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks internal consistency; the message names the offending field.
    pub fn check(&self) -> Result<(), String> {
        if let Some(mt) = self.extra.get("model_type").and_then(|v| v.as_str()) {
            if mt == "umt5" {
                // every UMT5 block has its own relative-position table; this model shares block 0's
                return Err(
                    "model_type is `umt5`: UMT5's per-layer relative-position tables are not supported \
                     (t5 and mt5 are)"
                        .into(),
                );
            }
            if !matches!(mt, "t5" | "mt5") {
                return Err(format!("model_type is `{mt}`, expected `t5` or `mt5`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if self.relative_attention_num_buckets < 2 {
            return Err(
                "`relative_attention_num_buckets` must be at least 2 (the encoder halves it per direction)"
                    .into(),
            );
        }
        for (name, id) in [
            ("pad_token_id", Some(self.pad_token_id)),
            ("eos_token_id", Some(self.eos_token_id)),
            ("decoder_start_token_id", self.decoder_start_token_id),
        ] {
            if let Some(id) = id.filter(|&id| id >= self.vocab_size) {
                return Err(format!(
                    "`{name}` is {id}, outside the vocabulary of {} rows",
                    self.vocab_size
                ));
            }
        }
        self.activation()?;
        Ok(())
    }

    /// Decoder depth.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Width of all heads together.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Whether the LM head is the shared embedding matrix.
    pub fn tied_head(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(true)
    }

    /// Whether decoder outputs are multiplied by `d_model^-0.5` before the LM head: transformers 5's
    /// `scale_decoder_outputs` when given, else the transformers 4 rule (scale exactly when tied).
    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or_else(|| self.tied_head())
    }

    /// Whether the feed-forward block is gated (`wi_0`, `wi_1`): `is_gated_act` when the config gives it
    /// (transformers lets a stored value override the one it derives), else `feed_forward_proj`'s `gated-`.
    pub fn gated(&self) -> bool {
        self.extra
            .get("is_gated_act")
            .and_then(|v| v.as_bool())
            .unwrap_or_else(|| self.feed_forward_proj.starts_with("gated-"))
    }

    /// The feed-forward non-linearity, following transformers (`gated-gelu` means `gelu_new`).
    pub fn activation(&self) -> Result<Activation, String> {
        let act = self
            .extra
            .get("dense_act_fn")
            .and_then(|v| v.as_str())
            .map(String::from)
            .unwrap_or_else(|| {
                let name = self.feed_forward_proj.rsplit('-').next().unwrap_or("relu");
                if self.feed_forward_proj == "gated-gelu" {
                    "gelu_new".into()
                } else {
                    name.to_string()
                }
            });
        match act.as_str() {
            "relu" => Ok(Activation::Relu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluNew),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!(
                "unsupported feed-forward activation `{other}` (feed_forward_proj `{}`)",
                self.feed_forward_proj
            )),
        }
    }

    /// Floating-point operations (multiply and add counted separately) of one forward pass over `batch`
    /// sources of `src` tokens and `tgt` decoder tokens: every matrix product, attention included; norms,
    /// softmax and activations (under 1% here) are not counted.
    pub fn forward_flops(&self, batch: usize, src: usize, tgt: usize) -> u64 {
        let (b, s, t) = (batch as u64, src as u64, tgt as u64);
        let (d, inner, ff, v) = (
            self.d_model as u64,
            self.inner_dim() as u64,
            self.d_ff as u64,
            self.vocab_size as u64,
        );
        let ff_mats = if self.gated() { 3 } else { 2 };
        let proj = |n: u64| 2 * n * d * inner; // one of q/k/v/o over n tokens
        let attn = |q: u64, k: u64| 2 * 2 * b * q * k * inner; // scores and pattern @ v
        let ffn = |n: u64| ff_mats * 2 * n * d * ff;
        let enc_layer = 4 * proj(b * s) + attn(s, s) + ffn(b * s);
        let dec_layer = 4 * proj(b * t) + attn(t, t) // self-attention
            + 2 * proj(b * t) + 2 * proj(b * s) + attn(t, s) // cross-attention
            + ffn(b * t);
        self.num_layers as u64 * enc_layer
            + self.decoder_layers() as u64 * dec_layer
            + 2 * b * t * d * v
    }

    /// The first decoder input id (T5: the pad id).
    pub fn decoder_start(&self) -> usize {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> T5Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn head_semantics_of_transformers_4_and_5() {
        // Original T5: tie omitted -> tied and scaled.
        let c = parse(r#"{"model_type":"t5"}"#);
        assert!(c.tied_head() && c.scales_decoder_output());
        // T5 v1.1 as written by transformers 4: untied, no scaling.
        let c = parse(r#"{"tie_word_embeddings":false,"feed_forward_proj":"gated-gelu"}"#);
        assert!(!c.tied_head() && !c.scales_decoder_output());
        assert_eq!(c.activation().unwrap(), Activation::GeluNew);
        assert!(c.gated());
        // transformers 5 writes the scaling explicitly.
        let c = parse(r#"{"tie_word_embeddings":true,"scale_decoder_outputs":false}"#);
        assert!(c.tied_head() && !c.scales_decoder_output());
        let c = parse(r#"{"tie_word_embeddings":false,"scale_decoder_outputs":true}"#);
        assert!(!c.tied_head() && c.scales_decoder_output());
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let c = parse(r#"{"model_type":"t5","architectures":["T5ForConditionalGeneration"]}"#);
        let back: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(back["architectures"][0], "T5ForConditionalGeneration");
    }

    #[test]
    fn special_ids_outside_the_vocabulary_are_named() {
        for (field, json) in [
            ("pad_token_id", r#"{"vocab_size":100,"pad_token_id":100}"#),
            ("eos_token_id", r#"{"vocab_size":100,"eos_token_id":4000}"#),
            (
                "decoder_start_token_id",
                r#"{"vocab_size":100,"decoder_start_token_id":100}"#,
            ),
        ] {
            let e = parse(json).check().unwrap_err();
            assert!(e.contains(field) && e.contains("100 rows"), "{e}");
        }
        assert!(parse(r#"{"vocab_size":100,"eos_token_id":99}"#)
            .check()
            .is_ok());
        let e = parse(r#"{"relative_attention_num_buckets":1}"#)
            .check()
            .unwrap_err();
        assert!(e.contains("relative_attention_num_buckets"), "{e}");
        // zero heads: an error from check, not a division by zero
        assert!(T5Config::small(100, 16, 32, 1, 0)
            .check()
            .unwrap_err()
            .contains("must be positive"));
    }

    #[test]
    fn a_stored_is_gated_act_wins_and_umt5_is_refused() {
        // transformers derives is_gated_act from feed_forward_proj, then a stored value overrides it
        assert!(parse(r#"{"feed_forward_proj":"relu","is_gated_act":true}"#).gated());
        assert!(!parse(r#"{"feed_forward_proj":"gated-gelu","is_gated_act":false}"#).gated());
        assert!(parse(r#"{"feed_forward_proj":"gated-gelu"}"#).gated());
        // UMT5 gives every block its own position table: refused, not run with block 0's
        let e = parse(r#"{"model_type":"umt5"}"#).check().unwrap_err();
        assert!(e.contains("umt5") && e.contains("per-layer"), "{e}");
        assert!(parse(r#"{"model_type":"mt5"}"#).check().is_ok());
    }

    #[test]
    fn bad_activation_is_named() {
        let c = parse(r#"{"feed_forward_proj":"gated-banana"}"#);
        assert!(c.check().unwrap_err().contains("banana"));
    }
}
