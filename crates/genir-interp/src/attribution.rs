//! Attribution patching: the first-order (gradient) estimate of every cell of an activation-patching sweep
//! from one forward and one backward pass per pair (Nanda, *Attribution Patching*, 2023; Syed et al., 2023).
//!
//! Patching the clean activation `a_c` into the corrupted run at a point changes the metric by about
//! `(a_c - a_x) · ∂m/∂a`, the gradient taken on the corrupted run. [`attribution_patching`] returns that
//! estimate for the same variants, in the same table layout, as
//! [`activation_patching`](crate::patching::activation_patching), so the two can be compared row by row
//! ([`agreement`]). The estimate is exact wherever the metric is linear in the patched activation (the
//! decoder's final norm output, [`PatchTarget::FinalNorm`]), and only approximate through norms, softmaxes and
//! ReLUs.
//!
//! Encoder positions feed every decoder layer's cross-attention keys and values, so their linear estimate
//! goes through each cross-attention softmax, where it fails when a patched key moves a pattern far (a
//! saturated softmax has no gradient to speak of). [`EncoderEstimate::QkFix`] (the default) applies the QK
//! fix of AtP* (Kramár et al., *AtP\*: An efficient and scalable method for localizing LLM behaviour to
//! components*, 2024): for every decoder layer and head the cross-attention pattern with position `p`'s key
//! replaced by the clean one is computed exactly (the base run's queries; only column `p` of the scores
//! changes, by `q · Δk`), and the estimate is `Σ_layers ∂m/∂A · (A' - A) + ∂m/∂V_p · ΔV_p`, gradients
//! taken on the base run; [`EncoderEstimate::Gradient`] is the plain first-order estimate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use burn::prelude::*;
use genir_data::Table;
use genir_model::hooks::{
    Activation, AttnKind, AttnSite, HookPoint, Hooks, Intervention, Selection, Stack,
};
use genir_train::bundle::GenirModel;

use crate::common::{col, f64_col, host, i64_col, str_col};
use crate::error::{InterpError, Result};
use crate::patching::{
    decoder_variants, prepare_pair, PatchConfig, PatchMetric, PatchPair, PatchRows, PatchTarget,
    PreparedPair, Row, Variant,
};

/// Sum of per-element gradient-times-difference products over the selected slice of one activation (batch
/// row 0).
fn selected_sum(point: &HookPoint, dims: &[usize], prod: &[f64], sel: &Selection) -> f64 {
    let layout = point.layout();
    let strides: Vec<usize> = (0..dims.len())
        .map(|i| dims[i + 1..].iter().product())
        .collect();
    let mut sum = 0f64;
    for (flat, &x) in prod.iter().enumerate() {
        let at = |axis: usize| (flat / strides[axis]) % dims[axis];
        if let Some(p) = &sel.positions {
            if !p.contains(&at(layout.pos)) {
                continue;
            }
        }
        if let (Some(h), Some(axis)) = (&sel.heads, layout.head) {
            if !h.contains(&at(axis)) {
                continue;
            }
        }
        sum += x;
    }
    sum
}

fn activation_host(a: &Activation) -> Result<(Vec<usize>, Vec<f32>)> {
    Ok(match a {
        Activation::Rank3(t) => (t.dims().to_vec(), host(t.clone())?),
        Activation::Rank4(t) => (t.dims().to_vec(), host(t.clone())?),
    })
}

/// Leaves added at hook points so that their gradients are the gradients at the activations: the point,
/// the activation there (of the base run) and the zero leaf added to it.
type Leaves = Rc<RefCell<Vec<(HookPoint, Activation, Activation)>>>;

fn leaf_hook(leaves: &Leaves) -> Intervention<'static> {
    let leaves = leaves.clone();
    Intervention::Custom(Box::new(move |point, x| {
        let value = x.clone();
        let (y, z) = match x {
            Activation::Rank3(x) => {
                let z = Tensor::<3>::zeros(x.dims(), &x.device())
                    .autodiff()
                    .require_grad();
                (Activation::Rank3(x + z.clone()), Activation::Rank3(z))
            }
            Activation::Rank4(x) => {
                let z = Tensor::<4>::zeros(x.dims(), &x.device())
                    .autodiff()
                    .require_grad();
                (Activation::Rank4(x + z.clone()), Activation::Rank4(z))
            }
        };
        leaves.borrow_mut().push((*point, value, z));
        Ok(y)
    }))
}

fn grad_host(a: &Activation, grads: &burn::tensor::Gradients) -> Result<Option<Vec<f32>>> {
    Ok(match a {
        Activation::Rank3(z) => z.grad(grads).map(host).transpose()?,
        Activation::Rank4(z) => z.grad(grads).map(host).transpose()?,
    })
}

