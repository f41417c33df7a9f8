//! Activation patching sweeps: block patching (residual stream, attention output, MLP output per layer and
//! position) and head patching (per layer and head, all or chosen positions), exact against MechIR 0.2.0.
//!
//! Semantics (MechIR's): activations are cached from the run on the *perturbed* input and patched into the
//! run on the *original* input; a cell's value is the batch mean of
//! `(patched - original) / (perturbed - original)`, 0 where `|perturbed - original| < 1e-8`.
//!
//! What genir does differently, for speed, with the same numbers:
//! * the perturbed and the original runs happen once per batch of pairs, their activations cached;
//! * many cells are run in one forward pass: the rows of the batch are repeated, each patched at its own
//!   cell (one `[rows, len]` pass instead of one pass per cell);
//! * a pass resumes at the patched layer from the cached original residual stream
//!   ([`BertEncoder::forward_from`]): the layers before it are those of the original run. Attention- and MLP-
//!   output patches at one position change only that position until the next attention layer, so the patched
//!   layer is recomputed for that position alone; head patches resume at the head's output projection;
//! * a cross-encoder's last block computes the first position only, the one its head reads
//!   ([`PatchModel::score_from`]);
//! * a (cell, pair) whose patch cannot change the score is not run and counts 0: the position is padding in
//!   that pair, or the perturbed activation equals the original one there (e.g. the embeddings of unchanged
//!   tokens).

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::{Bool, TensorData};
use genir_data::{Column, Table};
use genir_model::bert::{attention_bias, BertBlock, BertEncoder, BertInput};
use genir_model::device::index_tensor;
use genir_model::hooks::{
    ActivationCache, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Site, Stack,
};
use serde::{Deserialize, Serialize};

use crate::error::{MechirError, Result};
use crate::pairs::{Pair, PairDataset};
use crate::ranker::{EncodeConfig, EncodedPairs, PatchModel, ScoreContext};

/// MechIR's patching metric: `(patched - original) / (perturbed - original)`, 0 where
/// `|perturbed - original| < 1e-8`.
pub fn linear_rank_metric(patched: f32, original: f32, perturbed: f32) -> f32 {
    let delta = perturbed - original;
    if delta.abs() < 1e-8 {
        0.0
    } else {
        (patched - original) / delta
    }
}

/// The residual-stream components of block patching, in MechIR's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BlockComponent {
    /// The block input (`hook_resid_pre`).
    ResidPre,
    /// The attention output before the residual add and norm (`hook_self_attn_out`, MechIR's `attn_out`).
    AttnOut,
    /// The MLP output before the residual add and norm (`hook_mlp_out`).
    MlpOut,
}

impl BlockComponent {
    /// All three, in MechIR's order (the leading axis of its block-patching result).
    pub const ALL: [BlockComponent; 3] = [Self::ResidPre, Self::AttnOut, Self::MlpOut];

    /// MechIR's name: `resid_pre`, `attn_out`, `mlp_out`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResidPre => "resid_pre",
            Self::AttnOut => "attn_out",
            Self::MlpOut => "mlp_out",
        }
    }

    /// The genir hook point of this component in `layer`.
    pub fn point(self, layer: usize) -> HookPoint {
        let site = match self {
            Self::ResidPre => Site::ResidPre,
            Self::AttnOut => Site::SelfAttnOut,
            Self::MlpOut => Site::MlpOut,
        };
        HookPoint::block(Stack::Encoder, layer, site)
    }
}

/// Settings of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchConfig {
    /// How pairs become inputs.
    pub encode: EncodeConfig,
    /// Pairs per batch (one original and one perturbed run each). MechIR averages over one batch; genir
    /// averages every cell over all pairs, which is the same for one batch.
    pub pair_batch: usize,
    /// Tokens (rows x length) per patched forward pass: how many cells are run together.
    pub token_budget: usize,
    /// Skip (cell, pair) runs whose patch cannot change the score (padding positions, identical
    /// activations); they count 0, as they do in MechIR.
    pub skip_no_ops: bool,
    /// Layers to sweep (all when `None`).
    pub layers: Option<Vec<usize>>,
}

impl Default for PatchConfig {
    fn default() -> Self {
        Self {
            encode: EncodeConfig::default(),
            pair_batch: 16,
            token_budget: 8192,
            skip_no_ops: true,
            layers: None,
        }
    }
}

