//! Logit lens over the decoder's residual stream and its components, and the share of the residual change
//! that each component writes (paper section "the residual stream").
//!
//! Everything is read at one decoding step ([`LensConfig::step`]): by default the first (decoder input: the
//! start token), where an atomic docid model emits its docid; for multi-token docids, step `k` teacher-forces
//! the first `k` tokens of the correct docid and reads the prediction of token `k`.

use burn::prelude::*;
use genir_data::{Column, Table};
use genir_model::hooks::{HookFilter, HookPoint, Site, Stack};
use genir_model::t5::T5Model;
use genir_train::bundle::GenirModel;

use crate::common::{
    cached3_at, col, docid_block, first_step, host, lens_logits, prepare, prob, row_ranks,
    Prepared, Probe, RowRanks,
};
use crate::error::Result;

/// Settings of the residual-stream analyses.
#[derive(Clone, Debug)]
pub struct LensConfig {
    /// Queries per forward pass.
    pub batch_size: usize,
    /// Also compute the mean rank of every docid / non-docid token (a full sort of the vocabulary per row).
    pub mean_ranks: bool,
    /// Decoding step read (multi-token docids): the decoder is teacher-forced with the first `step` tokens
    /// of the correct docid and read where it predicts token `step`, the "correct docid token". 0: the first
    /// step (atomic docids).
    pub step: usize,
}

impl Default for LensConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            mean_ranks: true,
            step: 0,
        }
    }
}

/// The residual-stream points and component outputs the lens reads in one decoder layer, with their names in
/// the tables. `resid_pre` is only read in layer 0 (later it equals the previous `resid_post`).
pub const LENS_COMPONENTS: [(&str, Site); 7] = [
    ("resid_pre", Site::ResidPre),
    ("self_attn_out", Site::SelfAttnOut),
    ("resid_mid", Site::ResidMid),
    ("cross_attn_out", Site::CrossAttnOut),
    ("resid_mid_cross", Site::ResidMidCross),
    ("mlp_out", Site::MlpOut),
    ("resid_post", Site::ResidPost),
];

/// The points the lens reads; a removed component (a model saved with components removed) writes a
/// constant, not a function of the query, and is left out (its all-zero logits would tie every token and
/// rank the target first).
fn lens_points(model: &T5Model) -> Vec<(usize, &'static str, HookPoint)> {
    let mut v = Vec::new();
    for (l, block) in model.decoder.blocks.iter().enumerate() {
        for (name, site) in LENS_COMPONENTS {
            let removed = match site {
                Site::SelfAttnOut => block.removed.self_attn,
                Site::CrossAttnOut => block.removed.cross_attn,
                Site::MlpOut => block.removed.mlp,
                _ => false,
            };
            if removed || (site == Site::ResidPre && l > 0) {
                continue;
            }
            v.push((l, name, HookPoint::block(Stack::Decoder, l, site)));
        }
    }
    v
}

fn batches<'a>(
    prepared: &'a [Prepared],
    cfg: &LensConfig,
) -> impl Iterator<Item = &'a [Prepared]> + 'a {
    prepared.chunks(cfg.batch_size.max(1))
}

/// The columns every lens table starts with: `qid, docid, layer, component, rank, rank_in_docids,
/// mean_rank_docids, mean_rank_non_docids, median_rank_non_docids`, one row per query x layer x component.
#[derive(Default)]
struct RankRows {
    qid: Vec<String>,
    docid: Vec<String>,
    layer: Vec<i64>,
    comp: Vec<String>,
    rank: Vec<i64>,
    rank_d: Vec<i64>,
    mean_d: Vec<f64>,
    mean_n: Vec<f64>,
    median_n: Vec<f64>,
}

impl RankRows {
    fn push(&mut self, p: &Prepared, layer: usize, component: &str, r: &RowRanks) {
        self.qid.push(p.qid.clone());
        self.docid.push(p.docid.clone());
        self.layer.push(layer as i64);
        self.comp.push(component.to_string());
        self.rank.push(r.rank as i64);
        self.rank_d.push(r.rank_in_docids as i64);
        self.mean_d.push(r.mean_docid);
        self.mean_n.push(r.mean_non_docid);
        self.median_n.push(r.median_non_docid);
    }

    /// These columns followed by `extra` (of the same height).
    fn frame(self, extra: Vec<Column>) -> genir_data::Result<Table> {
        let mut cols = vec![
            col("qid", self.qid),
            col("docid", self.docid),
            col("layer", self.layer),
            col("component", self.comp),
            col("rank", self.rank),
            col("rank_in_docids", self.rank_d),
            col("mean_rank_docids", self.mean_d),
            col("mean_rank_non_docids", self.mean_n),
            col("median_rank_non_docids", self.median_n),
        ];
        cols.extend(extra);
        Table::new(cols)
    }
}

