//! The rankers that can be patched: a small trait over genir's [`Dot`] and [`Cat`].

use burn::prelude::*;
use genir_model::bert::{BertEncoder, BertInput, Cat, Dot};
use genir_model::device::index_tensor;
use genir_model::hooks::Hooks;
use genir_model::tokenizer::{Encoded, TextTokenizer};
use serde::{Deserialize, Serialize};

use crate::align::{align_texts, Alignment};
use crate::error::{MechirError, Result};
use crate::pairs::Pair;

/// How pairs become model inputs (MechIR's collator settings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodeConfig {
    /// Maximum query length in tokens, special tokens included (MechIR's `q_max_length`, 30).
    pub query_max_length: usize,
    /// Maximum document length in tokens (MechIR's `d_max_length`; its collators default to 300). A
    /// cross-encoder truncates the pair to `query_max_length + doc_max_length`, longest first.
    pub doc_max_length: usize,
    /// The filler token that pads the original document (MechIR's `special_token`, `"a"`).
    pub filler: String,
    /// Report positions up to the maximum length, as MechIR does with `padding="max_length"` (the extra
    /// positions are padding in every pair, so their patching effect is exactly 0 and they are not run);
    /// `false` reports positions up to the longest input of the batch.
    pub pad_to_max_length: bool,
}

impl Default for EncodeConfig {
    fn default() -> Self {
        Self {
            query_max_length: 30,
            doc_max_length: 300,
            filler: "a".into(),
            pad_to_max_length: false,
        }
    }
}

/// One batch of pairs as model inputs: the patched side (documents for a bi-encoder, query-document
/// sequences for a cross-encoder) in its original and perturbed versions, both of the same length.
#[derive(Clone, Debug)]
pub struct EncodedPairs {
    /// Original inputs, `[batch, len]`.
    pub original: BertInput,
    /// Perturbed inputs, `[batch, len]`.
    pub perturbed: BertInput,
    /// Queries, for a bi-encoder (scored once, never patched).
    pub queries: Option<BertInput>,
    /// Number of real (non-padding) tokens of each original row.
    pub lengths: Vec<usize>,
    /// Token strings of each original row (without padding).
    pub tokens: Vec<Vec<String>>,
    /// Token strings of each perturbed row (without padding).
    pub perturbed_tokens: Vec<Vec<String>>,
    /// The length positions are reported up to (at least the input length).
    pub report_length: usize,
}

/// What a ranker keeps between the runs of one batch (a bi-encoder's query embeddings).
#[derive(Clone, Debug)]
pub struct ScoreContext {
    /// `[batch, hidden]` query embeddings (bi-encoders).
    pub queries: Option<Tensor<2>>,
}

/// A ranker whose encoder can be patched: it encodes pairs, and scores a (patched) final hidden state.
pub trait PatchModel {
    /// The patched encoder.
    fn encoder(&self) -> &BertEncoder;

    /// `dot` or `cat`.
    fn kind(&self) -> &'static str;

    /// Encodes pairs, padding each original document to its perturbed version with `alignment`.
    fn encode(
        &self,
        pairs: &[Pair],
        alignment: Alignment,
        config: &EncodeConfig,
    ) -> Result<EncodedPairs>;

    /// Computes what scoring needs besides the patched run (a bi-encoder's query embeddings).
    fn context(&self, encoded: &EncodedPairs) -> Result<ScoreContext>;

    /// Scores of final hidden states `[rows, len, hidden]` under `mask` (`[rows, len]`); row `i` belongs to
    /// pair `pairs[i]` of the batch.
    fn score_hidden(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<2, Int>,
        context: &ScoreContext,
        pairs: &[usize],
    ) -> Result<Tensor<1>>;

    /// Scores of residual streams `x` (`[rows, len, hidden]`) entering block `start` (the encoder's depth:
    /// `x` is the final hidden state): the remaining blocks, then [`PatchModel::score_hidden`]. `bias` is
    /// the attention bias of `mask`.
    fn score_from(
        &self,
        x: Tensor<3>,
        start: usize,
        bias: Tensor<4>,
        mask: Tensor<2, Int>,
        context: &ScoreContext,
        pairs: &[usize],
    ) -> Result<Tensor<1>> {
        let hidden = self
            .encoder()
            .forward_from(x, start, bias, &mut Hooks::none())?;
        self.score_hidden(hidden, mask, context, pairs)
    }
}

