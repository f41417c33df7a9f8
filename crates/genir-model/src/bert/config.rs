//! The BERT-family configuration, read from a Hugging Face `config.json` (BERT, MiniLM, DistilBERT, ELECTRA).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::t5::Activation;

fn model_type() -> String {
    "bert".into()
}
fn vocab() -> usize {
    30522
}
fn hidden() -> usize {
    768
}
fn layers() -> usize {
    12
}
fn heads() -> usize {
    12
}
fn intermediate() -> usize {
    3072
}
fn act() -> String {
    "gelu".into()
}
fn positions() -> usize {
    512
}
fn type_vocab() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}

/// Which member of the BERT family a config describes: it decides the weight names and the heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BertFamily {
    /// BERT and BERT-layout models (MiniLM, `BertModel`, `BertForSequenceClassification`).
    Bert,
    /// DistilBERT: no token types, `transformer.layer.N.attention.q_lin`, ...
    DistilBert,
    /// ELECTRA (discriminator): BERT blocks, embeddings of `embedding_size` projected to `hidden_size`.
    Electra,
}

/// Hugging Face BERT-family config fields that change the computation; unknown fields are kept.
///
/// DistilBERT's own names (`dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation`) are translated to these
/// when the config is read with [`BertConfig::from_json`] or [`BertConfig::from_file`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    /// `bert`, `distilbert` or `electra`.
    #[serde(default = "model_type")]
    pub model_type: String,
    /// Rows of the word embedding.
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[serde(default = "hidden")]
    pub hidden_size: usize,
    /// Number of blocks.
    #[serde(default = "layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    #[serde(default = "heads")]
    pub num_attention_heads: usize,
    /// Hidden width of the feed-forward block.
    #[serde(default = "intermediate")]
    pub intermediate_size: usize,
    /// `gelu` (exact, erf), `gelu_new` (tanh approximation), `relu`, ...
    #[serde(default = "act")]
    pub hidden_act: String,
    /// Rows of the (absolute) position embedding: the longest input.
    #[serde(default = "positions")]
    pub max_position_embeddings: usize,
    /// Rows of the token type (segment) embedding; 0 for DistilBERT, which has none.
    #[serde(default = "type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: usize,
    /// ELECTRA: width of the embeddings before `embeddings_project` (defaults to `hidden_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// Only `absolute` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    /// Every other field of the file.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// DistilBERT's field names and the BERT names they mean.
const DISTILBERT_NAMES: [(&str, &str); 5] = [
    ("dim", "hidden_size"),
    ("n_layers", "num_hidden_layers"),
    ("n_heads", "num_attention_heads"),
    ("hidden_dim", "intermediate_size"),
    ("activation", "hidden_act"),
];

impl BertConfig {
    /// A small config for tests.
    pub fn small(vocab_size: usize, hidden: usize, layers: usize, heads: usize) -> Self {
        Self {
            model_type: "bert".into(),
            vocab_size,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            embedding_size: None,
            position_embedding_type: None,
            extra: Default::default(),
        }
    }

    /// Parses a `config.json` value, translating DistilBERT's field names, and checks it.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        let mut obj = match value {
            serde_json::Value::Object(o) => o,
            other => return Err(format!("expected a JSON object, found {other}")),
        };
        if obj.get("model_type").and_then(|v| v.as_str()) == Some("distilbert") {
            for (from, to) in DISTILBERT_NAMES {
                if let Some(v) = obj.remove(from) {
                    obj.entry(to.to_string()).or_insert(v);
                }
            }
            // DistilBERT defaults that differ from BERT's; no token types; its norms use 1e-12 always.
            obj.entry("num_hidden_layers").or_insert(6.into());
            obj.insert("type_vocab_size".into(), 0.into());
            obj.insert("layer_norm_eps".into(), serde_json::json!(1e-12));
        }
        let cfg: BertConfig =
            serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let bad = |message: String| ModelError::Config {
            path: path.into(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Self::from_json(value).map_err(bad)
    }

    /// The family, from `model_type`.
    pub fn family(&self) -> Result<BertFamily, String> {
        match self.model_type.as_str() {
            "bert" => Ok(BertFamily::Bert),
            "distilbert" => Ok(BertFamily::DistilBert),
            "electra" => Ok(BertFamily::Electra),
            other => Err(format!(
                "model_type is `{other}`; supported: bert (and MiniLM), distilbert, electra"
            )),
        }
    }

    /// Checks internal consistency; the message names the offending field.
    pub fn check(&self) -> Result<(), String> {
        self.family()?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("embedding_size", self.embedding_dim()),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if self.head_dim() * self.num_attention_heads != self.hidden_size {
            return Err(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "absolute" {
                return Err(format!(
                    "position_embedding_type `{p}` is not supported (only `absolute`)"
                ));
            }
        }
        if self.embedding_dim() != self.hidden_size && self.family()? != BertFamily::Electra {
            return Err(format!(
                "`embedding_size` {} differs from `hidden_size` {}: only ELECTRA projects its embeddings",
                self.embedding_dim(),
                self.hidden_size
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// Width of each head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Width of the embedding tables (ELECTRA's `embedding_size`, else `hidden_size`).
    pub fn embedding_dim(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// The feed-forward non-linearity.
    pub fn activation(&self) -> Result<Activation, String> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluNew),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!("unsupported hidden_act `{other}`")),
        }
    }

    /// Number of labels the config declares (`id2label` or `num_labels`), if any.
    pub fn num_labels(&self) -> Option<usize> {
        self.extra
            .get("id2label")
            .and_then(|v| v.as_object())
            .map(|m| m.len())
            .or_else(|| {
                self.extra
                    .get("num_labels")
                    .and_then(|v| v.as_u64())
                    .map(|n| n as usize)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distilbert_names_are_translated() {
        let c = BertConfig::from_json(serde_json::json!({
            "model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
            "activation": "relu", "vocab_size": 100
        }))
        .unwrap();
        assert_eq!(c.family().unwrap(), BertFamily::DistilBert);
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size
            ),
            (32, 2, 4, 64)
        );
        assert_eq!(c.activation().unwrap(), Activation::Relu);
        assert_eq!(c.type_vocab_size, 0);
        assert!(!c.extra.contains_key("dim"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err =
            BertConfig::from_json(serde_json::json!({"hidden_size": 30, "num_attention_heads": 4}))
                .unwrap_err();
        assert!(err.contains("hidden_size"), "{err}");
        let err = BertConfig::from_json(serde_json::json!({"hidden_act": "banana"})).unwrap_err();
        assert!(err.contains("banana"), "{err}");
        let err = BertConfig::from_json(serde_json::json!({"model_type": "roberta"})).unwrap_err();
        assert!(err.contains("roberta"), "{err}");
        let err =
            BertConfig::from_json(serde_json::json!({"position_embedding_type": "relative_key"}))
                .unwrap_err();
        assert!(err.contains("relative_key"), "{err}");
        let err = BertConfig::from_json(serde_json::json!({"embedding_size": 128})).unwrap_err();
        assert!(err.contains("embedding_size"), "{err}");
        let err = BertConfig::from_json(serde_json::json!({"hidden_size": "big"})).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn electra_embedding_size_and_labels() {
        let c = BertConfig::from_json(serde_json::json!({
            "model_type": "electra", "embedding_size": 16, "hidden_size": 32, "num_attention_heads": 4,
            "id2label": {"0": "LABEL_0"}
        }))
        .unwrap();
        assert_eq!(c.embedding_dim(), 16);
        assert_eq!(c.num_labels(), Some(1));
        assert_eq!(c.head_dim(), 8);
    }
}