/// Logit lens at the first decoding position: every decoder layer's residual stream (`resid_pre` of layer 0,
/// `resid_mid`, `resid_mid_cross`, `resid_post`) and component outputs (`self_attn_out`, `cross_attn_out`,
/// `mlp_out`) are passed through the decoder's final norm, the output scale and the LM head.
///
/// One row per query x layer x component: `qid, docid, layer, component, rank` (1 = top, among the whole
/// vocabulary), `rank_in_docids` (among docid tokens), `mean_rank_docids`, `mean_rank_non_docids`,
/// `median_rank_non_docids` (the paper's figure: ranks are 1-based here, 0-based there), `logit`, `prob` (of
/// the correct docid token).
pub fn logit_lens(gm: &GenirModel, probes: &[Probe], cfg: &LensConfig) -> Result<Table> {
    let prepared = prepare(gm, probes)?;
    let points = lens_points(&gm.model);
    let filter = HookFilter::points(&points.iter().map(|p| p.2).collect::<Vec<_>>());
    let block = docid_block(gm);
    let mut table = RankRows::default();
    let (mut logit, mut pr) = (vec![], vec![]);
    for batch in batches(&prepared, cfg) {
        let (_, cache) = first_step(gm, batch, cfg.step, filter.clone())?;
        let stacked = points
            .iter()
            .map(|&(_, _, p)| cached3_at(&cache, p, cfg.step))
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::cat(stacked, 1); // [b, n_points, d]
        let logits = lens_logits(&gm.model, x);
        let [b, n, v] = logits.dims();
        let values = host(logits)?;
        for (i, p) in batch.iter().enumerate() {
            let target = p.target[cfg.step] as usize;
            for (j, &(l, name, _)) in points.iter().enumerate() {
                let row = &values[(i * n + j) * v..(i * n + j + 1) * v];
                let r = row_ranks(row, target, block.clone(), cfg.mean_ranks);
                table.push(p, l, name, &r);
                logit.push(f64::from(row[target]));
                pr.push(prob(row, target));
            }
        }
        debug_assert_eq!(b, batch.len());
        tracing::debug!(queries = batch.len(), "logit lens batch");
    }
    Ok(table.frame(vec![col("logit", logit), col("prob", pr)])?)
}

/// Logit lens on the encoder, through the decoder's head: the encoder's residual stream before its first
/// layer (the embeddings, `resid_pre` of layer 0), after every layer (`resid_post`) and its final norm
/// output (`final_norm`, at the last layer), passed through the decoder's final norm, the output scale and the
/// LM head, both mean-pooled over the query's positions and at each position. The encoder never predicts a
/// docid; this asks how early, and where, the query's representation already points at its document in the
/// output vocabulary (the correct token is the docid's first token).
///
/// One row per query x layer x component: `qid, docid, layer, component, rank` (mean-pooled; 1 = top of
/// the vocabulary), `rank_in_docids`, `mean_rank_docids`, `mean_rank_non_docids`, `median_rank_non_docids`
/// (mean-pooled), `best_rank` (best over positions) and `best_position`.
pub fn encoder_lens(gm: &GenirModel, probes: &[Probe], cfg: &LensConfig) -> Result<Table> {
    let prepared = prepare(gm, probes)?;
    let model = &gm.model;
    let device = model.shared.val().device();
    let layers = model.encoder.blocks.len();
    let mut points = vec![(
        0usize,
        "resid_pre",
        HookPoint::block(Stack::Encoder, 0, Site::ResidPre),
    )];
    points.extend((0..layers).map(|l| {
        (
            l,
            "resid_post",
            HookPoint::block(Stack::Encoder, l, Site::ResidPost),
        )
    }));
    points.push((
        layers.saturating_sub(1),
        "final_norm",
        HookPoint::final_norm(Stack::Encoder),
    ));
    let filter = HookFilter::points(&points.iter().map(|p| p.2).collect::<Vec<_>>());
    let block = docid_block(gm);
    let pad = model.config.pad_token_id as u32;
    let mut table = RankRows::default();
    let (mut best, mut best_pos) = (vec![], vec![]);
    for batch in batches(&prepared, cfg) {
        let rows: Vec<Vec<u32>> = batch.iter().map(|p| p.ids.clone()).collect();
        let (src, mask) = genir_model::t5::pad_batch(&rows, pad, &device)?;
        let mut hooks = genir_model::hooks::Hooks::caching(filter.clone());
        model.encode(src, mask.clone(), &mut hooks)?;
        let cache = hooks.take_cache();
        // masked mean over each query's own positions (padding excluded)
        let m = mask.float().unsqueeze_dim::<3>(2); // [b, s, 1]
        let count = m.clone().sum_dim(1); // [b, 1, 1]
        for &(l, name, point) in &points {
            let a = crate::common::cached3(&cache, point)?; // [b, s, d]
            let s = a.dims()[1];
            let pooled = (a.clone() * m.clone()).sum_dim(1) / count.clone(); // [b, 1, d]
            let logits = crate::common::lens_logits(model, Tensor::cat(vec![pooled, a], 1));
            let v = logits.dims()[2];
            let values = host(logits)?;
            for (i, p) in batch.iter().enumerate() {
                let target = p.target[0] as usize;
                let base = i * (1 + s) * v;
                let r = row_ranks(
                    &values[base..base + v],
                    target,
                    block.clone(),
                    cfg.mean_ranks,
                );
                let (bp, br) = (0..p.ids.len())
                    .map(|j| {
                        let row = &values[base + (1 + j) * v..base + (2 + j) * v];
                        (j, row_ranks(row, target, block.clone(), false).rank)
                    })
                    .min_by_key(|&(j, r)| (r, j))
                    .unwrap_or((0, usize::MAX));
                table.push(p, l, name, &r);
                best.push(br as i64);
                best_pos.push(bp as i64);
            }
        }
    }
    Ok(table.frame(vec![col("best_rank", best), col("best_position", best_pos)])?)
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let n = norm(a) * norm(b);
    if n == 0.0 {
        f64::NAN
    } else {
        dot / n
    }
}