/// Scores of each pair on its original and perturbed input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairScores {
    /// Score of the original input, per pair.
    pub original: Vec<f32>,
    /// Score of the perturbed input, per pair.
    pub perturbed: Vec<f32>,
}

/// The result of block patching: `values[component][layer][position]`, each the mean metric over pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockPatching {
    /// Components, in the order of the leading axis.
    pub components: Vec<BlockComponent>,
    /// Layers swept.
    pub layers: Vec<usize>,
    /// Number of positions.
    pub positions: usize,
    /// `[component, layer index, position]`, row-major.
    pub values: Vec<f32>,
    /// Number of pairs averaged.
    pub n_pairs: usize,
    /// Scores per pair.
    pub scores: PairScores,
    /// Original tokens of the first pair (labels for figures).
    pub tokens: Vec<String>,
}

impl BlockPatching {
    /// The value of a cell (`layer` is an index into [`BlockPatching::layers`]).
    pub fn get(&self, component: usize, layer: usize, position: usize) -> f32 {
        self.values[(component * self.layers.len() + layer) * self.positions + position]
    }

    /// A long table: `component` (str), `layer` (u32), `position` (u32), `token` (str, the first pair's
    /// token at that position or empty), `value` (f32).
    pub fn to_frame(&self) -> Result<Table> {
        let (mut c, mut l, mut p, mut t, mut v) = (vec![], vec![], vec![], vec![], vec![]);
        for (ci, comp) in self.components.iter().enumerate() {
            for (li, layer) in self.layers.iter().enumerate() {
                for pos in 0..self.positions {
                    c.push(comp.name());
                    l.push(*layer as u32);
                    p.push(pos as u32);
                    t.push(self.tokens.get(pos).cloned().unwrap_or_default());
                    v.push(self.get(ci, li, pos));
                }
            }
        }
        Ok(Table::new(vec![
            Column::new("component", c),
            Column::new("layer", l),
            Column::new("position", p),
            Column::new("token", t),
            Column::new("value", v),
        ])?)
    }
}

/// The result of head patching: `values[layer][head]` (all positions patched), or
/// `values[layer][head][position]` when positions were chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadPatching {
    /// Layers swept.
    pub layers: Vec<usize>,
    /// Heads per layer.
    pub heads: usize,
    /// Positions patched one at a time; `None` when each head was patched at every position at once.
    pub positions: Option<Vec<usize>>,
    /// `[layer index, head]` or `[layer index, head, position index]`, row-major.
    pub values: Vec<f32>,
    /// Number of pairs averaged.
    pub n_pairs: usize,
    /// Scores per pair.
    pub scores: PairScores,
}

impl HeadPatching {
    /// The value of a cell (`layer` indexes [`HeadPatching::layers`], `position` indexes the chosen positions;
    /// use 0 when all positions were patched at once).
    pub fn get(&self, layer: usize, head: usize, position: usize) -> f32 {
        let np = self.positions.as_ref().map_or(1, Vec::len);
        self.values[(layer * self.heads + head) * np + position]
    }

    /// A long table: `layer`, `head` (u32), `position` (u32, null when all positions were patched at once),
    /// `value` (f32).
    pub fn to_frame(&self) -> Result<Table> {
        let (mut l, mut h, mut p, mut v) = (vec![], vec![], vec![], vec![]);
        for (li, layer) in self.layers.iter().enumerate() {
            for head in 0..self.heads {
                match &self.positions {
                    None => {
                        l.push(*layer as u32);
                        h.push(head as u32);
                        p.push(None);
                        v.push(self.get(li, head, 0));
                    }
                    Some(ps) => {
                        for (pi, pos) in ps.iter().enumerate() {
                            l.push(*layer as u32);
                            h.push(head as u32);
                            p.push(Some(*pos as u32));
                            v.push(self.get(li, head, pi));
                        }
                    }
                }
            }
        }
        Ok(Table::new(vec![
            Column::new("layer", l),
            Column::new("head", h),
            Column::from_options("position", p),
            Column::new("value", v),
        ])?)
    }
}

