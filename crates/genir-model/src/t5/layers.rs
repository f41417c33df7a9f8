//! T5 building blocks: RMS norm, feed-forward, relative-position attention.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

use super::config::Activation as Act;
use crate::error::ModelError;
use crate::hooks::{AttnKind, AttnSite, HookPoint, Hooks, Site, Stack};
use crate::weights::HostTensor;

/// Large negative additive mask value (as Hugging Face uses: the f32 minimum).
pub const MASK_VALUE: f32 = f32::MIN;

pub(crate) fn param1(t: HostTensor, device: &Device) -> Param<Tensor<1>> {
    let n = t.values.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(t.values, [n]), device))
}

pub(crate) fn param2(t: HostTensor, device: &Device) -> Param<Tensor<2>> {
    let shape = [t.shape[0], t.shape[1]];
    Param::from_tensor(Tensor::from_data(TensorData::new(t.values, shape), device))
}

pub(crate) fn host2(p: &Param<Tensor<2>>) -> Result<HostTensor, ModelError> {
    let t = p.val();
    let dims = t.dims();
    let values = t
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| ModelError::Tensor(format!("{e:?}")))?;
    Ok(HostTensor::new(dims.to_vec(), values))
}

pub(crate) fn host1(p: &Param<Tensor<1>>) -> Result<HostTensor, ModelError> {
    let t = p.val();
    let values = t
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| ModelError::Tensor(format!("{e:?}")))?;
    Ok(HostTensor::new(vec![values.len()], values))
}

/// `x @ w` for `x: [batch, pos, d_in]`, `w: [d_in, d_out]`, as one matrix product.
pub fn linear(x: Tensor<3>, w: &Tensor<2>) -> Tensor<3> {
    crate::fastmath::linear(x, w, None)
}

/// T5's layer norm: scale by the root mean square, no centring, no bias.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel gain, `[d_model]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    /// `[batch, pos, d_model] -> [batch, pos, d_model]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::fastmath::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// The feed-forward block: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `[d_model, d_ff]` (`wi`, or `wi_0` when gated).
    pub wi: Param<Tensor<2>>,
    /// `[d_model, d_ff]` linear branch of the gate.
    pub wi_1: Option<Param<Tensor<2>>>,
    /// `[d_ff, d_model]`.
    pub wo: Param<Tensor<2>>,
    /// Non-linearity.
    #[module(skip)]
    pub act: ActKind,
}

/// A `Module`-friendly copy of the activation choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActKind(pub Act);

impl FeedForward {
    /// The hidden activations after the non-linearity (and gate), `[batch, pos, d_ff]`.
    pub fn hidden(&self, x: Tensor<3>) -> Tensor<3> {
        let h = match self.act.0 {
            // the product and the ReLU in one pass (`fastmath::linear_relu`: the same values)
            Act::Relu => crate::fastmath::linear_relu(x.clone(), &self.wi.val(), None),
            act => act.apply(linear(x.clone(), &self.wi.val())),
        };
        match &self.wi_1 {
            Some(w1) => h * linear(x, &w1.val()),
            None => h,
        }
    }

    /// `[batch, pos, d_model] -> [batch, pos, d_model]`, with the `mlp.hook_post` point.
    pub fn forward(
        &self,
        x: Tensor<3>,
        hooks: &mut Hooks<'_>,
        stack: Stack,
        layer: usize,
    ) -> Result<Tensor<3>, ModelError> {
        let h = self.hidden(x);
        let h = hooks.apply3(HookPoint::block(stack, layer, Site::MlpPost), h)?;
        Ok(linear(h, &self.wo.val()))
    }
}

/// Keys and values kept between decoding steps, `[batch, head, len, d_head]`.
#[derive(Clone, Debug, Default)]
pub struct KvPair {
    /// Keys.
    pub k: Option<Tensor<4>>,
    /// Values.
    pub v: Option<Tensor<4>>,
}

impl KvPair {
    /// Keeps (reorders, repeats) batch rows.
    pub(crate) fn select(&self, idx: &Tensor<1, Int>) -> Self {
        Self {
            k: self.k.clone().map(|t| t.select(0, idx.clone())),
            v: self.v.clone().map(|t| t.select(0, idx.clone())),
        }
    }
}