/// How much each decoder component writes into the residual stream at the first decoding position.
///
/// One row per query x layer x component (`self_attn`, `cross_attn`, `mlp`, and for reference `resid_pre`,
/// `resid_post`, `delta` = `resid_post - resid_pre`): `norm` (L2), `ratio_to_delta`
/// (`norm / ||delta||`, the paper's measure), `share` (`norm` over the sum of the three components' norms),
/// `cos_resid_post` (cosine similarity with the layer's output), and `decomposition_error`, the largest
/// absolute entry of `delta - (self_attn + cross_attn + mlp)` (zero up to float rounding: the residual change
/// is exactly the sum of the three writes).
pub fn component_contributions(
    gm: &GenirModel,
    probes: &[Probe],
    cfg: &LensConfig,
) -> Result<Table> {
    let prepared = prepare(gm, probes)?;
    let layers = gm.model.decoder.blocks.len();
    let sites = [
        Site::ResidPre,
        Site::SelfAttnOut,
        Site::CrossAttnOut,
        Site::MlpOut,
        Site::ResidPost,
    ];
    let points: Vec<HookPoint> = (0..layers)
        .flat_map(|l| sites.map(|s| HookPoint::block(Stack::Decoder, l, s)))
        .collect();
    let filter = HookFilter::points(&points);
    let (mut qid, mut layer, mut comp, mut nrm, mut ratio, mut share, mut cos, mut err) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    for batch in batches(&prepared, cfg) {
        let (_, cache) = first_step(gm, batch, cfg.step, filter.clone())?;
        for l in 0..layers {
            let get = |s: Site| -> Result<Vec<f32>> {
                host(cached3_at(
                    &cache,
                    HookPoint::block(Stack::Decoder, l, s),
                    cfg.step,
                )?)
            };
            let [pre, attn, cross, mlp, post] = [
                get(sites[0])?,
                get(sites[1])?,
                get(sites[2])?,
                get(sites[3])?,
                get(sites[4])?,
            ];
            let d = gm.model.config.d_model;
            for (i, p) in batch.iter().enumerate() {
                let s = |v: &Vec<f32>| v[i * d..(i + 1) * d].to_vec();
                let (pre, a, c, m, post) = (s(&pre), s(&attn), s(&cross), s(&mlp), s(&post));
                let delta: Vec<f32> = post.iter().zip(&pre).map(|(x, y)| x - y).collect();
                let e = (0..d)
                    .map(|k| f64::from((delta[k] - (a[k] + c[k] + m[k])).abs()))
                    .fold(0f64, f64::max);
                let dn = norm(&delta);
                let total = norm(&a) + norm(&c) + norm(&m);
                for (name, v) in [
                    ("self_attn", &a),
                    ("cross_attn", &c),
                    ("mlp", &m),
                    ("resid_pre", &pre),
                    ("resid_post", &post),
                    ("delta", &delta),
                ] {
                    let n = norm(v);
                    qid.push(p.qid.clone());
                    layer.push(l as i64);
                    comp.push(name.to_string());
                    nrm.push(n);
                    ratio.push(if dn == 0.0 { f64::NAN } else { n / dn });
                    share.push(
                        if matches!(name, "self_attn" | "cross_attn" | "mlp") && total > 0.0 {
                            n / total
                        } else {
                            f64::NAN
                        },
                    );
                    cos.push(cosine(v, &post));
                    err.push(e);
                }
            }
        }
    }
    Ok(Table::new(vec![
        col("qid", qid),
        col("layer", layer),
        col("component", comp),
        col("norm", nrm),
        col("ratio_to_delta", ratio),
        col("share", share),
        col("cos_resid_post", cos),
        col("decomposition_error", err),
    ])?)
}