fn truncating(tok: &TextTokenizer, max_len: usize) -> Result<TextTokenizer> {
    Ok(tok
        .clone()
        .without_padding()
        .with_max_length(Some(max_len))?)
}

/// `tok` without truncation or padding: documents are aligned whole, then cut ([`align_texts`]).
fn whole(tok: &TextTokenizer) -> Result<TextTokenizer> {
    Ok(tok.clone().without_padding().with_max_length(None)?)
}

fn tokens_of(tok: &TextTokenizer, e: &Encoded) -> Vec<String> {
    e.ids
        .iter()
        .map(|&i| tok.id_to_token(i).unwrap_or_else(|| format!("#{i}")))
        .collect()
}

fn finish(
    tok: &TextTokenizer,
    original: Vec<Encoded>,
    perturbed: Vec<Encoded>,
    queries: Option<BertInput>,
    encoder: &BertEncoder,
    report_max: usize,
    config: &EncodeConfig,
) -> Result<EncodedPairs> {
    let pad_id = encoder.config.pad_token_id as u32;
    let device = &encoder.device();
    for (i, (a, b)) in original.iter().zip(&perturbed).enumerate() {
        if a.ids.len() != b.ids.len() {
            tracing::warn!(
                pair = i,
                original = a.ids.len(),
                perturbed = b.ids.len(),
                "after alignment the original and perturbed inputs have different lengths; positions are \
                 patched as they are (MechIR stops with an assertion error here)"
            );
        }
    }
    let lengths: Vec<usize> = original.iter().map(|e| e.ids.len()).collect();
    let tokens = original.iter().map(|e| tokens_of(tok, e)).collect();
    let perturbed_tokens = perturbed.iter().map(|e| tokens_of(tok, e)).collect();
    // Both sides padded to one length so that positions line up.
    let len = original
        .iter()
        .chain(&perturbed)
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(0);
    let pad_to = |rows: Vec<Encoded>| -> Vec<Encoded> {
        rows.into_iter()
            .map(|mut e| {
                let n = len - e.ids.len();
                e.ids.extend(std::iter::repeat_n(pad_id, n));
                e.type_ids.extend(std::iter::repeat_n(0, n));
                e.attention_mask.extend(std::iter::repeat_n(0, n));
                e
            })
            .collect()
    };
    let original = BertInput::from_encoded(&pad_to(original), pad_id, device)?;
    let perturbed = BertInput::from_encoded(&pad_to(perturbed), pad_id, device)?;
    let report_length = if config.pad_to_max_length {
        report_max.max(len)
    } else {
        len
    };
    Ok(EncodedPairs {
        original,
        perturbed,
        queries,
        lengths,
        tokens,
        perturbed_tokens,
        report_length,
    })
}

fn require_tokenizer<'a>(t: &'a Option<TextTokenizer>, what: &str) -> Result<&'a TextTokenizer> {
    t.as_ref()
        .ok_or_else(|| MechirError::Input(format!("the {what} has no tokenizer (tokenizer.json)")))
}

/// MechIR's `Dot`: documents and queries embedded separately with the model's pooling, scored by the raw inner
/// product of the pooled embeddings (no normalisation, whatever the folder's similarity). Only documents
/// are patched.
impl PatchModel for Dot {
    fn encoder(&self) -> &BertEncoder {
        &self.encoder
    }