/// Which source sequence each decoder row reads, laid out for cross-attention over shared keys/values:
/// the rows of every source gathered into `slots` rows (padded with a repeat of one of them), so that one
/// batched product per source and head serves all its beams instead of a copy of the encoder's keys and
/// values per beam (beam search).
#[derive(Clone, Debug)]
pub struct RowGroups {
    /// Source sequences (the batch of the shared keys/values).
    pub sources: usize,
    /// Rows per source in the padded layout (the most rows any source has).
    pub slots: usize,
    /// Decoder row in each slot, `[sources * slots]` (padding slots repeat a row).
    pad: Tensor<1, Int>,
    /// Slot of each decoder row, `[rows]`.
    back: Tensor<1, Int>,
}

impl RowGroups {
    /// The layout for decoder rows reading `source_of[row]` (each below `sources`).
    pub fn new(source_of: &[usize], sources: usize, device: &Device) -> Result<Self, ModelError> {
        if let Some(&s) = source_of.iter().find(|&&s| s >= sources) {
            return Err(ModelError::Input(format!(
                "decoder row reads source {s} of a batch of {sources}"
            )));
        }
        let mut count = vec![0usize; sources];
        for &s in source_of {
            count[s] += 1;
        }
        let slots = count.iter().copied().max().unwrap_or(0).max(1);
        let mut pad = vec![-1i64; sources * slots];
        let mut back = Vec::with_capacity(source_of.len());
        let mut next = vec![0usize; sources];
        for (row, &s) in source_of.iter().enumerate() {
            let slot = s * slots + next[s];
            next[s] += 1;
            pad[slot] = row as i64;
            back.push(slot as i64);
        }
        // padding slots repeat the source's first row (row 0 for a source without rows): any row will do,
        // since their results are never read back
        for s in 0..sources {
            let first = if count[s] > 0 { pad[s * slots] } else { 0 };
            for p in &mut pad[s * slots..(s + 1) * slots] {
                if *p < 0 {
                    *p = first;
                }
            }
        }
        let rows = back.len();
        Ok(Self {
            sources,
            slots,
            pad: Tensor::from_data(TensorData::new(pad, [sources * slots]), device),
            back: Tensor::from_data(TensorData::new(back, [rows]), device),
        })
    }
}

/// Multi-head attention with T5's conventions: no `1/sqrt(d_head)` scaling, no biases, and an
/// optional relative-position bias table (in the first layer of each stack).
#[derive(Module, Debug)]
pub struct T5Attention {
    /// `[d_model, heads * d_head]`.
    pub q: Param<Tensor<2>>,
    /// `[d_model, heads * d_head]`.
    pub k: Param<Tensor<2>>,
    /// `[d_model, heads * d_head]`.
    pub v: Param<Tensor<2>>,
    /// `[heads * d_head, d_model]`.
    pub o: Param<Tensor<2>>,
    /// `[num_buckets, heads]`, first layer only.
    pub relative_attention_bias: Option<Param<Tensor<2>>>,
    /// Heads.
    #[module(skip)]
    pub n_heads: usize,
    /// Width per head.
    #[module(skip)]
    pub d_kv: usize,
}

/// Where an attention call sits, for naming its hook points.
#[derive(Clone, Copy, Debug)]
pub struct AttnAt {
    /// Stack.
    pub stack: Stack,
    /// Block index.
    pub layer: usize,
    /// Self or cross.
    pub kind: AttnKind,
}

impl AttnAt {
    fn point(&self, site: AttnSite) -> HookPoint {
        HookPoint::attn(self.stack, self.layer, self.kind, site)
    }
}

/// Where an attention layer takes its keys and values from.
#[derive(Clone, Copy, Debug)]
pub enum KvSource<'t> {
    /// Its own input (self-attention); with a cache, new keys/values are appended to the cached ones.
    Own,
    /// Another sequence `[batch, len, d_model]`, e.g. the encoder output (cross-attention); a cache that
    /// already holds keys/values is used instead, an empty one receives them.
    Other(&'t Tensor<3>),
    /// The keys/values the cache already holds (cross-attention over an encoder output projected earlier,
    /// e.g. by [`T5Attention::project_kv`]); an empty cache is an error.
    Cached,
}

