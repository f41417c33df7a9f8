//! `MonoT5`: a T5 re-ranker that reads `Query: q Document: d Relevant:` and answers `true` or `false`.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::TensorData;

use super::model::{Seq2SeqInput, T5Model};
use crate::error::ModelError;
use crate::hooks::Hooks;
use crate::tokenizer::TextTokenizer;

/// A MonoT5 re-ranker: the score of a pair is `log p(true)` of the first decoded token, with the softmax
/// taken over the two logits of `true` and `false` only (as pygaggle's MonoT5).
#[derive(Debug)]
pub struct MonoT5 {
    /// The seq2seq model.
    pub model: T5Model,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Token id of `true` (`▁true` in T5's vocabulary).
    pub true_id: u32,
    /// Token id of `false`.
    pub false_id: u32,
}

impl MonoT5 {
    /// A re-ranker whose `true`/`false` ids are the tokenizer's `▁true` and `▁false`.
    pub fn new(model: T5Model, tokenizer: TextTokenizer) -> Result<Self, ModelError> {
        let id = |tok: &str| {
            tokenizer
                .token_to_id(tok)
                .ok_or_else(|| ModelError::Tokenizer {
                    path: tokenizer.path().into(),
                    message: format!(
                        "no token `{tok}` in the vocabulary; give the ids with MonoT5::with_token_ids"
                    ),
                })
        };
        let (t, f) = (id("▁true")?, id("▁false")?);
        Self::with_token_ids(model, tokenizer, t, f)
    }

    /// A re-ranker with explicit `true`/`false` token ids.
    pub fn with_token_ids(
        model: T5Model,
        tokenizer: TextTokenizer,
        true_id: u32,
        false_id: u32,
    ) -> Result<Self, ModelError> {
        tokenizer.check_vocab(model.config.vocab_size)?;
        let vocab = model.config.vocab_size;
        if true_id as usize >= vocab || false_id as usize >= vocab || true_id == false_id {
            return Err(ModelError::Input(format!(
                "token ids true={true_id}, false={false_id} must differ and be below the vocabulary size {vocab}"
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            true_id,
            false_id,
        })
    }

    /// Loads a Hugging Face T5 folder with its `tokenizer.json` (e.g. `castorini/monot5-base-msmarco`). Prompts
    /// are not truncated (as Hugging Face's `tokenizer(text)`, whatever `tokenizer.json` saves).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let model = T5Model::from_pretrained(dir, device)?;
        let tokenizer =
            TextTokenizer::from_file(&dir.join("tokenizer.json"), model.config.vocab_size)?;
        Self::new(model, tokenizer)
    }

    /// The input text of a pair: `Query: {query} Document: {doc} Relevant:`.
    pub fn prompt(query: &str, doc: &str) -> String {
        format!("Query: {query} Document: {doc} Relevant:")
    }

    /// Tokenized prompts of `(query, document)` pairs, with the decoder start token as the only decoder input.
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Seq2SeqInput, ModelError> {
        let sources = pairs
            .iter()
            .map(|(q, d)| self.tokenizer.encode(&Self::prompt(q, d)))
            .collect::<Result<Vec<_>, _>>()?;
        let start = vec![vec![self.model.config.decoder_start() as u32]; pairs.len()];
        let device = self.model.shared.val().device();
        Seq2SeqInput::from_ids(
            &sources,
            &start,
            self.model.config.pad_token_id as u32,
            &device,
        )
    }

    /// `[batch, 2]` logits of `true` and `false` at the first decoder position.
    pub fn true_false_logits(
        &self,
        input: &Seq2SeqInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<2>, ModelError> {
        let logits = self.model.forward(input, hooks)?;
        let [b, _, v] = logits.dims();
        let first = logits.slice([0..b, 0..1, 0..v]).reshape([b, v]);
        let device = first.device();
        let idx: Tensor<1, Int> = Tensor::from_data(
            TensorData::new(vec![self.true_id as i64, self.false_id as i64], [2]),
            &device,
        );
        Ok(first.select(1, idx))
    }

    /// Scores `[batch]`: `log_softmax([true, false])[0]`. `hooks` act on the forward pass (encoder and the one
    /// decoder step).
    pub fn scores(
        &self,
        input: &Seq2SeqInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<1>, ModelError> {
        let tf = self.true_false_logits(input, hooks)?;
        let b = tf.dims()[0];
        Ok(activation::log_softmax(tf, 1)
            .slice([0..b, 0..1])
            .reshape([b]))
    }

    /// Scores of `(query, document)` pairs, one forward pass (batch row `i` is pair `i`).
    pub fn score_batch(
        &self,
        pairs: &[(&str, &str)],
        hooks: &mut Hooks<'_>,
    ) -> Result<Vec<f32>, ModelError> {
        let input = self.encode_pairs(pairs)?;
        self.scores(&input, hooks)?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Tensor(format!("{e:?}")))
    }

    /// Score of one query and document.
    pub fn score(&self, query: &str, doc: &str, hooks: &mut Hooks<'_>) -> Result<f32, ModelError> {
        let s = self.score_batch(&[(query, doc)], hooks)?;
        s.first()
            .copied()
            .ok_or_else(|| ModelError::Tensor("empty score".into()))
    }
}