    fn kind(&self) -> &'static str {
        "dot"
    }

    fn encode(
        &self,
        pairs: &[Pair],
        alignment: Alignment,
        config: &EncodeConfig,
    ) -> Result<EncodedPairs> {
        if pairs.is_empty() {
            return Err(MechirError::Input("no pairs to encode".into()));
        }
        let tok = require_tokenizer(&self.tokenizer, "bi-encoder")?;
        let qtok = truncating(tok, config.query_max_length)?;
        let dtok = truncating(tok, config.doc_max_length)?;
        let atok = whole(tok)?;
        let (mut orig, mut pert, mut queries) = (Vec::new(), Vec::new(), Vec::new());
        for p in pairs {
            let (a, b) = align_texts(&atok, &p.document, &p.perturbed, alignment, &config.filler)?;
            orig.push(dtok.encode_full(&a)?);
            pert.push(dtok.encode_full(&b)?);
            queries.push(qtok.encode_full(&p.query)?);
        }
        let device = self.encoder.device();
        let pad = self.encoder.config.pad_token_id as u32;
        let q = BertInput::from_encoded(&queries, pad, &device)?;
        finish(
            tok,
            orig,
            pert,
            Some(q),
            &self.encoder,
            config.doc_max_length,
            config,
        )
    }

    fn context(&self, encoded: &EncodedPairs) -> Result<ScoreContext> {
        let q = encoded
            .queries
            .as_ref()
            .ok_or_else(|| MechirError::Input("a bi-encoder batch needs its queries".into()))?;
        let hidden = self.encoder.forward(q, &mut Hooks::none())?;
        Ok(ScoreContext {
            queries: Some(self.pool(hidden, q.attention_mask.clone())),
        })
    }

    fn score_hidden(
        &self,
        hidden: Tensor<3>,
        mask: Tensor<2, Int>,
        context: &ScoreContext,
        pairs: &[usize],
    ) -> Result<Tensor<1>> {
        let q = context
            .queries
            .clone()
            .ok_or_else(|| MechirError::Input("a bi-encoder scores against its queries".into()))?;
        let rows = hidden.dims()[0];
        let d = self.pool(hidden, mask);
        let idx = index_tensor(pairs, &d.device());
        let q = q.select(0, idx);
        Ok((q * d).sum_dim(1).reshape([rows]))
    }
}

/// A cross-encoder: `[CLS] query [SEP] document [SEP]`, scored by its relevance logit (the single logit, or
/// logit 1 of a two-label head; MechIR's `Cat` reads logit 0, the same for one-label heads). The whole
/// sequence is patched, query positions included.
impl PatchModel for Cat {
    fn encoder(&self) -> &BertEncoder {
        &self.encoder
    }

    fn kind(&self) -> &'static str {
        "cat"
    }

    fn encode(
        &self,
        pairs: &[Pair],
        alignment: Alignment,
        config: &EncodeConfig,
    ) -> Result<EncodedPairs> {
        if pairs.is_empty() {
            return Err(MechirError::Input("no pairs to encode".into()));
        }
        let tok = require_tokenizer(&self.tokenizer, "cross-encoder")?;
        let max = config.query_max_length + config.doc_max_length;
        let ptok = truncating(tok, max)?;
        let atok = whole(tok)?;
        let (mut orig, mut pert) = (Vec::new(), Vec::new());
        for p in pairs {
            let (a, b) = align_texts(&atok, &p.document, &p.perturbed, alignment, &config.filler)?;
            orig.push(ptok.encode_pair(&p.query, &a)?);
            pert.push(ptok.encode_pair(&p.query, &b)?);
        }
        finish(tok, orig, pert, None, &self.encoder, max, config)
    }

    fn context(&self, _encoded: &EncodedPairs) -> Result<ScoreContext> {
        Ok(ScoreContext { queries: None })
    }

    /// The head reads the first position only: the last block computes that one
    /// ([`BertEncoder::forward_from_first`]).
    fn score_from(
        &self,
        x: Tensor<3>,
        start: usize,
        bias: Tensor<4>,
        mask: Tensor<2, Int>,
        context: &ScoreContext,
        pairs: &[usize],
    ) -> Result<Tensor<1>> {
        let first = self
            .encoder
            .forward_from_first(x, start, bias, &mut Hooks::none())?;
        self.score_hidden(first, mask, context, pairs)
    }

    fn score_hidden(
        &self,
        hidden: Tensor<3>,
        _mask: Tensor<2, Int>,
        _context: &ScoreContext,
        _pairs: &[usize],
    ) -> Result<Tensor<1>> {
        let logits = self.head.forward(hidden);
        let [b, n] = logits.dims();
        let col = if n == 2 { 1 } else { 0 };
        Ok(logits.slice([0..b, col..col + 1]).reshape([b]))
    }
}
