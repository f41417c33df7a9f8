//! BERT building blocks: biased linear maps, layer norm, self-attention, post-LN blocks, embeddings.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::ModelError;
use crate::hooks::{AttnKind, AttnSite, HookPoint, Hooks, Site, Stack};
use crate::t5::Activation;
use crate::weights::{HostTensor, WeightFile};

pub(crate) fn param1(t: HostTensor, device: &Device) -> Param<Tensor<1>> {
    let n = t.values.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(t.values, [n]), device))
}

pub(crate) fn param2(t: HostTensor, device: &Device) -> Param<Tensor<2>> {
    let shape = [t.shape[0], t.shape[1]];
    Param::from_tensor(Tensor::from_data(TensorData::new(t.values, shape), device))
}

/// `x @ w + b`, with `w` stored `[in, out]` (Hugging Face's `nn.Linear` weight transposed).
#[derive(Module, Debug)]
pub struct Linear {
    /// `[d_in, d_out]`.
    pub weight: Param<Tensor<2>>,
    /// `[d_out]`.
    pub bias: Param<Tensor<1>>,
}

impl Linear {
    /// Takes `{name}.weight` (`[out, in]` in the file) and `{name}.bias` (`[out]`).
    pub(crate) fn load(
        w: &mut WeightFile,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let weight = w.take(&format!("{name}.weight"), &[d_out, d_in])?;
        let bias = w.take(&format!("{name}.bias"), &[d_out])?;
        Ok(Self {
            weight: param2(weight.transposed(), device),
            bias: param1(bias, device),
        })
    }

    /// `[batch, pos, d_in] -> [batch, pos, d_out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::fastmath::linear(x, &self.weight.val(), Some(&self.bias.val()))
    }

    /// `[batch, d_in] -> [batch, d_out]`.
    pub fn forward2(&self, x: Tensor<2>) -> Tensor<2> {
        crate::fastmath::linear(x, &self.weight.val(), Some(&self.bias.val()))
    }
}

/// Layer norm over the last axis, with gain and bias (PyTorch `nn.LayerNorm`).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// `[d]` gain.
    pub weight: Param<Tensor<1>>,
    /// `[d]` bias.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// Takes `{name}.weight`/`{name}.bias` (or the TF-era `{name}.gamma`/`{name}.beta`).
    pub(crate) fn load(
        w: &mut WeightFile,
        name: &str,
        d: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let weight = w.take_any(&[&format!("{name}.weight"), &format!("{name}.gamma")], &[d])?;
        let bias = w.take_any(&[&format!("{name}.bias"), &format!("{name}.beta")], &[d])?;
        Ok(Self {
            weight: param1(weight, device),
            bias: param1(bias, device),
            eps,
        })
    }

    /// `[batch, pos, d] -> [batch, pos, d]`: `(x - mean) / sqrt(var + eps) * weight + bias`, biased variance.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::fastmath::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// BERT self-attention: biased q/k/v/output projections, scores scaled by `1/sqrt(d_head)`.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// Query projection (`attention.self.query`, DistilBERT `q_lin`).
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection (`attention.output.dense`, DistilBERT `out_lin`).
    pub o: Linear,
    /// Heads.
    #[module(skip)]
    pub n_heads: usize,
    /// Width per head.
    #[module(skip)]
    pub d_head: usize,
}

impl BertAttention {
    fn heads(&self, x: Tensor<3>, lin: &Linear) -> Tensor<4> {
        let [b, s, _] = x.dims();
        lin.forward(x).reshape([b, s, self.n_heads, self.d_head])
    }

    /// Self-attention of `x: [batch, pos, hidden]` with an additive `bias` broadcastable to
    /// `[batch, head, q, k]` (the padding mask); returns the output projection, `[batch, pos, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
        layer: usize,
    ) -> Result<Tensor<3>, ModelError> {
        self.attend(x, bias, hooks, layer, None)
    }

    /// Attention of every position, its output projection for the first `rows` positions only when given.
    fn attend(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
        layer: usize,
        rows: Option<usize>,
    ) -> Result<Tensor<3>, ModelError> {
        let p = |site| HookPoint::attn(Stack::Encoder, layer, AttnKind::SelfAttn, site);
        let [b, s, _] = x.dims();
        let leading = |z: Tensor<3>| match rows {
            Some(r) => z.slice([0..b, 0..r, 0..self.n_heads * self.d_head]),
            None => z,
        };
        let q = hooks.apply4(p(AttnSite::Q), self.heads(x.clone(), &self.q))?;
        let k = hooks.apply4(p(AttnSite::K), self.heads(x.clone(), &self.k))?;
        let v = hooks.apply4(p(AttnSite::V), self.heads(x, &self.v))?;
        let inner = [AttnSite::Scores, AttnSite::Pattern, AttnSite::Z];
        if !inner.iter().any(|&site| hooks.wants(&p(site))) {
            let scale = Some((self.d_head as f64).sqrt());
            let heads = |t: &Tensor<4>| t.clone().swap_dims(1, 2);
            if let Some(z) =
                crate::fastmath::attention_heads(&heads(&q), &heads(&k), &heads(&v), &bias, scale)
            {
                return Ok(self.o.forward(leading(z)));
            }
        }
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .div_scalar((self.d_head as f64).sqrt())
            + bias;
        let scores = hooks.apply4(p(AttnSite::Scores), scores)?;
        let pattern = crate::fastmath::softmax_last(scores);
        let pattern = hooks.apply4(p(AttnSite::Pattern), pattern)?;
        let z = pattern.matmul(v).swap_dims(1, 2);
        let z = hooks.apply4(p(AttnSite::Z), z)?;
        let z = z.reshape([b, s, self.n_heads * self.d_head]);
        Ok(self.o.forward(leading(z)))
    }
}