/// How [`attribution_patching_with`] estimates the effect of patching an encoder position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncoderEstimate {
    /// AtP*'s QK fix: every cross-attention pattern recomputed exactly with the patched key, then
    /// linearised (see the module documentation).
    #[default]
    QkFix,
    /// The plain first-order estimate `(a_clean - a_base) · ∂m/∂a` at the encoder output.
    Gradient,
}

impl EncoderEstimate {
    /// `qk_fix` or `gradient`.
    pub fn name(self) -> &'static str {
        match self {
            EncoderEstimate::QkFix => "qk_fix",
            EncoderEstimate::Gradient => "gradient",
        }
    }
}

/// Attribution patching of every variant of [`PatchConfig::targets`] over every pair: one row per pair x
/// variant with the columns of [`activation_patching`](crate::patching::activation_patching); `raw` is the
/// first-order estimate of the patched metric, `m_base + (a_clean - a_base) · ∂m/∂a` (encoder positions:
/// with AtP*'s QK fix, [`EncoderEstimate::QkFix`]).
///
/// The metric must be [`PatchMetric::LogitDiff`] (reciprocal rank has no gradient). One forward and one
/// backward pass per pair, whatever the number of variants.
pub fn attribution_patching(
    gm: &GenirModel,
    pairs: &[PatchPair],
    cfg: &PatchConfig,
) -> Result<Table> {
    attribution_patching_with(gm, pairs, cfg, EncoderEstimate::default())
}

/// [`attribution_patching`] with the encoder positions estimated as `encoder` says.
pub fn attribution_patching_with(
    gm: &GenirModel,
    pairs: &[PatchPair],
    cfg: &PatchConfig,
    encoder: EncoderEstimate,
) -> Result<Table> {
    if pairs.is_empty() {
        return Err(InterpError::Input("no query pairs to patch".into()));
    }
    if cfg.metric != PatchMetric::LogitDiff {
        return Err(InterpError::Input(
            "attribution patching needs a differentiable metric: use logit_diff".into(),
        ));
    }
    let model = &gm.model;
    let searcher = gm.searcher()?;
    let layers = model.decoder.blocks.len();
    let heads = model.config.num_heads;
    let mut table = PatchRows::default();
    for pair in pairs {
        let PreparedPair {
            run,
            m_clean,
            m_corrupt,
            corrupt_label,
            t,
        } = prepare_pair(gm, &searcher, pair, cfg)?;
        let m_base = if cfg.into_clean { m_clean } else { m_corrupt };
        let variants = decoder_variants(&gm.model, heads, t, cfg);
        let mut points: Vec<HookPoint> = variants
            .iter()
            .filter_map(|v| v.patch.as_ref().map(|(p, _)| *p))
            .collect();
        points.sort();
        points.dedup();

        // The corrupted (base) run with a zero leaf added at every patched point and at the encoder output
        // (with the QK fix, also at every cross-attention's queries, pattern and values).
        let qk_fix = encoder == EncoderEstimate::QkFix
            && cfg.targets.contains(&PatchTarget::EncoderPositions);
        let mut leaf_points = points.clone();
        if qk_fix {
            for l in 0..layers {
                for site in [
                    AttnSite::Q,
                    AttnSite::Scores,
                    AttnSite::Pattern,
                    AttnSite::V,
                ] {
                    leaf_points.push(HookPoint::attn(
                        Stack::Decoder,
                        l,
                        AttnKind::CrossAttn,
                        site,
                    ));
                }
            }
            leaf_points.sort();
            leaf_points.dedup();
        }
        let leaves: Leaves = Rc::new(RefCell::new(Vec::new()));
        let mut hooks = Hooks::none();
        for p in &leaf_points {
            hooks.add(*p, leaf_hook(&leaves));
        }
        let enc_leaf = run.enc_base.clone().autodiff().require_grad();
        let h = model.decode_hidden(
            &enc_leaf,
            run.mask_base.clone(),
            run.dec_ids.clone(),
            None,
            &mut hooks,
        )?;
        drop(hooks);
        let grads = run.logit_diff(h).backward();

        // per point, once: (a_clean - a_base) * grad, element by element (variants only select slices)
        let mut grad_of: HashMap<HookPoint, (Vec<usize>, Vec<f64>)> = HashMap::new();
        for (p, _, z) in leaves
            .borrow()
            .iter()
            .filter(|(p, _, _)| points.contains(p))
        {
            let dims = z.dims();
            let g = grad_host(z, &grads)?.unwrap_or_else(|| {
                tracing::debug!(point = %p, "no gradient reaches this point: attribution 0");
                vec![0.0; dims.iter().product()]
            });
            let (_, clean) = activation_host(run.cache.require(p)?)?;
            let (_, base) = activation_host(run.base_cache.require(p)?)?;
            let prod: Vec<f64> = clean
                .iter()
                .zip(&base)
                .zip(&g)
                .map(|((c, b), g)| f64::from(c - b) * f64::from(*g))
                .collect();
            grad_of.insert(*p, (dims, prod));
        }
        let mut rows = Vec::with_capacity(variants.len());
        for v in variants {
            let attr = match &v.patch {
                None => 0.0,
                Some((p, sel)) => {
                    let (dims, prod) = grad_of.get(p).ok_or_else(|| {
                        InterpError::Input(format!("the hook point {p} never fired"))
                    })?;
                    selected_sum(p, dims, prod, sel)
                }
            };
            rows.push(Row {
                variant: v,
                raw: m_base + attr,
            });
        }
        if cfg.targets.contains(&PatchTarget::EncoderPositions) {
            let [_, s, d] = run.enc_base.dims();
            let attrs = if qk_fix {
                encoder_qk_fix(&run, &leaves.borrow(), &grads, layers, s)?
            } else {
                let g = enc_leaf
                    .grad(&grads)
                    .map(host)
                    .transpose()?
                    .unwrap_or_else(|| vec![0.0; s * d]);
                let clean = host(run.enc_clean.clone())?;
                let base = host(run.enc_base.clone())?;
                (0..s)
                    .map(|p| {
                        (p * d..(p + 1) * d)
                            .map(|i| f64::from(clean[i] - base[i]) * f64::from(g[i]))
                            .sum()
                    })
                    .collect()
            };
            let point = HookPoint::final_norm(Stack::Encoder);
            // the positions both queries have, as the exact sweep patches them
            for (p, attr) in attrs.into_iter().enumerate().take(run.shared_positions) {
                rows.push(Row {
                    variant: Variant {
                        target: PatchTarget::EncoderPositions.name(),
                        layer: -1,
                        component: point.to_string(),
                        head: -1,
                        position: p as i64,
                        patch: None,
                    },
                    raw: m_base + attr,
                });
            }
        }
        for r in rows {
            table.push(pair, &corrupt_label, "logit_diff", r, m_clean, m_corrupt);
        }
        tracing::debug!(qid = %pair.qid, "attribution-patched pair");
    }
    table.into_frame()
}