impl T5Attention {
    fn heads(&self, x: Tensor<3>, w: &Param<Tensor<2>>) -> Tensor<4> {
        let [b, s, _] = x.dims();
        linear(x, &w.val()).reshape([b, s, self.n_heads, self.d_kv])
    }

    /// Keys and values of `src: [batch, len, d_model]` as this attention computes them (`[batch, head, len,
    /// d_head]`), e.g. cross-attention keys/values over an encoder output reused across many decoder runs.
    pub fn project_kv(&self, src: Tensor<3>) -> KvPair {
        let k = self.heads(src.clone(), &self.k).swap_dims(1, 2);
        let v = self.heads(src, &self.v).swap_dims(1, 2);
        KvPair {
            k: Some(k),
            v: Some(v),
        }
    }

    /// Attention of `x: [batch, q, d_model]` over the keys/values of `kv` (see [`KvSource`]), with an
    /// additive `bias` broadcastable to `[batch, head, q, k]`. With `cache`, new self-attention keys/values
    /// are appended to it, and cross-attention keys/values are computed once and reused.
    pub fn forward(
        &self,
        x: Tensor<3>,
        kv: KvSource<'_>,
        bias: Tensor<4>,
        cache: Option<&mut KvPair>,
        hooks: &mut Hooks<'_>,
        at: AttnAt,
    ) -> Result<Tensor<3>, ModelError> {
        let [b, q_len, _] = x.dims();
        let q = hooks.apply4(at.point(AttnSite::Q), self.heads(x.clone(), &self.q))?;
        let q = q.swap_dims(1, 2);
        let cached = cache.as_ref().and_then(|c| c.k.clone().zip(c.v.clone()));
        let (k, v) = match (kv, cached) {
            (KvSource::Other(_) | KvSource::Cached, Some(kv)) => kv,
            (KvSource::Cached, None) => {
                return Err(ModelError::Input(format!(
                    "{}: keys/values were to come from the cache, which holds none",
                    at.point(AttnSite::K)
                )))
            }
            (kv, cached) => {
                let src = match kv {
                    KvSource::Other(src) => src.clone(),
                    _ => x,
                };
                let k = hooks.apply4(at.point(AttnSite::K), self.heads(src.clone(), &self.k))?;
                let v = hooks.apply4(at.point(AttnSite::V), self.heads(src, &self.v))?;
                let (k, v) = (k.swap_dims(1, 2), v.swap_dims(1, 2));
                match (kv, cached) {
                    (KvSource::Own, Some((pk, pv))) => {
                        (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2))
                    }
                    _ => (k, v),
                }
            }
        };
        if let Some(c) = cache {
            c.k = Some(k.clone());
            c.v = Some(v.clone());
        }
        let inner = [AttnSite::Scores, AttnSite::Pattern, AttnSite::Z];
        if !inner.iter().any(|&site| hooks.wants(&at.point(site))) {
            if let Some(z) = crate::fastmath::attention_heads(&q, &k, &v, &bias, None) {
                return Ok(linear(z, &self.o.val()));
            }
        }
        let scores = q.matmul(k.swap_dims(2, 3)) + bias;
        let scores = hooks.apply4(at.point(AttnSite::Scores), scores)?;
        let pattern = crate::fastmath::softmax_last(scores);
        let pattern = hooks.apply4(at.point(AttnSite::Pattern), pattern)?;
        let z = pattern.matmul(v).swap_dims(1, 2);
        let z = hooks.apply4(at.point(AttnSite::Z), z)?;
        let z = z.reshape([b, q_len, self.n_heads * self.d_kv]);
        Ok(linear(z, &self.o.val()))
    }
}

