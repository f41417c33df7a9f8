//! `T5ForConditionalGeneration`, node for node, with hook points on every component.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::config::T5Config;
use super::layers::{
    host1, host2, linear, param1, param2, position_bias, ActKind, AttnAt, FeedForward, KvPair,
    KvSource, RmsNorm, RowGroups, T5Attention, MASK_VALUE,
};
use crate::device::index_tensor;
use crate::error::ModelError;
use crate::hooks::{ActivationCache, AttnKind, HookFilter, HookPoint, Hooks, Site, Stack};
use crate::weights::{write_safetensors, HostTensor, WeightFile};
use genir_io::write_atomic;

/// One encoder or decoder block: self-attention, cross-attention (decoder), feed-forward, each
/// pre-normed and added to the residual stream.
#[derive(Module, Debug)]
pub struct T5Block {
    /// Norm before self-attention (`layer.0.layer_norm`).
    pub ln_self: RmsNorm,
    /// Self-attention (`layer.0.SelfAttention`).
    pub self_attn: T5Attention,
    /// Norm before cross-attention (decoder `layer.1.layer_norm`).
    pub ln_cross: Option<RmsNorm>,
    /// Cross-attention (decoder `layer.1.EncDecAttention`).
    pub cross_attn: Option<T5Attention>,
    /// Norm before the feed-forward block.
    pub ln_ff: RmsNorm,
    /// Feed-forward block (`DenseReluDense`).
    pub ff: FeedForward,
    /// Components removed from this block ([`T5Model::remove_components`]): skipped, their output is zero.
    #[module(skip)]
    pub removed: Removed,
}

/// The whole components a block skips: nothing of them is computed, and their output is exactly zero or,
/// for a mean ablation baked into the model ([`T5Model::replace_components_with_means`]), a constant vector.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// Self-attention.
    pub self_attn: bool,
    /// Cross-attention (decoder blocks).
    pub cross_attn: bool,
    /// Feed-forward block.
    pub mlp: bool,
    /// Constant outputs `[d_model]` of removed components (self-attention, cross-attention, MLP); `None`:
    /// zero.
    pub means: [Option<Tensor<1>>; 3],
}

impl Removed {
    /// The output of a removed component shaped like the residual stream `x`: zero, or its constant mean.
    fn output(&self, which: usize, x: &Tensor<3>) -> Tensor<3> {
        match &self.means[which] {
            None => x.zeros_like(),
            Some(m) => {
                let [b, t, d] = x.dims();
                m.clone().reshape([1, 1, d]).expand([b, t, d])
            }
        }
    }
}

/// `config.json` key listing the removed components (hook point names of their outputs).
pub const REMOVED_KEY: &str = "genir_removed_components";

/// `config.json` key with the constant outputs of mean-ablated removed components (hook point name ->
/// `d_model` floats). Only genir reads it: Hugging Face sees those components' outputs as zero.
pub const REMOVED_MEANS_KEY: &str = "genir_removed_means";

/// What a block attends with: biases and, for the decoder, the encoder output.
pub struct BlockInputs<'t> {
    /// Additive self-attention bias, `[batch or 1, head, q, k]`.
    pub self_bias: Tensor<4>,
    /// What cross-attention reads (the encoder output, or keys/values already in the block's cache) and the
    /// encoder's additive mask `[batch, 1, 1, src]` (decoder only).
    pub cross: Option<(KvSource<'t>, Tensor<4>)>,
    /// Decoder rows grouped by the source they read, when the encoder output, its mask and the
    /// cross-attention keys/values have one row per source rather than per decoder row (beam search).
    pub groups: Option<&'t RowGroups>,
}

impl T5Block {
    /// Runs the block on the residual stream `x: [batch, pos, d_model]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        inputs: &BlockInputs<'_>,
        kv: Option<&mut (KvPair, KvPair)>,
        hooks: &mut Hooks<'_>,
        stack: Stack,
        layer: usize,
    ) -> Result<Tensor<3>, ModelError> {
        let p = |site| HookPoint::block(stack, layer, site);
        let (self_kv, cross_kv) = match kv {
            Some((s, c)) => (Some(s), Some(c)),
            None => (None, None),
        };
        let x = hooks.apply3(p(Site::ResidPre), x)?;
        let at = AttnAt {
            stack,
            layer,
            kind: AttnKind::SelfAttn,
        };
        let a = if self.removed.self_attn {
            self.removed.output(0, &x)
        } else {
            self.self_attn.forward(
                self.ln_self.forward(x.clone()),
                KvSource::Own,
                inputs.self_bias.clone(),
                self_kv,
                hooks,
                at,
            )?
        };
        let a = hooks.apply3(p(Site::SelfAttnOut), a)?;
        let mut x = hooks.apply3(p(Site::ResidMid), x + a)?;
        if let (Some(attn), Some(ln), Some((src, mask))) =
            (&self.cross_attn, &self.ln_cross, &inputs.cross)
        {
            let at = AttnAt {
                stack,
                layer,
                kind: AttnKind::CrossAttn,
            };
            let c = if self.removed.cross_attn {
                self.removed.output(1, &x)
            } else if let Some(groups) = inputs.groups {
                let cache = cross_kv.ok_or_else(|| {
                    ModelError::Input(
                        "decoder rows grouped by source need the decoder state's keys/values"
                            .into(),
                    )
                })?;
                attn.forward_grouped(
                    ln.forward(x.clone()),
                    *src,
                    mask.clone(),
                    cache,
                    groups,
                    hooks,
                    at,
                )?
            } else {
                attn.forward(
                    ln.forward(x.clone()),
                    *src,
                    mask.clone(),
                    cross_kv,
                    hooks,
                    at,
                )?
            };
            let c = hooks.apply3(p(Site::CrossAttnOut), c)?;
            x = hooks.apply3(p(Site::ResidMidCross), x + c)?;
        }
        let m = if self.removed.mlp {
            self.removed.output(2, &x)
        } else {
            self.ff
                .forward(self.ln_ff.forward(x.clone()), hooks, stack, layer)?
        };
        let m = hooks.apply3(p(Site::MlpOut), m)?;
        hooks.apply3(p(Site::ResidPost), x + m)
    }
}