/// Change of `Σ_j g_j A_j` when the scores `x` of a softmax row `A = softmax(x)` change by `ds` at column `p`
/// only: the row's softmax recomputed in f64 with max subtraction, so it stays exact when one key holds nearly
/// all the attention and when `p`'s weight underflows (score gaps of thousands included).
fn softmax_column_shift(x: &[f64], a: &[f64], g: &[f32], p: usize, ds: f64) -> f64 {
    if a[p] <= 0.0 && !(x[p] + ds).is_finite() {
        return 0.0; // a masked key stays masked
    }
    let mut shifted = x.to_vec();
    shifted[p] += ds;
    let a2 = softmax_f64(&shifted);
    a2.iter()
        .zip(a)
        .zip(g)
        .map(|((&n, &o), &g)| f64::from(g) * (n - o))
        .sum()
}

/// Softmax of a row of scores in f64, with max subtraction (masked keys, at -inf or the mask's large negative
/// value, get 0).
fn softmax_f64(scores: &[f64]) -> Vec<f64> {
    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return vec![0.0; scores.len()];
    }
    let e: Vec<f64> = scores.iter().map(|&x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// AtP*'s QK-fixed estimate for every encoder position `p` (length `s`): `Σ_l Σ_h Σ_i ∂m/∂A[h, i, :] ·
/// (A'[h, i, :] - A[h, i, :])` with `A'` the pattern whose key `p` is the clean one (scores `+ q_i · Δk_p`),
/// plus `∂m/∂V[p] · ΔV[p]`, over the decoder layers whose cross-attention ran (batch row 0).
fn encoder_qk_fix(
    run: &crate::patching::PairRun<'_>,
    leaves: &[(HookPoint, Activation, Activation)],
    grads: &burn::tensor::Gradients,
    layers: usize,
    s: usize,
) -> Result<Vec<f64>> {
    // (dims, activation, gradient) on the host
    type HostLeaf = (Vec<usize>, Vec<f32>, Vec<f32>);
    let find = |l: usize, site: AttnSite| -> Result<Option<HostLeaf>> {
        let point = HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, site);
        let Some((_, value, leaf)) = leaves.iter().find(|(p, _, _)| *p == point) else {
            return Ok(None);
        };
        let (dims, value) = activation_host(value)?;
        let grad = grad_host(leaf, grads)?.unwrap_or_else(|| vec![0.0; value.len()]);
        Ok(Some((dims, value, grad)))
    };
    let kv_host = |t: &Option<Tensor<4>>| -> Result<Option<Vec<f32>>> {
        t.as_ref().map(|t| host(t.clone())).transpose()
    };
    let mut attr = vec![0f64; s];
    for l in 0..layers {
        // queries [1, t, h, dk], pattern [1, h, t, s], values [1, s, h, dk] (hook layouts); keys and values
        // of both runs [1, h, s, dk]
        let (Some((qd, q, _)), Some((sd, sc, _)), Some((ad, _, ga)), Some((_, _, gv))) = (
            find(l, AttnSite::Q)?,
            find(l, AttnSite::Scores)?,
            find(l, AttnSite::Pattern)?,
            find(l, AttnSite::V)?,
        ) else {
            continue; // this block's cross-attention is removed
        };
        let (clean, base) = (&run.cross_clean[l], &run.cross_base[l]);
        let (Some(kc), Some(kb), Some(vc), Some(vb)) = (
            kv_host(&clean.k)?,
            kv_host(&base.k)?,
            kv_host(&clean.v)?,
            kv_host(&base.v)?,
        ) else {
            return Err(InterpError::Input(format!(
                "decoder layer {l}: cross-attention keys/values missing"
            )));
        };
        let (t, h, dk) = (qd[1], qd[2], qd[3]);
        if ad[..] != [1, h, t, s] || sd != ad || kc.len() != h * s * dk || gv.len() != s * h * dk {
            return Err(InterpError::Input(format!(
                "decoder layer {l}: cross-attention shapes {qd:?} / {ad:?} do not match {s} encoder positions"
            )));
        }
        for hh in 0..h {
            for i in 0..t {
                let row = (hh * t + i) * s;
                let g_row = &ga[row..row + s];
                // the pattern recomputed in f64 from the scores: a key whose f32 weight underflowed to 0 (a
                // score gap beyond ~100, which unscaled T5 attention reaches) still moves when patched
                let x_row: Vec<f64> = sc[row..row + s].iter().map(|&v| f64::from(v)).collect();
                let a_row = softmax_f64(&x_row);
                let q_i = &q[(i * h + hh) * dk..(i * h + hh + 1) * dk];
                for (p, out) in attr.iter_mut().enumerate() {
                    let k = (hh * s + p) * dk;
                    let ds: f64 = q_i
                        .iter()
                        .zip(kc[k..k + dk].iter().zip(&kb[k..k + dk]))
                        .map(|(&q, (&c, &b))| f64::from(q) * f64::from(c - b))
                        .sum();
                    *out += softmax_column_shift(&x_row, &a_row, g_row, p, ds);
                }
            }
        }
        for (p, out) in attr.iter_mut().enumerate() {
            for hh in 0..h {
                let (kv, g) = ((hh * s + p) * dk, (p * h + hh) * dk);
                *out += (0..dk)
                    .map(|d| f64::from(gv[g + d]) * f64::from(vc[kv + d] - vb[kv + d]))
                    .sum::<f64>();
            }
        }
    }
    Ok(attr)
}

