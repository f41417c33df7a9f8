//! `Cat`: a cross-encoder (query and document read together) with a sequence-classification head.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation;

use super::config::{BertConfig, BertFamily};
use super::layers::Linear;
use super::model::{log_unused, BertEncoder, BertInput, Layout};
use crate::error::ModelError;
use crate::hooks::Hooks;
use crate::tokenizer::TextTokenizer;
use crate::weights::WeightFile;

/// The non-linearity between the two layers of a classification head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadActivation {
    /// BERT's pooler.
    Tanh,
    /// ELECTRA's classification head (exact GELU).
    Gelu,
    /// DistilBERT's `pre_classifier`.
    Relu,
}

/// A sequence-classification head on the first token's state: `out(act(dense(h[:, 0])))`.
///
/// BERT: `bert.pooler.dense` + tanh, then `classifier`; ELECTRA: `classifier.dense` + GELU, then
/// `classifier.out_proj`; DistilBERT: `pre_classifier` + ReLU, then `classifier`.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    /// `hidden -> hidden`.
    pub dense: Linear,
    /// `hidden -> labels`.
    pub out: Linear,
    /// The non-linearity after `dense`.
    #[module(skip)]
    pub act: HeadActivation,
}

impl ClassifierHead {
    /// Loads the head of a family's `…ForSequenceClassification` checkpoint.
    pub(crate) fn load(
        config: &BertConfig,
        layout: &Layout,
        w: &mut WeightFile,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let h = config.hidden_size;
        let (dense, out, act) = match layout.family {
            BertFamily::Bert => (
                format!("{}pooler.dense", layout.prefix),
                "classifier",
                HeadActivation::Tanh,
            ),
            BertFamily::Electra => (
                "classifier.dense".to_string(),
                "classifier.out_proj",
                HeadActivation::Gelu,
            ),
            BertFamily::DistilBert => (
                "pre_classifier".to_string(),
                "classifier",
                HeadActivation::Relu,
            ),
        };
        // The number of labels: the config's, else the classifier's rows.
        let out_w = format!("{out}.weight");
        let labels = config
            .num_labels()
            .or_else(|| w.get(&out_w).and_then(|t| t.shape.first().copied()))
            .unwrap_or(1);
        let head = Self {
            dense: Linear::load(w, &dense, h, h, device)?,
            out: Linear::load(w, out, h, labels, device)?,
            act,
        };
        if !matches!(labels, 1 | 2) {
            return Err(ModelError::Config {
                path: w.path().with_file_name("config.json"),
                message: format!(
                    "the classifier has {labels} labels; a relevance head has 1 (the logit) or 2 (logit 1 is relevance)"
                ),
            });
        }
        Ok(head)
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.out.bias.dims()[0]
    }

    /// `act(dense(cls))`, `[batch, hidden] -> [batch, hidden]` (BERT's `pooler_output`).
    pub fn features(&self, cls: Tensor<2>) -> Tensor<2> {
        let x = self.dense.forward2(cls);
        match self.act {
            HeadActivation::Tanh => activation::tanh(x),
            HeadActivation::Gelu => activation::gelu(x),
            HeadActivation::Relu => activation::relu(x),
        }
    }

    /// Logits from the last hidden state: `[batch, len, hidden] -> [batch, labels]` (only position 0 is read,
    /// so `[batch, 1, hidden]` will do).
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, _, h] = hidden.dims();
        let cls = hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]);
        self.out.forward2(self.features(cls))
    }
}

/// A cross-encoder: `[CLS] query [SEP] document [SEP]` through a BERT-family encoder and a classification head;
/// the relevance score is the single logit, or logit 1 of a two-class head.
#[derive(Debug)]
pub struct Cat {
    /// The encoder.
    pub encoder: BertEncoder,
    /// The classification head.
    pub head: ClassifierHead,
    /// The tokenizer (needed by the text methods).
    pub tokenizer: Option<TextTokenizer>,
}