impl T5Attention {
    /// Cross-attention of decoder rows `x: [rows, q, d_model]` over keys/values shared by the rows of each
    /// source (`groups`): `cache` holds (or receives, projected from `src: [sources, len, d_model]`) the
    /// keys/values of the sources, never one copy per row; `bias` is the encoder mask `[sources, 1, 1, len]`.
    /// Computes what [`T5Attention::forward`] computes on keys/values repeated per row. The
    /// `hook_k`/`hook_v`/`hook_attn_scores`/`hook_pattern` points do not fire here (their batch would be the
    /// sources'): callers with active hooks expand the state to one row per decoder row first.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_grouped(
        &self,
        x: Tensor<3>,
        src: KvSource<'_>,
        bias: Tensor<4>,
        cache: &mut KvPair,
        groups: &RowGroups,
        hooks: &mut Hooks<'_>,
        at: AttnAt,
    ) -> Result<Tensor<3>, ModelError> {
        let [rows, q_len, _] = x.dims();
        let (h, dk) = (self.n_heads, self.d_kv);
        let q = hooks.apply4(at.point(AttnSite::Q), self.heads(x, &self.q))?;
        let (k, v) = match cache.k.clone().zip(cache.v.clone()) {
            Some(kv) => kv,
            None => {
                let KvSource::Other(src) = src else {
                    return Err(ModelError::Input(format!(
                        "{}: grouped cross-attention needs the sources or their cached keys/values",
                        at.point(AttnSite::K)
                    )));
                };
                let kv = self.project_kv(src.clone());
                cache.k = kv.k.clone();
                cache.v = kv.v.clone();
                kv.k.zip(kv.v).ok_or_else(|| {
                    ModelError::Input("cross-attention keys/values were not computed".into())
                })?
            }
        };
        let (s, n) = (groups.sources, groups.slots);
        if k.dims()[0] != s {
            return Err(ModelError::Input(format!(
                "cross-attention keys/values of {} sources for decoder rows grouped over {s}",
                k.dims()[0]
            )));
        }
        // [rows, q, h, dk] -> slots [s * n, q, h, dk] -> [s, h, n * q, dk]
        let qs = q
            .select(0, groups.pad.clone())
            .reshape([s, n, q_len, h, dk])
            .permute([0, 3, 1, 2, 4])
            .reshape([s, h, n * q_len, dk]);
        let z = match crate::fastmath::attention_heads(&qs, &k, &v, &bias, None) {
            // [s, n * q, h * dk] is already [s * n, q, h, dk] in memory
            Some(z) => z.reshape([s * n, q_len, h, dk]),
            None => {
                let scores = qs.matmul(k.swap_dims(2, 3)) + bias;
                crate::fastmath::softmax_last(scores)
                    .matmul(v)
                    .reshape([s, h, n, q_len, dk])
                    .permute([0, 2, 3, 1, 4])
                    .reshape([s * n, q_len, h, dk])
            }
        }
        .select(0, groups.back.clone());
        let z = hooks.apply4(at.point(AttnSite::Z), z)?;
        let z = z.reshape([rows, q_len, h * dk]);
        Ok(linear(z, &self.o.val()))
    }
}

/// T5's relative-position bucket of `relative = key_pos - query_pos`, computed in f32 as PyTorch does so
/// bucket edges agree with Hugging Face.
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets;
    let mut out = 0usize;
    let n = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            out += buckets;
        }
        relative.unsigned_abs() as usize
    } else {
        (-relative.min(0)) as usize
    };
    let max_exact = buckets / 2;
    if n < max_exact {
        out + n
    } else {
        let denom = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
        let scaled = (n as f32 / max_exact as f32).ln() / denom * (buckets - max_exact) as f32;
        out + (max_exact + scaled as usize).min(buckets - 1)
    }
}

/// The relative-position bias `[1, heads, q_len, k_len]` for queries at `q_start..q_start+q_len` and keys
/// at `0..k_len`, from a bias table `[num_buckets, heads]`.
pub fn position_bias(
    table: &Tensor<2>,
    q_start: usize,
    q_len: usize,
    k_len: usize,
    bidirectional: bool,
    max_distance: usize,
) -> Tensor<4> {
    let [num_buckets, heads] = table.dims();
    let mut idx = Vec::with_capacity(q_len * k_len);
    for i in 0..q_len {
        for j in 0..k_len {
            let rel = j as i64 - (q_start + i) as i64;
            idx.push(
                relative_position_bucket(rel, bidirectional, num_buckets, max_distance) as i64,
            );
        }
    }
    let device = table.device();
    let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(idx, [q_len * k_len]), &device);
    table
        .clone()
        .select(0, idx)
        .reshape([q_len, k_len, heads])
        .permute([2, 0, 1])
        .unsqueeze::<4>()
}