/// Agreement of attribution patching with exact activation patching: the rows of both tables are matched
/// on `qid, target, layer, component, head, position` and, where pairs share a qid (one query with several
/// corruptions), the order of the pairs (both tables list pairs in the same order); per target (and `all`),
/// the number of matched rows
/// `n`, the Pearson correlation of their `value`s and the mean absolute difference. Rows with a NaN value
/// (pairs whose clean and corrupted metrics are equal) are left out.
pub fn agreement(exact: &Table, attribution: &Table) -> Result<Table> {
    type Key = (String, String, i64, String, i64, i64, usize);
    fn rows(df: &Table) -> Result<Vec<(Key, f64)>> {
        let (qid, target, component) = (
            str_col(df, "qid")?,
            str_col(df, "target")?,
            str_col(df, "component")?,
        );
        let (layer, head, position) = (
            i64_col(df, "layer")?,
            i64_col(df, "head")?,
            i64_col(df, "position")?,
        );
        let value = f64_col(df, "value")?;
        // the n-th row with the same cell key belongs to the n-th pair of that qid
        let mut seen: HashMap<(String, String, i64, String, i64, i64), usize> = HashMap::new();
        Ok((0..df.height())
            .map(|r| {
                let cell = (
                    qid[r].clone(),
                    target[r].clone(),
                    layer[r],
                    component[r].clone(),
                    head[r],
                    position[r],
                );
                let n = seen.entry(cell.clone()).or_insert(0);
                let key = (cell.0, cell.1, cell.2, cell.3, cell.4, cell.5, *n);
                *n += 1;
                (key, value[r])
            })
            .collect())
    }
    let exact: HashMap<Key, f64> = rows(exact)?.into_iter().collect();
    let mut by_target: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for (key, a) in rows(attribution)? {
        if key.1 == "none" {
            continue;
        }
        if let Some(&e) = exact.get(&key) {
            if e.is_finite() && a.is_finite() {
                by_target.entry(key.1.clone()).or_default().push((e, a));
                by_target.entry("all".into()).or_default().push((e, a));
            }
        }
    }
    let (mut target, mut n, mut r, mut mad) = (vec![], vec![], vec![], vec![]);
    for (t, v) in by_target {
        n.push(v.len() as i64);
        r.push(pearson(&v));
        mad.push(v.iter().map(|(e, a)| (e - a).abs()).sum::<f64>() / v.len() as f64);
        target.push(t);
    }
    Ok(Table::new(vec![
        col("target", target),
        col("n", n),
        col("pearson", r),
        col("mean_abs_diff", mad),
    ])?)
}