/// A table of pairs and their scores: `qid`, `docid`, `grade`, `query`, `document`, `perturbed`,
/// `score_original`, `score_perturbed`.
pub fn pairs_frame(pairs: &[Pair], scores: &PairScores) -> Result<Table> {
    let s = |f: fn(&Pair) -> &str| pairs.iter().map(f).map(String::from).collect::<Vec<_>>();
    Ok(Table::new(vec![
        Column::new("qid", s(|p| &p.qid)),
        Column::new("docid", s(|p| &p.docid)),
        Column::from_options("grade", pairs.iter().map(|p| p.grade).collect::<Vec<_>>()),
        Column::new("query", s(|p| &p.query)),
        Column::new("document", s(|p| &p.document)),
        Column::new("perturbed", s(|p| &p.perturbed)),
        Column::new("score_original", scores.original.clone()),
        Column::new("score_perturbed", scores.perturbed.clone()),
    ])?)
}

/// Block patching as a table ([`BlockPatching::to_frame`]).
pub fn patch_blocks<M: PatchModel + ?Sized>(
    model: &M,
    pairs: &PairDataset,
    config: &PatchConfig,
) -> Result<Table> {
    sweep_blocks(model, pairs, config)?.to_frame()
}

/// Head patching as a table ([`HeadPatching::to_frame`]).
pub fn patch_heads<M: PatchModel + ?Sized>(
    model: &M,
    pairs: &PairDataset,
    positions: Option<&[usize]>,
    config: &PatchConfig,
) -> Result<Table> {
    sweep_heads(model, pairs, positions, config)?.to_frame()
}

fn to_vec1(t: Tensor<1>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| MechirError::Input(format!("reading scores: {e:?}")))
}

fn rank3(cache: &ActivationCache, p: &HookPoint) -> Result<Tensor<3>> {
    Ok(cache.require(p)?.rank3(p)?)
}

fn rank4(cache: &ActivationCache, p: &HookPoint) -> Result<Tensor<4>> {
    Ok(cache.require(p)?.rank4(p)?)
}

/// The original and perturbed runs of one batch, with their caches.
struct Runs {
    original: Vec<f32>,
    perturbed: Vec<f32>,
    cache_o: ActivationCache,
    cache_p: ActivationCache,
    /// `[batch][len]`: whether each position of the original input is a token.
    mask: Vec<Vec<bool>>,
    context: ScoreContext,
}

fn run_pair<M: PatchModel + ?Sized>(
    model: &M,
    enc: &EncodedPairs,
    points: &[HookPoint],
) -> Result<Runs> {
    let encoder = model.encoder();
    let context = model.context(enc)?;
    let rows: Vec<usize> = (0..enc.original.dims()[0]).collect();
    let run = |input: &BertInput| -> Result<(Vec<f32>, ActivationCache)> {
        let mut hooks = Hooks::caching(HookFilter::points(points));
        let h = encoder.forward(input, &mut hooks)?;
        let s = model.score_hidden(h, input.attention_mask.clone(), &context, &rows)?;
        Ok((to_vec1(s)?, hooks.take_cache()))
    };
    let (perturbed, cache_p) = run(&enc.perturbed)?;
    let (original, cache_o) = run(&enc.original)?;
    let [b, s] = enc.original.dims();
    let m = enc
        .original
        .attention_mask
        .to_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| MechirError::Input(format!("reading the mask: {e:?}")))?;
    let mask = (0..b)
        .map(|r| (0..s).map(|p| m[r * s + p] != 0).collect())
        .collect();
    Ok(Runs {
        original,
        perturbed,
        cache_o,
        cache_p,
        mask,
        context,
    })
}

fn host(t: Tensor<3>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| MechirError::Input(format!("reading activations: {e:?}")))
}