/// One post-LN block: `x = LN(x + attn(x))`, then `x = LN(x + W_out act(W_in x))`.
#[derive(Module, Debug)]
pub struct BertBlock {
    /// Self-attention.
    pub attn: BertAttention,
    /// Norm after the attention residual add (`attention.output.LayerNorm`, DistilBERT `sa_layer_norm`).
    pub ln_attn: LayerNorm,
    /// Feed-forward input (`intermediate.dense`, DistilBERT `ffn.lin1`).
    pub ff_in: Linear,
    /// Feed-forward output (`output.dense`, DistilBERT `ffn.lin2`).
    pub ff_out: Linear,
    /// Norm after the feed-forward residual add (`output.LayerNorm`, DistilBERT `output_layer_norm`).
    pub ln_ff: LayerNorm,
    /// Non-linearity.
    #[module(skip)]
    pub act: Activation,
}

impl BertBlock {
    /// Runs the block on the residual stream `x: [batch, pos, hidden]`.
    ///
    /// Hook points (post-LN): `hook_resid_pre` is the block input; `hook_resid_mid` is
    /// `LN(resid_pre + attn_out)`, what the MLP reads; `hook_resid_post` is `LN(resid_mid + mlp_out)`, the block
    /// output. `hook_self_attn_out` and `hook_mlp_out` are the sublayer outputs before the add and norm.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
        layer: usize,
    ) -> Result<Tensor<3>, ModelError> {
        self.run(x, bias, hooks, layer, None)
    }

    /// The block's output at the first position only, `[batch, 1, hidden]`: row 0 of [`BertBlock::forward`],
    /// to the bit. The attention runs for every position; its output projection, the norms and the MLP for
    /// the first two rows only (two, not one: gemm takes a matrix-vector path for a single row, which sums in
    /// another order). What a classification head reads from the last block, for about a quarter of the
    /// block's arithmetic.
    pub fn forward_first(&self, x: Tensor<3>, bias: Tensor<4>) -> Result<Tensor<3>, ModelError> {
        let [b, s, h] = x.dims();
        let rows = s.min(2);
        let out = self.run(x, bias, &mut Hooks::none(), 0, Some(rows))?;
        Ok(out.slice([0..b, 0..1, 0..h]))
    }

    fn run(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
        layer: usize,
        rows: Option<usize>,
    ) -> Result<Tensor<3>, ModelError> {
        let p = |site| HookPoint::block(Stack::Encoder, layer, site);
        let x = hooks.apply3(p(Site::ResidPre), x)?;
        let a = self.attn.attend(x.clone(), bias, hooks, layer, rows)?;
        let a = hooks.apply3(p(Site::SelfAttnOut), a)?;
        let x = match rows {
            Some(r) => {
                let [b, _, h] = x.dims();
                x.slice([0..b, 0..r, 0..h])
            }
            None => x,
        };
        let x = hooks.apply3(p(Site::ResidMid), self.ln_attn.forward(x + a))?;
        let h = self.act.apply(self.ff_in.forward(x.clone()));
        let h = hooks.apply3(p(Site::MlpPost), h)?;
        let m = hooks.apply3(p(Site::MlpOut), self.ff_out.forward(h))?;
        hooks.apply3(p(Site::ResidPost), self.ln_ff.forward(x + m))
    }
}

/// Word + absolute position (+ token type) embeddings, layer norm, and ELECTRA's projection.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `[vocab, embedding_dim]`.
    pub word: Param<Tensor<2>>,
    /// `[max_positions, embedding_dim]`.
    pub position: Param<Tensor<2>>,
    /// `[type_vocab, embedding_dim]`; `None` for DistilBERT.
    pub token_type: Option<Param<Tensor<2>>>,
    /// Embedding layer norm.
    pub ln: LayerNorm,
    /// ELECTRA's `embeddings_project` (`embedding_size -> hidden_size`), when the widths differ.
    pub project: Option<Linear>,
}

impl BertEmbeddings {
    /// `ids`, `token_type_ids: [batch, pos]` -> `[batch, pos, hidden]`; positions are `0..pos`.
    pub fn forward(&self, ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let e = self.word.dims()[1];
        let words = self
            .word
            .val()
            .select(0, ids.reshape([b * s]))
            .reshape([b, s, e]);
        let positions = self.position.val().slice([0..s, 0..e]).reshape([1, s, e]);
        let mut x = words + positions;
        if let Some(tt) = &self.token_type {
            x = x + tt
                .val()
                .select(0, token_type_ids.reshape([b * s]))
                .reshape([b, s, e]);
        }
        let x = self.ln.forward(x);
        match &self.project {
            Some(p) => p.forward(x),
            None => x,
        }
    }
}