/// Pearson correlation of pairs (NaN with fewer than two pairs or no variance).
pub(crate) fn pearson(v: &[(f64, f64)]) -> f64 {
    let n = v.len() as f64;
    if v.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        v.iter().map(|p| p.0).sum::<f64>() / n,
        v.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in v {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

#[cfg(test)]
mod tests {
    use super::softmax_column_shift;

    fn softmax(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|v| v / z).collect()
    }

    #[test]
    fn the_column_shift_equals_a_recomputed_softmax() {
        // the last row is saturated: one key holds all but 5e-4 of the attention
        for scores in [[0.3, -1.2, 2.5, 0.0, -30.0], [15.9, 6.8, 1.5, 7.2, 7.5]] {
            let g = [0.7f32, -0.4, 1.1, 0.25, 3.0];
            let a = softmax(&scores);
            for p in 0..scores.len() {
                for ds in [-50.0, -14.5, -3.0, -0.1, 0.0, 0.4, 5.0, 40.0] {
                    let mut s2 = scores;
                    s2[p] += ds;
                    let a2 = softmax(&s2);
                    let want: f64 = (0..g.len()).map(|j| f64::from(g[j]) * (a2[j] - a[j])).sum();
                    let got =
                        softmax_column_shift(&scores, &super::softmax_f64(&scores), &g, p, ds);
                    assert!(
                        (got - want).abs() < 1e-12 * (1.0 + want.abs()),
                        "p {p} ds {ds}: {got} vs {want}"
                    );
                }
            }
        }
        // a masked key (-inf) cannot move the pattern
        let x = [1.0, f64::NEG_INFINITY, 0.5];
        let a = super::softmax_f64(&x);
        assert_eq!(a[1], 0.0);
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert_eq!(softmax_column_shift(&x, &a, &[1.0, 1.0, 0.5], 1, 10.0), 0.0);
    }

    #[test]
    fn a_key_whose_f32_weight_underflowed_still_moves() {
        // scores [0, -110, -2]: key 1's f32 softmax weight is 0; patched by +112 it takes most of the attention
        let scores = [0.0f32, -110.0, -2.0];
        let f32_weight = (scores[1] - scores[0]).exp() / (1.0 + (scores[2] - scores[0]).exp());
        assert_eq!(f32_weight, 0.0);
        let x: Vec<f64> = scores.iter().map(|&v| f64::from(v)).collect();
        let a = super::softmax_f64(&x);
        let got = softmax_column_shift(&x, &a, &[0.0, 1.0, 0.0], 1, 112.0);
        let want = softmax(&[0.0, 2.0, -2.0])[1] - a[1];
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!((want - 0.867).abs() < 1e-3, "{want}");
        // gaps beyond f64's range too: a key 3000 below, patched by +3001, takes the row
        let x = [0.0, -3000.0];
        let a = super::softmax_f64(&x);
        assert_eq!(a[1], 0.0);
        let got = softmax_column_shift(&x, &a, &[0.0, 1.0], 1, 3001.0);
        assert!((got - softmax(&[0.0, 1.0])[1]).abs() < 1e-12, "{got}");
    }
}