fn bool_tensor<const D: usize>(
    v: Vec<bool>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D, Bool> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// The MLP half of a post-LN block: `LN(x + W_out act(W_in x))`.
fn mlp_half(block: &BertBlock, mid: Tensor<3>) -> Tensor<3> {
    let h = block.act.apply(block.ff_in.forward(mid.clone()));
    block.ln_ff.forward(mid + block.ff_out.forward(h))
}

/// Row `i` of the result is `t[rows[i], positions[i]]`, as `[n, 1, d]`.
fn gather_positions(t: Tensor<3>, rows: &[usize], positions: &[usize]) -> Tensor<3> {
    let [_, s, d] = t.dims();
    let b = t.dims()[0];
    let flat: Vec<usize> = rows.iter().zip(positions).map(|(r, p)| r * s + p).collect();
    let idx = index_tensor(&flat, &t.device());
    t.reshape([b * s, d])
        .select(0, idx)
        .reshape([flat.len(), 1, d])
}

/// Runs patched rows of one (component, layer): row `i` is pair `rows[i]` patched at `positions[i]`.
/// Returns the patched scores.
fn run_block_chunk<M: PatchModel + ?Sized>(
    model: &M,
    enc: &EncodedPairs,
    runs: &Runs,
    comp: BlockComponent,
    layer: usize,
    rows: &[usize],
    positions: &[usize],
) -> Result<Vec<f32>> {
    let encoder: &BertEncoder = model.encoder();
    let device = encoder.device();
    let [_, s] = enc.original.dims();
    let n = rows.len();
    let idx = index_tensor(rows, &device);
    let mask = enc.original.attention_mask.clone().select(0, idx.clone());
    let bias = attention_bias(mask.clone());
    let mut onehot = vec![false; n * s];
    for (i, p) in positions.iter().enumerate() {
        onehot[i * s + p] = true;
    }
    let hidden_size = encoder.config.hidden_size;
    let m3 = bool_tensor(onehot, [n, s, 1], &device).expand([n, s, hidden_size]);
    let (x, start) = match comp {
        BlockComponent::ResidPre => {
            let p = comp.point(layer);
            let x = rank3(&runs.cache_o, &p)?.select(0, idx.clone());
            let src = rank3(&runs.cache_p, &p)?.select(0, idx.clone());
            (x.mask_where(m3, src), layer)
        }
        BlockComponent::AttnOut | BlockComponent::MlpOut => {
            let block = &encoder.blocks[layer];
            let b = |site| HookPoint::block(Stack::Encoder, layer, site);
            let patched =
                gather_positions(rank3(&runs.cache_p, &comp.point(layer))?, rows, positions);
            // The patched position's new block output; every other position keeps the original's.
            let new_post = if comp == BlockComponent::AttnOut {
                let pre =
                    gather_positions(rank3(&runs.cache_o, &b(Site::ResidPre))?, rows, positions);
                mlp_half(block, block.ln_attn.forward(pre + patched))
            } else {
                let mid =
                    gather_positions(rank3(&runs.cache_o, &b(Site::ResidMid))?, rows, positions);
                block.ln_ff.forward(mid + patched)
            };
            let post = rank3(&runs.cache_o, &b(Site::ResidPost))?.select(0, idx.clone());
            let x = post.mask_where(m3, new_post.expand([n, s, hidden_size]));
            (x, layer + 1)
        }
    };
    to_vec1(model.score_from(x, start, bias, mask, &runs.context, rows)?)
}

/// Runs patched rows of one layer's heads: row `i` is pair `rows[i]` with head `heads[i]` patched at every
/// position, or at `positions[i]` when given.
fn run_head_chunk<M: PatchModel + ?Sized>(
    model: &M,
    enc: &EncodedPairs,
    runs: &Runs,
    layer: usize,
    rows: &[usize],
    heads: &[usize],
    positions: Option<&[usize]>,
) -> Result<Vec<f32>> {
    let encoder: &BertEncoder = model.encoder();
    let device = encoder.device();
    let [_, s] = enc.original.dims();
    let n = rows.len();
    let nh = encoder.config.num_attention_heads;
    let hidden_size = encoder.config.hidden_size;
    let dh = hidden_size / nh;
    let idx = index_tensor(rows, &device);
    let mask = enc.original.attention_mask.clone().select(0, idx.clone());
    let bias = attention_bias(mask.clone());
    let mut sel = vec![false; n * s * nh];
    for (i, &h) in heads.iter().enumerate() {
        match positions {
            None => (0..s).for_each(|p| sel[(i * s + p) * nh + h] = true),
            Some(ps) => sel[(i * s + ps[i]) * nh + h] = true,
        }
    }
    let m4 = bool_tensor(sel, [n, s, nh, 1], &device).expand([n, s, nh, dh]);
    let zp = HookPoint::attn(Stack::Encoder, layer, AttnKind::SelfAttn, AttnSite::Z);
    let z = rank4(&runs.cache_o, &zp)?.select(0, idx.clone());
    let src = rank4(&runs.cache_p, &zp)?.select(0, idx.clone());
    let z = z.mask_where(m4, src).reshape([n, s, hidden_size]);
    let block = &encoder.blocks[layer];
    let pre = rank3(
        &runs.cache_o,
        &HookPoint::block(Stack::Encoder, layer, Site::ResidPre),
    )?
    .select(0, idx);
    // The rest of the block from the heads' output projection on, as `BertBlock::forward`.
    let a = block.attn.o.forward(z);
    let x = mlp_half(block, block.ln_attn.forward(pre + a));
    to_vec1(model.score_from(x, layer + 1, bias, mask, &runs.context, rows)?)
}

fn layers_of(encoder: &BertEncoder, config: &PatchConfig) -> Result<Vec<usize>> {
    let depth = encoder.depth();
    let layers = config
        .layers
        .clone()
        .unwrap_or_else(|| (0..depth).collect());
    if let Some(bad) = layers.iter().find(|&&l| l >= depth) {
        return Err(MechirError::Input(format!(
            "layer {bad} is out of range: the model has {depth} layers"
        )));
    }
    Ok(layers)
}

fn check_pairs(pairs: &PairDataset, config: &PatchConfig) -> Result<()> {
    if pairs.is_empty() {
        return Err(MechirError::Input("no pairs to patch".into()));
    }
    if config.pair_batch == 0 || config.token_budget == 0 {
        return Err(MechirError::Input(
            "pair_batch and token_budget must be positive".into(),
        ));
    }
    Ok(())
}

/// Work items of one group: `(cell, pair row, position or head)`.
type Items = Vec<(usize, usize, usize)>;

fn run_items(
    items: &Items,
    chunk: usize,
    mut run: impl FnMut(&[usize], &[usize]) -> Result<Vec<f32>>,
    runs: &Runs,
    sums: &mut [f64],
) -> Result<()> {
    for part in items.chunks(chunk.max(1)) {
        let rows: Vec<usize> = part.iter().map(|x| x.1).collect();
        let arg: Vec<usize> = part.iter().map(|x| x.2).collect();
        let scores = run(&rows, &arg)?;
        for (&(cell, row, _), &s) in part.iter().zip(&scores) {
            sums[cell] += f64::from(linear_rank_metric(
                s,
                runs.original[row],
                runs.perturbed[row],
            ));
        }
    }
    Ok(())
}

/// Whether `a` and `b` (`[batch, len, d]`, host) agree at `(row, pos)`.
fn same_at(a: &[f32], b: &[f32], s: usize, d: usize, row: usize, pos: usize) -> bool {
    let o = (row * s + pos) * d;
    a[o..o + d] == b[o..o + d]
}

/// Block patching: each of `resid_pre`, `attn_out`, `mlp_out` of each layer patched at each position, from
/// the perturbed run into the original run (MechIR's `block_all`).
pub fn sweep_blocks<M: PatchModel + ?Sized>(
    model: &M,
    pairs: &PairDataset,
    config: &PatchConfig,
) -> Result<BlockPatching> {
    check_pairs(pairs, config)?;
    let encoder = model.encoder();
    let layers = layers_of(encoder, config)?;
    let comps = BlockComponent::ALL.to_vec();
    let mut points = Vec::new();
    for &l in &layers {
        for site in [
            Site::ResidPre,
            Site::SelfAttnOut,
            Site::ResidMid,
            Site::MlpOut,
            Site::ResidPost,
        ] {
            points.push(HookPoint::block(Stack::Encoder, l, site));
        }
    }
    let mut batches = Vec::new();
    let mut positions = 0;
    for chunk in pairs.pairs.chunks(config.pair_batch) {
        let enc = model.encode(chunk, pairs.perturbation.alignment, &config.encode)?;
        positions = positions.max(enc.report_length);
        batches.push(enc);
    }
    let mut sums = vec![0f64; comps.len() * layers.len() * positions];
    let mut scores = PairScores::default();
    for enc in &batches {
        let runs = run_pair(model, enc, &points)?;
        let [b, s] = enc.original.dims();
        let d = encoder.config.hidden_size;
        let chunk = (config.token_budget / s).max(1);
        for (ci, &comp) in comps.iter().enumerate() {
            for (li, &layer) in layers.iter().enumerate() {
                let p = comp.point(layer);
                let (ho, hp) = if config.skip_no_ops {
                    (
                        host(rank3(&runs.cache_o, &p)?)?,
                        host(rank3(&runs.cache_p, &p)?)?,
                    )
                } else {
                    (vec![], vec![])
                };
                let mut items: Items = Vec::new();
                for pos in 0..s {
                    let cell = (ci * layers.len() + li) * positions + pos;
                    for row in 0..b {
                        if config.skip_no_ops
                            && (!runs.mask[row][pos] || same_at(&ho, &hp, s, d, row, pos))
                        {
                            continue;
                        }
                        items.push((cell, row, pos));
                    }
                }
                run_items(
                    &items,
                    chunk,
                    |rows, ps| run_block_chunk(model, enc, &runs, comp, layer, rows, ps),
                    &runs,
                    &mut sums,
                )?;
            }
        }
        scores.original.extend(&runs.original);
        scores.perturbed.extend(&runs.perturbed);
    }
    let n = pairs.len();
    Ok(BlockPatching {
        components: comps,
        layers,
        positions,
        values: sums.iter().map(|v| (v / n as f64) as f32).collect(),
        n_pairs: n,
        scores,
        tokens: batches
            .first()
            .and_then(|e| e.tokens.first().cloned())
            .unwrap_or_default(),
    })
}

/// Head patching: each head's output (`hook_z`) of each layer patched from the perturbed run into the
/// original run, at every position at once (MechIR's `head_all`), or, with `positions`, at each of those
/// positions in turn (the `z` plane of MechIR's `head_by_pos`, over all heads).
pub fn sweep_heads<M: PatchModel + ?Sized>(
    model: &M,
    pairs: &PairDataset,
    positions: Option<&[usize]>,
    config: &PatchConfig,
) -> Result<HeadPatching> {
    check_pairs(pairs, config)?;
    let encoder = model.encoder();
    let layers = layers_of(encoder, config)?;
    let nh = encoder.config.num_attention_heads;
    let mut points = Vec::new();
    for &l in &layers {
        points.push(HookPoint::block(Stack::Encoder, l, Site::ResidPre));
        points.push(HookPoint::attn(
            Stack::Encoder,
            l,
            AttnKind::SelfAttn,
            AttnSite::Z,
        ));
    }
    let np = positions.map_or(1, <[usize]>::len);
    let mut sums = vec![0f64; layers.len() * nh * np];
    let mut scores = PairScores::default();
    let mut by_layer: BTreeMap<usize, usize> = BTreeMap::new();
    for (li, &l) in layers.iter().enumerate() {
        by_layer.insert(l, li);
    }
    for chunk in pairs.pairs.chunks(config.pair_batch) {
        let enc = model.encode(chunk, pairs.perturbation.alignment, &config.encode)?;
        let runs = run_pair(model, &enc, &points)?;
        let [b, s] = enc.original.dims();
        let rows_per_pass = (config.token_budget / s).max(1);
        for (li, &layer) in layers.iter().enumerate() {
            let mut items: Items = Vec::new();
            for head in 0..nh {
                for pi in 0..np {
                    let cell = (li * nh + head) * np + pi;
                    for row in 0..b {
                        if let Some(ps) = positions {
                            let pos = ps[pi];
                            if pos >= s || (config.skip_no_ops && !runs.mask[row][pos]) {
                                continue;
                            }
                        }
                        // Encode head and position index together: head * np + pi.
                        items.push((cell, row, head * np + pi));
                    }
                }
            }
            run_items(
                &items,
                rows_per_pass,
                |rows, hp| {
                    let heads: Vec<usize> = hp.iter().map(|x| x / np).collect();
                    let pos: Option<Vec<usize>> =
                        positions.map(|ps| hp.iter().map(|x| ps[x % np]).collect());
                    run_head_chunk(model, &enc, &runs, layer, rows, &heads, pos.as_deref())
                },
                &runs,
                &mut sums,
            )?;
        }
        scores.original.extend(&runs.original);
        scores.perturbed.extend(&runs.perturbed);
    }
    let n = pairs.len();
    Ok(HeadPatching {
        layers,
        heads: nh,
        positions: positions.map(<[usize]>::to_vec),
        values: sums.iter().map(|v| (v / n as f64) as f32).collect(),
        n_pairs: n,
        scores,
    })
}