impl Cat {
    /// Builds a cross-encoder from a `…ForSequenceClassification` checkpoint's tensors.
    pub fn from_weights(
        config: BertConfig,
        w: &mut WeightFile,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let layout = Layout::detect(&config, w)?;
        let head = ClassifierHead::load(&config, &layout, w, device)?;
        let encoder = BertEncoder::load(config, &layout, w, device)?;
        Ok(Self {
            encoder,
            head,
            tokenizer: None,
        })
    }

    /// Loads a Hugging Face folder (`config.json`, weights, and `tokenizer.json` if present, set up as
    /// Hugging Face's tokenizer class for the model does: [`TextTokenizer::with_bert_family_settings`]).
    /// Pairs are truncated longest-first, as sentence-transformers' `CrossEncoder` does, to
    /// `tokenizer_config.json`'s `model_max_length`, at most the model's positions.
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let model_type = config.model_type.clone();
        let mut w = WeightFile::from_dir(dir)?;
        let mut cat = Self::from_weights(config, &mut w, device)?;
        log_unused(&w, "cross-encoder");
        let tok_path = dir.join("tokenizer.json");
        if tok_path.exists() {
            let max_positions = cat.encoder.config.max_position_embeddings;
            let tok = TextTokenizer::from_file(&tok_path, cat.encoder.config.vocab_size)?
                .with_bert_family_settings(dir, &model_type)?;
            let max_len = TextTokenizer::config_max_length(dir)?
                .unwrap_or(max_positions)
                .min(max_positions);
            cat = cat.with_tokenizer(tok.with_max_length(Some(max_len))?)?;
        }
        Ok(cat)
    }

    /// Sets the tokenizer (checked against the vocabulary).
    pub fn with_tokenizer(mut self, tokenizer: TextTokenizer) -> Result<Self, ModelError> {
        tokenizer.check_vocab(self.encoder.config.vocab_size)?;
        self.tokenizer = Some(tokenizer);
        Ok(self)
    }

    /// Number of logits of the head.
    pub fn num_labels(&self) -> usize {
        self.head.num_labels()
    }

    /// Tokenizes `(query, document)` pairs into one padded batch (`[CLS] q [SEP] d [SEP]`, segments 0/1).
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<BertInput, ModelError> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                message: "this cross-encoder has no tokenizer; load one with Cat::with_tokenizer"
                    .into(),
            })?;
        let rows = pairs
            .iter()
            .map(|(q, d)| tok.encode_pair(q, d))
            .collect::<Result<Vec<_>, _>>()?;
        BertInput::from_encoded(
            &rows,
            self.encoder.config.pad_token_id as u32,
            &self.encoder.device(),
        )
    }

    /// Head logits `[batch, labels]`; `hooks` act on the encoder pass. The head reads the first position only,
    /// so the last block computes that position alone unless a hook touches it
    /// ([`BertEncoder::forward_first`]).
    pub fn logits(
        &self,
        input: &BertInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<2>, ModelError> {
        let first = self.encoder.forward_first(input, hooks)?;
        Ok(self.head.forward(first))
    }

    /// Relevance scores `[batch]`: the logit of a one-label head, logit 1 of a two-label head.
    pub fn relevance(
        &self,
        input: &BertInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<1>, ModelError> {
        let logits = self.logits(input, hooks)?;
        let [b, n] = logits.dims();
        let col = if n == 2 { 1 } else { 0 };
        Ok(logits.slice([0..b, col..col + 1]).reshape([b]))
    }

    /// Relevance of `(query, document)` pairs, one encoder pass (batch row `i` is pair `i`).
    pub fn score_batch(
        &self,
        pairs: &[(&str, &str)],
        hooks: &mut Hooks<'_>,
    ) -> Result<Vec<f32>, ModelError> {
        let input = self.encode_pairs(pairs)?;
        self.relevance(&input, hooks)?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Tensor(format!("{e:?}")))
    }

    /// Relevance of one query and document.
    pub fn score(&self, query: &str, doc: &str, hooks: &mut Hooks<'_>) -> Result<f32, ModelError> {
        let s = self.score_batch(&[(query, doc)], hooks)?;
        s.first()
            .copied()
            .ok_or_else(|| ModelError::Tensor("empty score".into()))
    }
}
