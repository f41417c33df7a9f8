//! Query representations: what the decoder writes at the first decoding position, which an atomic docid's
//! output row is scored against (`logit(doc) = rep . row(doc)`).
//!
//! For every input the model is run once (encoder, then one decoder step from the start token) and three
//! vectors are read at decoder position 0:
//! - `rep`: the final-normed decoder state times the head's output scale (`d_model^-0.5` for tied T5), so a
//!   docid's logit is exactly `rep . unembed[token]`;
//! - `key`: the last decoder block's feed-forward hidden activations (`decoder.blocks.{L}.mlp.hook_post`),
//!   the keys of the rank-one MLP edit;
//! - `resid`: the residual stream leaving the last block, before the final norm
//!   (`decoder.blocks.{L}.hook_resid_post`).

use burn::prelude::*;
use burn::tensor::TensorData;
use genir_model::hooks::{HookFilter, HookPoint, Hooks, Site, Stack};
use genir_model::t5::{pad_batch, T5Model};
use genir_model::tokenizer::TextTokenizer;

use crate::error::{EditError, Result};

/// Representations of a list of inputs, row-major.
#[derive(Clone, Debug, Default)]
pub struct Reps {
    /// Number of inputs.
    pub n: usize,
    /// `d_model`.
    pub d: usize,
    /// `d_ff` (0 without keys).
    pub d_ff: usize,
    /// `[n, d]` scaled final decoder states.
    pub rep: Vec<f32>,
    /// `[n, d_ff]` last-block feed-forward keys (empty unless asked for).
    pub key: Vec<f32>,
    /// `[n, d]` residual before the final norm (empty unless asked for).
    pub resid: Vec<f32>,
}

impl Reps {
    /// Row `i` of `rep`.
    pub fn rep(&self, i: usize) -> &[f32] {
        &self.rep[i * self.d..(i + 1) * self.d]
    }

    /// Row `i` of `key`.
    pub fn key(&self, i: usize) -> &[f32] {
        &self.key[i * self.d_ff..(i + 1) * self.d_ff]
    }

    /// Row `i` of `resid`.
    pub fn resid(&self, i: usize) -> &[f32] {
        &self.resid[i * self.d..(i + 1) * self.d]
    }

    /// Keeps the inputs `i` with `keep[i]`, in order.
    pub fn retain(&mut self, keep: &[bool]) {
        fn rows(v: &mut Vec<f32>, width: usize, keep: &[bool]) {
            if width == 0 || v.is_empty() {
                return;
            }
            let mut out = Vec::with_capacity(v.len());
            for (i, row) in v.chunks_exact(width).enumerate() {
                if keep.get(i).copied().unwrap_or(true) {
                    out.extend_from_slice(row);
                }
            }
            *v = out;
        }
        rows(&mut self.rep, self.d, keep);
        rows(&mut self.key, self.d_ff, keep);
        rows(&mut self.resid, self.d, keep);
        self.n = (0..self.n)
            .filter(|&i| keep.get(i).copied().unwrap_or(true))
            .count();
    }

    /// Appends another set (same widths).
    pub fn extend(&mut self, other: &Reps) {
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        self.n += other.n;
        self.rep.extend_from_slice(&other.rep);
        self.key.extend_from_slice(&other.key);
        self.resid.extend_from_slice(&other.resid);
    }
}

/// Tokenizes texts as the searcher does: `</s>`-terminated, cut to `max_len` tokens.
pub fn encode_texts(
    tok: &TextTokenizer,
    texts: &[String],
    max_len: usize,
    eos: u32,
) -> Result<Vec<Vec<u32>>> {
    texts
        .iter()
        .map(|t| {
            let mut ids = tok.encode(t)?;
            if ids.len() > max_len {
                ids.truncate(max_len.saturating_sub(1));
                ids.push(eos);
            }
            if ids.is_empty() {
                ids.push(eos);
            }
            Ok(ids)
        })
        .collect()
}

/// The indexing inputs of a document, as training makes them: consecutive chunks of `max_len - 1` tokens
/// of its text, each closed by `</s>`, at most `max_chunks`.
pub fn text_chunks(
    tok: &TextTokenizer,
    text: &str,
    max_len: usize,
    eos: u32,
    max_chunks: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut ids = tok.encode(text)?;
    if ids.last() == Some(&eos) {
        ids.pop();
    }
    if ids.is_empty() {
        return Ok(vec![vec![eos]]);
    }
    Ok(ids
        .chunks(max_len.saturating_sub(1).max(1))
        .take(max_chunks.max(1))
        .map(|c| {
            let mut s = c.to_vec();
            s.push(eos);
            s
        })
        .collect())
}

pub use genir_train::examples::sentences;

/// Runs the model on `sources` (batches of `batch`) and reads the representations at decoder position 0;
/// `keys` also reads the last block's feed-forward keys and residual.
pub fn compute(model: &T5Model, sources: &[Vec<u32>], keys: bool, batch: usize) -> Result<Reps> {
    let d = model.config.d_model;
    let layers = model.decoder.blocks.len();
    if layers == 0 {
        return Err(EditError::Invalid("the model has no decoder blocks".into()));
    }
    let last = layers - 1;
    let p_key = HookPoint::block(Stack::Decoder, last, Site::MlpPost);
    let p_resid = HookPoint::block(Stack::Decoder, last, Site::ResidPost);
    let d_ff = model.decoder.blocks[last].ff.wo.val().dims()[0];
    let mut out = Reps {
        n: 0,
        d,
        d_ff: if keys { d_ff } else { 0 },
        ..Default::default()
    };
    let device = model.shared.val().device();
    let pad = model.config.pad_token_id as u32;
    let start = model.config.decoder_start() as i64;
    let scale = model.output_scale();
    for chunk in sources.chunks(batch.max(1)) {
        let (ids, mask) = pad_batch(chunk, pad, &device)?;
        let b = chunk.len();
        let dec: Tensor<2, Int> =
            Tensor::from_data(TensorData::new(vec![start; b], [b, 1]), &device);
        let mut hooks = if keys {
            Hooks::caching(HookFilter::points(&[p_key, p_resid]))
        } else {
            Hooks::none()
        };
        let enc = model.encode(ids, mask.clone(), &mut hooks)?;
        let h = model.decode_hidden(&enc, mask, dec, None, &mut hooks)?;
        let h = h.reshape([b, d]).mul_scalar(scale);
        out.rep.extend(host(h)?);
        if keys {
            let cache = hooks.take_cache();
            out.key.extend(cache.require(&p_key)?.to_vec()?);
            out.resid.extend(cache.require(&p_resid)?.to_vec()?);
        }
        out.n += b;
    }
    Ok(out)
}

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EditError::Tensor(format!("{e:?}")))
}