/// An encoder or decoder: blocks and a final norm. Block 0's self-attention holds the relative-position
/// table that every block of the stack uses.
#[derive(Module, Debug)]
pub struct T5Stack {
    /// The blocks.
    pub blocks: Vec<T5Block>,
    /// Final RMS norm.
    pub final_norm: RmsNorm,
}

impl T5Stack {
    fn table(&self) -> Result<Tensor<2>, ModelError> {
        self.blocks
            .first()
            .and_then(|b| b.self_attn.relative_attention_bias.as_ref())
            .map(|p| p.val())
            .ok_or_else(|| ModelError::Input("stack has no relative attention bias table".into()))
    }
}

/// The full model: shared embedding, encoder, decoder, LM head.
#[derive(Module, Debug)]
pub struct T5Model {
    /// Token embeddings shared by both stacks, `[vocab, d_model]`.
    pub shared: Param<Tensor<2>>,
    /// The encoder.
    pub encoder: T5Stack,
    /// The decoder.
    pub decoder: T5Stack,
    /// Separate LM head `[vocab, d_model]` when the config unties it.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: T5Config,
}

/// Encoder and decoder inputs of one batch.
#[derive(Clone, Debug)]
pub struct Seq2SeqInput {
    /// `[batch, src]` token ids.
    pub input_ids: Tensor<2, Int>,
    /// `[batch, src]`, 1 for tokens and 0 for padding.
    pub attention_mask: Tensor<2, Int>,
    /// `[batch, tgt]` decoder input ids (starting with the decoder start id).
    pub decoder_input_ids: Tensor<2, Int>,
}

impl Seq2SeqInput {
    /// Builds a batch from id lists: sources are right-padded with `pad_id`; every decoder row must have
    /// the same length.
    pub fn from_ids(
        sources: &[Vec<u32>],
        decoder: &[Vec<u32>],
        pad_id: u32,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let (input_ids, attention_mask) = pad_batch(sources, pad_id, device)?;
        if decoder.len() != sources.len() {
            return Err(ModelError::Input(format!(
                "{} sources but {} decoder rows",
                sources.len(),
                decoder.len()
            )));
        }
        let t = decoder.first().map_or(0, Vec::len);
        if t == 0 || decoder.iter().any(|d| d.len() != t) {
            return Err(ModelError::Input(
                "decoder rows must be non-empty and of equal length".into(),
            ));
        }
        let flat: Vec<i64> = decoder.iter().flatten().map(|&v| v as i64).collect();
        let decoder_input_ids =
            Tensor::from_data(TensorData::new(flat, [decoder.len(), t]), device);
        Ok(Self {
            input_ids,
            attention_mask,
            decoder_input_ids,
        })
    }
}

/// Right-pads id lists into `([batch, len] ids, [batch, len] mask)`.
pub fn pad_batch(
    rows: &[Vec<u32>],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Int>), ModelError> {
    let len = rows.iter().map(Vec::len).max().unwrap_or(0);
    if rows.is_empty() || len == 0 {
        return Err(ModelError::Input("empty batch or empty sequence".into()));
    }
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut mask = Vec::with_capacity(rows.len() * len);
    for r in rows {
        if r.is_empty() {
            return Err(ModelError::Input("a sequence in the batch is empty".into()));
        }
        for i in 0..len {
            ids.push(r.get(i).map_or(pad_id as i64, |&v| v as i64));
            mask.push(i64::from(i < r.len()));
        }
    }
    let shape = [rows.len(), len];
    Ok((
        Tensor::from_data(TensorData::new(ids, shape), device),
        Tensor::from_data(TensorData::new(mask, shape), device),
    ))
}

/// Decoder keys/values and encoder output kept between generation steps.
///
/// The encoder output, its mask and the cross-attention keys/values stay one row per *source* sequence:
/// [`DecoderState::select`] (beam search) reorders or repeats only the decoder rows' self-attention
/// keys/values and records which source each row reads (`sources`), so the beams of a query share one copy
/// of what the encoder produced instead of copying it at every step.
#[derive(Clone, Debug)]
pub struct DecoderState {
    /// Encoder output `[sources, src, d_model]`.
    pub encoder_out: Tensor<3>,
    /// Additive encoder mask `[sources, 1, 1, src]`.
    pub encoder_bias: Tensor<4>,
    /// Per decoder layer: self-attention keys and values (one row per decoder row) and cross-attention keys
    /// and values (one row per source).
    pub layers: Vec<(KvPair, KvPair)>,
    /// The source each decoder row reads; `None`: row `i` reads source `i`.
    pub sources: Option<Vec<usize>>,
    /// Decoder positions already processed.
    pub past_len: usize,
}

impl DecoderState {
    /// Decoder rows.
    pub fn rows(&self) -> usize {
        self.sources
            .as_ref()
            .map_or(self.encoder_out.dims()[0], Vec::len)
    }

    /// Keeps (and reorders, or repeats) decoder rows: `state.select(&[2, 2, 0])` (beam search). Only the
    /// self-attention keys/values are copied; the rows keep reading their sources' encoder output.
    pub fn select(&self, rows: &[usize]) -> Self {
        let device = self.encoder_out.device();
        let sources = rows
            .iter()
            .map(|&r| self.sources.as_ref().map_or(r, |s| s[r]))
            .collect();
        let idx = index_tensor(rows, &device);
        Self {
            encoder_out: self.encoder_out.clone(),
            encoder_bias: self.encoder_bias.clone(),
            layers: self
                .layers
                .iter()
                .map(|(s, c)| (s.select(&idx), c.clone()))
                .collect(),
            sources: Some(sources),
            past_len: self.past_len,
        }
    }

    /// The same state with the encoder output, its mask and the cross-attention keys/values repeated to one
    /// row per decoder row (what a hooked decoding step reads, so every hook point has the decoder's batch).
    pub fn expanded(&self) -> Self {
        let Some(sources) = &self.sources else {
            return self.clone();
        };
        let idx = index_tensor(sources, &self.encoder_out.device());
        Self {
            encoder_out: self.encoder_out.clone().select(0, idx.clone()),
            encoder_bias: self.encoder_bias.clone().select(0, idx.clone()),
            layers: self
                .layers
                .iter()
                .map(|(s, c)| (s.clone(), c.select(&idx)))
                .collect(),
            sources: None,
            past_len: self.past_len,
        }
    }
}

fn mask_bias(mask: Tensor<2, Int>) -> Tensor<4> {
    let [b, s] = mask.dims();
    let keep = mask.float();
    (keep.neg().add_scalar(1.0) * MASK_VALUE).reshape([b, 1, 1, s])
}

/// Causal (and optional padding) mask `[batch or 1, 1, q_len, past + q_len]`.
fn causal_bias(
    past: usize,
    q_len: usize,
    pad: Option<&[i64]>,
    batch: usize,
    device: &Device,
) -> Tensor<4> {
    let k_len = past + q_len;
    let rows = if pad.is_some() { batch } else { 1 };
    let mut v = vec![0f32; rows * q_len * k_len];
    for b in 0..rows {
        for i in 0..q_len {
            for j in 0..k_len {
                let future = j > past + i;
                let padded = pad.is_some_and(|p| p[b * k_len + j] == 0);
                if future || padded {
                    v[(b * q_len + i) * k_len + j] = MASK_VALUE;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [rows, 1, q_len, k_len]), device)
}

impl T5Model {
    /// Builds a model from a config and named Hugging Face tensors, checking every shape.
    pub fn from_weights(
        config: T5Config,
        w: &mut WeightFile,
        device: &Device,
    ) -> Result<Self, ModelError> {
        config.check().map_err(|message| ModelError::Config {
            path: w.path().with_file_name("config.json"),
            message,
        })?;
        let c = &config;
        let (d, inner, ff, vocab) = (c.d_model, c.inner_dim(), c.d_ff, c.vocab_size);
        let act = ActKind(c.activation().map_err(|message| ModelError::Config {
            path: w.path().with_file_name("config.json"),
            message,
        })?);
        let shared = w.take_any(
            &["shared.weight", "encoder.embed_tokens.weight"],
            &[vocab, d],
        )?;
        let norm = |w: &mut WeightFile, name: &str| -> Result<RmsNorm, ModelError> {
            Ok(RmsNorm {
                weight: param1(w.take(name, &[d])?, device),
                eps: c.layer_norm_epsilon,
            })
        };
        // Hugging Face stores linear weights as [out, in]; genir keeps [in, out] for `x @ w`.
        let lin = |w: &mut WeightFile, name: &str, out: usize, inp: usize| {
            w.take(name, &[out, inp])
                .map(|t| param2(t.transposed(), device))
        };
        let attn = |w: &mut WeightFile, pre: &str, rel: bool| -> Result<T5Attention, ModelError> {
            Ok(T5Attention {
                q: lin(w, &format!("{pre}.q.weight"), inner, d)?,
                k: lin(w, &format!("{pre}.k.weight"), inner, d)?,
                v: lin(w, &format!("{pre}.v.weight"), inner, d)?,
                o: lin(w, &format!("{pre}.o.weight"), d, inner)?,
                relative_attention_bias: if rel {
                    Some(param2(
                        w.take(
                            &format!("{pre}.relative_attention_bias.weight"),
                            &[c.relative_attention_num_buckets, c.num_heads],
                        )?,
                        device,
                    ))
                } else {
                    None
                },
                n_heads: c.num_heads,
                d_kv: c.d_kv,
            })
        };
        let ffn = |w: &mut WeightFile, pre: &str| -> Result<FeedForward, ModelError> {
            let (wi, wi_1) = if c.gated() {
                (
                    lin(w, &format!("{pre}.wi_0.weight"), ff, d)?,
                    Some(lin(w, &format!("{pre}.wi_1.weight"), ff, d)?),
                )
            } else {
                (lin(w, &format!("{pre}.wi.weight"), ff, d)?, None)
            };
            Ok(FeedForward {
                wi,
                wi_1,
                wo: lin(w, &format!("{pre}.wo.weight"), d, ff)?,
                act,
            })
        };
        let mut enc_blocks = Vec::new();
        for l in 0..c.num_layers {
            let pre = format!("encoder.block.{l}.layer");
            enc_blocks.push(T5Block {
                ln_self: norm(w, &format!("{pre}.0.layer_norm.weight"))?,
                self_attn: attn(w, &format!("{pre}.0.SelfAttention"), l == 0)?,
                ln_cross: None,
                cross_attn: None,
                ln_ff: norm(w, &format!("{pre}.1.layer_norm.weight"))?,
                ff: ffn(w, &format!("{pre}.1.DenseReluDense"))?,
                removed: Removed::default(),
            });
        }
        let mut dec_blocks = Vec::new();
        for l in 0..c.decoder_layers() {
            let pre = format!("decoder.block.{l}.layer");
            dec_blocks.push(T5Block {
                ln_self: norm(w, &format!("{pre}.0.layer_norm.weight"))?,
                self_attn: attn(w, &format!("{pre}.0.SelfAttention"), l == 0)?,
                ln_cross: Some(norm(w, &format!("{pre}.1.layer_norm.weight"))?),
                cross_attn: Some(attn(w, &format!("{pre}.1.EncDecAttention"), false)?),
                ln_ff: norm(w, &format!("{pre}.2.layer_norm.weight"))?,
                ff: ffn(w, &format!("{pre}.2.DenseReluDense"))?,
                removed: Removed::default(),
            });
        }
        let encoder = T5Stack {
            blocks: enc_blocks,
            final_norm: norm(w, "encoder.final_layer_norm.weight")?,
        };
        let decoder = T5Stack {
            blocks: dec_blocks,
            final_norm: norm(w, "decoder.final_layer_norm.weight")?,
        };
        let lm_head = if c.tied_head() {
            None
        } else {
            Some(param2(w.take("lm_head.weight", &[vocab, d])?, device))
        };
        // Copies of the shared embedding that Hugging Face may also store.
        for alias in [
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "lm_head.weight",
        ] {
            if w.contains(alias) && (alias != "lm_head.weight" || c.tied_head()) {
                let _ = w.take(alias, &[vocab, d]);
            }
        }
        let unused = w.unused();
        if !unused.is_empty() {
            tracing::warn!(file = %w.path().display(), ?unused, "tensors not used by the T5 model");
        }
        let mut model = Self {
            shared: param2(shared, device),
            encoder,
            decoder,
            lm_head,
            config,
        };
        // components removed before saving stay removed (their output weights were saved as zeros)
        // read before `remove_components`, which drops the means of the components it removes
        let saved_means = model.config.extra.get(REMOVED_MEANS_KEY).cloned();
        if let Some(list) = model.config.extra.get(REMOVED_KEY).cloned() {
            let names: Vec<String> = serde_json::from_value(list).map_err(|e| {
                ModelError::Input(format!(
                    "config.json field {REMOVED_KEY}: expected a list of hook point names: {e}"
                ))
            })?;
            let points = names
                .iter()
                .map(|n| n.parse::<HookPoint>())
                .collect::<Result<Vec<_>, _>>()?;
            model = model.remove_components(&points)?;
        }
        if let Some(map) = saved_means {
            let means: std::collections::BTreeMap<String, Vec<f32>> = serde_json::from_value(map)
                .map_err(|e| {
                    ModelError::Input(format!(
                        "config.json field {REMOVED_MEANS_KEY}: expected hook point names with d_model floats: {e}"
                    ))
                })?;
            let means = means
                .into_iter()
                .map(|(n, v)| Ok((n.parse::<HookPoint>()?, v)))
                .collect::<Result<Vec<_>, ModelError>>()?;
            model = model.replace_components_with_means(&means)?;
        }
        Ok(model.with_stable_param_ids())
    }

    /// Mean ablation baked into the model: removes the components (as [`Self::remove_components`]) and makes
    /// each one's output the given constant vector (`d_model` floats, e.g. its mean output over reference
    /// queries). The vectors are kept in `config.json` ([`REMOVED_MEANS_KEY`]), so a reload in genir computes
    /// the same; Hugging Face, which does not read that field, sees zero outputs there.
    pub fn replace_components_with_means(
        self,
        means: &[(HookPoint, Vec<f32>)],
    ) -> Result<Self, ModelError> {
        let d = self.config.d_model;
        if let Some((p, v)) = means.iter().find(|(_, v)| v.len() != d) {
            return Err(ModelError::Input(format!(
                "mean output of {p}: {} values, but d_model is {d}",
                v.len()
            )));
        }
        let points: Vec<HookPoint> = means.iter().map(|(p, _)| *p).collect();
        let mut model = self.remove_components(&points)?;
        let device = model.shared.val().device();
        let mut saved: serde_json::Map<String, serde_json::Value> = model
            .config
            .extra
            .get(REMOVED_MEANS_KEY)
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        for (p, v) in means {
            let stack = match p.stack {
                Stack::Encoder => &mut model.encoder,
                Stack::Decoder => &mut model.decoder,
            };
            // remove_components checked the layer and the site
            let block = &mut stack.blocks[p.layer.unwrap_or_default()];
            let which = match p.site {
                Site::SelfAttnOut => 0,
                Site::CrossAttnOut => 1,
                _ => 2,
            };
            block.removed.means[which] =
                Some(Tensor::from_data(TensorData::new(v.clone(), [d]), &device));
            saved.insert(p.to_string(), serde_json::Value::from(v.clone()));
        }
        model
            .config
            .extra
            .insert(REMOVED_MEANS_KEY.into(), serde_json::Value::Object(saved));
        Ok(model)
    }

    /// Removes whole components, given by their output hook points (`{encoder,decoder}.blocks.{l}.hook_
    /// {self_attn,cross_attn,mlp}_out`): the blocks skip them (less work per forward pass), their output
    /// projections are set to zero (so the saved model, also loaded by Hugging Face, computes the same), and
    /// the list is kept in `config.json` ([`REMOVED_KEY`]) so that a reload keeps them removed. Equal to
    /// zero-ablating those points, also where one was replaced by its mean before (the mean is dropped).
    pub fn remove_components(mut self, points: &[HookPoint]) -> Result<Self, ModelError> {
        let bad = |p: &HookPoint| {
            ModelError::Input(format!(
                "cannot remove {p}: only a block's hook_self_attn_out, hook_cross_attn_out or hook_mlp_out names a removable component"
            ))
        };
        for p in points {
            let l = p.layer.ok_or_else(|| bad(p))?;
            let stack = match p.stack {
                Stack::Encoder => &mut self.encoder,
                Stack::Decoder => &mut self.decoder,
            };
            let n = stack.blocks.len();
            let block = stack.blocks.get_mut(l).ok_or_else(|| {
                ModelError::Input(format!("cannot remove {p}: the stack has {n} blocks"))
            })?;
            let zero = |w: &Param<Tensor<2>>| {
                let v = w.val();
                Param::initialized(w.id, v.zeros_like())
            };
            let which = match p.site {
                Site::SelfAttnOut => {
                    block.self_attn.o = zero(&block.self_attn.o);
                    block.removed.self_attn = true;
                    0
                }
                Site::CrossAttnOut => {
                    let a = block.cross_attn.as_mut().ok_or_else(|| bad(p))?;
                    a.o = zero(&a.o);
                    block.removed.cross_attn = true;
                    1
                }
                Site::MlpOut => {
                    block.ff.wo = zero(&block.ff.wo);
                    block.removed.mlp = true;
                    2
                }
                _ => return Err(bad(p)),
            };
            // a component replaced by its mean before outputs zero now
            block.removed.means[which] = None;
            if let Some(saved) = self
                .config
                .extra
                .get_mut(REMOVED_MEANS_KEY)
                .and_then(|v| v.as_object_mut())
            {
                saved.remove(&p.to_string());
            }
        }
        let mut names: Vec<String> = self
            .config
            .extra
            .get(REMOVED_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        for p in points {
            let n = p.to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        self.config
            .extra
            .insert(REMOVED_KEY.into(), serde_json::Value::from(names));
        Ok(self)
    }

    /// The removed components (output hook points), in the order they were removed.
    pub fn removed_components(&self) -> Vec<String> {
        self.config
            .extra
            .get(REMOVED_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Numbers the parameters `1..` in module order, so that two loads of the same architecture give
    /// every parameter the same [`ParamId`](burn::module::ParamId) (optimizer state saved for one load
    /// then applies to the other: that is how training resumes from a checkpoint).
    pub fn with_stable_param_ids(self) -> Self {
        struct Numbering(u64);
        impl burn::module::ModuleMapper for Numbering {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                self.0 += 1;
                let (_, value, mapper) = param.consume();
                Param::from_mapped_value(burn::module::ParamId::from(self.0), value, mapper)
            }
        }
        self.map(&mut Numbering(0))
    }

    /// Loads a Hugging Face folder: `config.json` and `model.safetensors` (or `pytorch_model.bin`).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = T5Config::from_file(&dir.join("config.json"))?;
        let mut weights = WeightFile::from_dir(dir)?;
        Self::from_weights(config, &mut weights, device)
    }

    /// A randomly initialised model, deterministic for a seed, with Hugging Face's T5 initialisation
    /// (normal with the fan-in scalings of `T5PreTrainedModel._init_weights`, norms at 1).
    pub fn init(config: T5Config, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let tensors = init_tensors(&config, seed);
        let mut w = WeightFile::from_tensors("<random init>", tensors.into_iter().collect());
        Self::from_weights(config, &mut w, device)
    }

    /// The same model with `new_vocab` embedding (and head) rows: existing rows are kept, new rows are drawn
    /// from a normal distribution with the existing table's standard deviation (seeded). Used to add docid
    /// tokens to a pretrained model.
    pub fn resize_vocab(&self, new_vocab: usize, seed: u64) -> Result<Self, ModelError> {
        let old = self.config.vocab_size;
        if new_vocab < old {
            return Err(ModelError::Input(format!(
                "cannot shrink the vocabulary from {old} to {new_vocab} rows"
            )));
        }
        let device = self.shared.val().device();
        let mut tensors = self.to_hf_tensors()?;
        let mut rng = StdRng::seed_from_u64(seed);
        for name in ["shared.weight", "lm_head.weight"] {
            if let Some(t) = tensors.get_mut(name) {
                let d = t.shape[1];
                let n = t.values.len() as f64;
                let mean = t.values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = t
                    .values
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n;
                let dist = Normal::new(0.0, var.sqrt().max(1e-6))
                    .map_err(|e| ModelError::Input(e.to_string()))?;
                t.values
                    .extend((0..(new_vocab - old) * d).map(|_| dist.sample(&mut rng) as f32));
                t.shape[0] = new_vocab;
            }
        }
        let mut config = self.config.clone();
        config.vocab_size = new_vocab;
        let mut w = WeightFile::from_tensors("<resized model>", tensors.into_iter().collect());
        Self::from_weights(config, &mut w, &device)
    }

    /// The model's tensors under their Hugging Face names and layouts.
    pub fn to_hf_tensors(&self) -> Result<BTreeMap<String, HostTensor>, ModelError> {
        let mut out = BTreeMap::new();
        out.insert("shared.weight".to_string(), host2(&self.shared)?);
        for (stack, name) in [(&self.encoder, "encoder"), (&self.decoder, "decoder")] {
            for (l, b) in stack.blocks.iter().enumerate() {
                let pre = format!("{name}.block.{l}.layer");
                let mut put = |k: String, t: HostTensor| {
                    out.insert(k, t);
                };
                put(
                    format!("{pre}.0.layer_norm.weight"),
                    host1(&b.ln_self.weight)?,
                );
                let mut attn = |a: &T5Attention, p: String| -> Result<(), ModelError> {
                    for (n, w) in [("q", &a.q), ("k", &a.k), ("v", &a.v), ("o", &a.o)] {
                        put(format!("{p}.{n}.weight"), host2(w)?.transposed());
                    }
                    if let Some(r) = &a.relative_attention_bias {
                        put(format!("{p}.relative_attention_bias.weight"), host2(r)?);
                    }
                    Ok(())
                };
                attn(&b.self_attn, format!("{pre}.0.SelfAttention"))?;
                let ff_idx = if let (Some(ca), Some(ln)) = (&b.cross_attn, &b.ln_cross) {
                    attn(ca, format!("{pre}.1.EncDecAttention"))?;
                    put(format!("{pre}.1.layer_norm.weight"), host1(&ln.weight)?);
                    2
                } else {
                    1
                };
                put(
                    format!("{pre}.{ff_idx}.layer_norm.weight"),
                    host1(&b.ln_ff.weight)?,
                );
                let ffp = format!("{pre}.{ff_idx}.DenseReluDense");
                match &b.ff.wi_1 {
                    Some(w1) => {
                        put(format!("{ffp}.wi_0.weight"), host2(&b.ff.wi)?.transposed());
                        put(format!("{ffp}.wi_1.weight"), host2(w1)?.transposed());
                    }
                    None => put(format!("{ffp}.wi.weight"), host2(&b.ff.wi)?.transposed()),
                }
                put(format!("{ffp}.wo.weight"), host2(&b.ff.wo)?.transposed());
            }
            out.insert(
                format!("{name}.final_layer_norm.weight"),
                host1(&stack.final_norm.weight)?,
            );
        }
        if let Some(h) = &self.lm_head {
            out.insert("lm_head.weight".to_string(), host2(h)?);
        }
        Ok(out)
    }

    /// Saves `config.json` and `model.safetensors` in Hugging Face layout (atomic writes), so the folder
    /// opens with `T5ForConditionalGeneration.from_pretrained`.
    pub fn save_pretrained(&self, dir: &Path) -> Result<(), ModelError> {
        let mut cfg = serde_json::to_value(&self.config).map_err(|e| ModelError::Config {
            path: dir.join("config.json"),
            message: e.to_string(),
        })?;
        if let Some(obj) = cfg.as_object_mut() {
            obj.entry("model_type").or_insert("t5".into());
            obj.entry("architectures")
                .or_insert(serde_json::json!(["T5ForConditionalGeneration"]));
            obj.insert("tie_word_embeddings".into(), self.config.tied_head().into());
            obj.entry("is_encoder_decoder").or_insert(true.into());
        }
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::Config {
            path: dir.join("config.json"),
            message: e.to_string(),
        })?;
        write_atomic(&dir.join("config.json"), text.as_bytes())?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        write_safetensors(
            &dir.join("model.safetensors"),
            &self.to_hf_tensors()?,
            Some(meta),
        )
    }

    /// Embeds `ids: [batch, len]` with the shared table.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let d = self.config.d_model;
        self.shared
            .val()
            .select(0, ids.reshape([b * s]))
            .reshape([b, s, d])
    }

    fn check_hooks(&self, hooks: &Hooks<'_>) -> Result<(), ModelError> {
        if hooks.is_active() {
            hooks.validate(self.encoder.blocks.len(), self.decoder.blocks.len())?;
        }
        Ok(())
    }

    /// Encoder output after its final norm, `[batch, src, d_model]`.
    pub fn encode(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.check_hooks(hooks)?;
        let s = input_ids.dims()[1];
        let x = hooks.apply3(HookPoint::embed(Stack::Encoder), self.embed(input_ids))?;
        let bias = position_bias(
            &self.encoder.table()?,
            0,
            s,
            s,
            true,
            self.config.relative_attention_max_distance,
        ) + mask_bias(attention_mask);
        self.encode_from(x, 0, bias, hooks)
    }

    /// Runs encoder blocks `start..` on a residual stream and applies the final norm (for patching sweeps
    /// that resume from a cached layer). `bias` is the full additive self-attention bias.
    pub fn encode_from(
        &self,
        mut x: Tensor<3>,
        start: usize,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        let inputs = BlockInputs {
            self_bias: bias,
            cross: None,
            groups: None,
        };
        for (l, block) in self.encoder.blocks.iter().enumerate().skip(start) {
            x = block.forward(x, &inputs, None, hooks, Stack::Encoder, l)?;
        }
        let x = self.encoder.final_norm.forward(x);
        hooks.apply3(HookPoint::final_norm(Stack::Encoder), x)
    }

    /// Starts incremental decoding over an encoder output.
    pub fn start_decoding(
        &self,
        encoder_out: Tensor<3>,
        attention_mask: Tensor<2, Int>,
    ) -> DecoderState {
        DecoderState {
            encoder_out,
            encoder_bias: mask_bias(attention_mask),
            layers: vec![Default::default(); self.decoder.blocks.len()],
            sources: None,
            past_len: 0,
        }
    }

    /// Feeds `ids: [batch, n]` new decoder tokens, reusing cached keys/values; returns their logits
    /// `[batch, n, vocab]`. Equal to the full forward on the whole prefix.
    pub fn decode_step(
        &self,
        state: &mut DecoderState,
        ids: Tensor<2, Int>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.check_hooks(hooks)?;
        let [b, n] = ids.dims();
        if b != state.rows() {
            return Err(ModelError::Input(format!(
                "decode_step: {b} rows of decoder ids for a decoder state of {} rows",
                state.rows()
            )));
        }
        let device = ids.device();
        // hooked steps see one row per decoder row; a state without rows has nothing to group
        if state.sources.is_some() && (hooks.is_active() || b == 0) {
            *state = state.expanded();
        }
        let groups = match &state.sources {
            Some(s) => Some(RowGroups::new(s, state.encoder_out.dims()[0], &device)?),
            None => None,
        };
        let past = state.past_len;
        let self_bias = position_bias(
            &self.decoder.table()?,
            past,
            n,
            past + n,
            false,
            self.config.relative_attention_max_distance,
        ) + causal_bias(past, n, None, b, &device);
        let x = hooks.apply3(HookPoint::embed(Stack::Decoder), self.embed(ids))?;
        let enc = state.encoder_out.clone();
        let inputs = BlockInputs {
            self_bias,
            cross: Some((KvSource::Other(&enc), state.encoder_bias.clone())),
            groups: groups.as_ref(),
        };
        let mut x = x;
        for (l, block) in self.decoder.blocks.iter().enumerate() {
            x = block.forward(
                x,
                &inputs,
                Some(&mut state.layers[l]),
                hooks,
                Stack::Decoder,
                l,
            )?;
        }
        state.past_len += n;
        let h = self.decoder.final_norm.forward(x);
        let h = hooks.apply3(HookPoint::final_norm(Stack::Decoder), h)?;
        Ok(self.lm_logits(h))
    }

    /// Decoder over a whole target prefix: logits `[batch, tgt, vocab]`. `decoder_mask` (`[batch, tgt]`,
    /// 1 = token) masks right-padded decoder rows.
    pub fn decode(
        &self,
        encoder_out: &Tensor<3>,
        attention_mask: Tensor<2, Int>,
        decoder_input_ids: Tensor<2, Int>,
        decoder_mask: Option<Tensor<2, Int>>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        let h = self.decode_hidden(
            encoder_out,
            attention_mask,
            decoder_input_ids,
            decoder_mask,
            hooks,
        )?;
        Ok(self.lm_logits(h))
    }

    /// Decoder output after the final norm (before scaling and the head), `[batch, tgt, d_model]`.
    pub fn decode_hidden(
        &self,
        encoder_out: &Tensor<3>,
        attention_mask: Tensor<2, Int>,
        decoder_input_ids: Tensor<2, Int>,
        decoder_mask: Option<Tensor<2, Int>>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.check_hooks(hooks)?;
        let [b, t] = decoder_input_ids.dims();
        let device = decoder_input_ids.device();
        let pad = match decoder_mask {
            Some(m) => Some(
                m.try_into_vec_as::<i64>()
                    .map_err(|e| ModelError::Tensor(format!("{e:?}")))?,
            ),
            None => None,
        };
        let self_bias = position_bias(
            &self.decoder.table()?,
            0,
            t,
            t,
            false,
            self.config.relative_attention_max_distance,
        ) + causal_bias(0, t, pad.as_deref(), b, &device);
        let x = hooks.apply3(
            HookPoint::embed(Stack::Decoder),
            self.embed(decoder_input_ids),
        )?;
        self.decode_from(
            x,
            0,
            self_bias,
            encoder_out,
            mask_bias(attention_mask),
            hooks,
        )
    }

    /// Runs decoder blocks `start..` on a residual stream and applies the final norm (for sweeps that
    /// resume from a cached layer).
    pub fn decode_from(
        &self,
        mut x: Tensor<3>,
        start: usize,
        self_bias: Tensor<4>,
        encoder_out: &Tensor<3>,
        encoder_bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        let inputs = BlockInputs {
            self_bias,
            cross: Some((KvSource::Other(encoder_out), encoder_bias)),
            groups: None,
        };
        for (l, block) in self.decoder.blocks.iter().enumerate().skip(start) {
            x = block.forward(x, &inputs, None, hooks, Stack::Decoder, l)?;
        }
        let h = self.decoder.final_norm.forward(x);
        hooks.apply3(HookPoint::final_norm(Stack::Decoder), h)
    }

    /// Cross-attention keys and values of every decoder layer over `encoder_out` (`[batch, src, d_model]`),
    /// for [`T5Model::decode_from_kv`]: computing them once and repeating them along the batch is what lets a
    /// patching sweep run many decoder variants of one encoder output cheaply.
    pub fn cross_kv(&self, encoder_out: &Tensor<3>) -> Vec<KvPair> {
        self.decoder
            .blocks
            .iter()
            .map(|b| {
                b.cross_attn
                    .as_ref()
                    .map(|a| a.project_kv(encoder_out.clone()))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Additive self-attention bias of a decoder over `t` positions (relative positions + causal mask),
    /// `[1, head, t, t]`, as [`T5Model::decode_hidden`] builds it for unpadded rows.
    pub fn decoder_self_bias(&self, t: usize, device: &Device) -> Result<Tensor<4>, ModelError> {
        Ok(position_bias(
            &self.decoder.table()?,
            0,
            t,
            t,
            false,
            self.config.relative_attention_max_distance,
        ) + causal_bias(0, t, None, 1, device))
    }

    /// Additive encoder mask `[batch, 1, 1, src]` from an attention mask (1 = token).
    pub fn encoder_bias(&self, attention_mask: Tensor<2, Int>) -> Tensor<4> {
        mask_bias(attention_mask)
    }

    /// Like [`T5Model::decode_from`] (decoder blocks `start..` on the residual stream `x`, then the final
    /// norm), with the cross-attention keys/values of every layer given (from [`T5Model::cross_kv`], batch
    /// equal to `x`'s). The cross-attention `hook_k` / `hook_v` points do not fire (nothing computes them).
    pub fn decode_from_kv(
        &self,
        mut x: Tensor<3>,
        start: usize,
        self_bias: Tensor<4>,
        cross: &[KvPair],
        encoder_bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.check_hooks(hooks)?;
        let layers = self.decoder.blocks.len();
        if cross.len() != layers || start > layers {
            return Err(ModelError::Input(format!(
                "decode_from_kv: {} cross-attention key/value sets and start layer {start} for a decoder of {layers} layers",
                cross.len()
            )));
        }
        for (l, kv) in cross.iter().enumerate().skip(start) {
            for t in [&kv.k, &kv.v].into_iter().flatten() {
                let b = t.dims()[0];
                if x.dims()[0] != b {
                    return Err(ModelError::Input(format!(
                        "decode_from_kv: residual stream batch {} but layer {l}'s cross-attention keys/values batch {b}",
                        x.dims()[0]
                    )));
                }
            }
        }
        let inputs = BlockInputs {
            self_bias,
            cross: Some((KvSource::Cached, encoder_bias)),
            groups: None,
        };
        for (l, block) in self.decoder.blocks.iter().enumerate().skip(start) {
            let mut kv = (KvPair::default(), cross[l].clone());
            x = block.forward(x, &inputs, Some(&mut kv), hooks, Stack::Decoder, l)?;
        }
        let h = self.decoder.final_norm.forward(x);
        hooks.apply3(HookPoint::final_norm(Stack::Decoder), h)
    }

    /// The LM head's input scaling: `d_model^-0.5` when the model scales decoder outputs, else 1.
    pub fn output_scale(&self) -> f32 {
        if self.config.scales_decoder_output() {
            (self.config.d_model as f32).powf(-0.5)
        } else {
            1.0
        }
    }

    /// The unembedding matrix `[vocab, d_model]` (the shared table when tied).
    pub fn unembed(&self) -> Tensor<2> {
        self.lm_head
            .as_ref()
            .map_or_else(|| self.shared.val(), |h| h.val())
    }

    /// Logits from a final-normed decoder state `[batch, pos, d_model] -> [batch, pos, vocab]`.
    pub fn lm_logits(&self, h: Tensor<3>) -> Tensor<3> {
        let scale = self.output_scale();
        let h = if scale != 1.0 { h * scale } else { h };
        linear(h, &self.unembed().transpose())
    }

    /// Encoder output for a batch's sources, `[batch, src, d_model]`.
    pub fn encode_input(
        &self,
        input: &Seq2SeqInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.encode(input.input_ids.clone(), input.attention_mask.clone(), hooks)
    }

    /// Full forward pass: logits `[batch, tgt, vocab]`.
    pub fn forward(
        &self,
        input: &Seq2SeqInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        let enc = self.encode_input(input, hooks)?;
        self.decode(
            &enc,
            input.attention_mask.clone(),
            input.decoder_input_ids.clone(),
            None,
            hooks,
        )
    }

    /// Forward pass recording every hook point selected by `filter`.
    pub fn run_with_cache(
        &self,
        input: &Seq2SeqInput,
        filter: HookFilter,
    ) -> Result<(Tensor<3>, ActivationCache), ModelError> {
        let mut hooks = Hooks::caching(filter);
        let logits = self.forward(input, &mut hooks)?;
        Ok((logits, hooks.take_cache()))
    }

    /// Number of (encoder, decoder) blocks.
    pub fn depth(&self) -> (usize, usize) {
        (self.encoder.blocks.len(), self.decoder.blocks.len())
    }
}

fn init_tensors(c: &T5Config, seed: u64) -> Vec<(String, HostTensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = |shape: Vec<usize>, std: f64| -> HostTensor {
        let n: usize = shape.iter().product();
        let dist =
            Normal::new(0.0, std).unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
        HostTensor::new(
            shape,
            (0..n).map(|_| dist.sample(&mut rng) as f32).collect(),
        )
    };
    let ones = |n: usize| HostTensor::new(vec![n], vec![1.0; n]);
    let (d, inner, ff, v) = (c.d_model, c.inner_dim(), c.d_ff, c.vocab_size);
    let (df, ff_f, kv_f) = (d as f64, ff as f64, c.d_kv as f64);
    let mut out = vec![("shared.weight".to_string(), normal(vec![v, d], 1.0))];
    for (stack, layers) in [("encoder", c.num_layers), ("decoder", c.decoder_layers())] {
        for l in 0..layers {
            let pre = format!("{stack}.block.{l}.layer");
            let mut attn = |p: String, rel: bool, out: &mut Vec<(String, HostTensor)>| {
                out.push((
                    format!("{p}.q.weight"),
                    normal(vec![inner, d], (df * kv_f).powf(-0.5)),
                ));
                out.push((
                    format!("{p}.k.weight"),
                    normal(vec![inner, d], df.powf(-0.5)),
                ));
                out.push((
                    format!("{p}.v.weight"),
                    normal(vec![inner, d], df.powf(-0.5)),
                ));
                out.push((
                    format!("{p}.o.weight"),
                    normal(vec![d, inner], (inner as f64).powf(-0.5)),
                ));
                if rel {
                    out.push((
                        format!("{p}.relative_attention_bias.weight"),
                        normal(
                            vec![c.relative_attention_num_buckets, c.num_heads],
                            df.powf(-0.5),
                        ),
                    ));
                }
            };
            attn(format!("{pre}.0.SelfAttention"), l == 0, &mut out);
            out.push((format!("{pre}.0.layer_norm.weight"), ones(d)));
            let ff_idx = if stack == "decoder" {
                attn(format!("{pre}.1.EncDecAttention"), false, &mut out);
                out.push((format!("{pre}.1.layer_norm.weight"), ones(d)));
                2
            } else {
                1
            };
            let fp = format!("{pre}.{ff_idx}.DenseReluDense");
            if c.gated() {
                out.push((
                    format!("{fp}.wi_0.weight"),
                    normal(vec![ff, d], df.powf(-0.5)),
                ));
                out.push((
                    format!("{fp}.wi_1.weight"),
                    normal(vec![ff, d], df.powf(-0.5)),
                ));
            } else {
                out.push((
                    format!("{fp}.wi.weight"),
                    normal(vec![ff, d], df.powf(-0.5)),
                ));
            }
            out.push((
                format!("{fp}.wo.weight"),
                normal(vec![d, ff], ff_f.powf(-0.5)),
            ));
            out.push((format!("{pre}.{ff_idx}.layer_norm.weight"), ones(d)));
        }
        out.push((format!("{stack}.final_layer_norm.weight"), ones(d)));
    }
    if !c.tied_head() {
        out.push(("lm_head.weight".to_string(), normal(vec![v, d], 1.0)));
    }
    out
}
