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

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use burn::prelude::*;
use genir_data::Table;
use genir_model::hooks::{Activation, HookPoint, Hooks, Intervention, Selection, Stack};
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

/// Leaves added at hook points so that their gradients are the gradients at the activations.
type Leaves = Rc<RefCell<Vec<(HookPoint, Activation)>>>;

fn leaf_hook(leaves: &Leaves) -> Intervention<'static> {
    let leaves = leaves.clone();
    Intervention::Custom(Box::new(move |point, x| {
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
        leaves.borrow_mut().push((*point, z));
        Ok(y)
    }))
}

fn grad_host(a: &Activation, grads: &burn::tensor::Gradients) -> Result<Option<Vec<f32>>> {
    Ok(match a {
        Activation::Rank3(z) => z.grad(grads).map(host).transpose()?,
        Activation::Rank4(z) => z.grad(grads).map(host).transpose()?,
    })
}

/// Attribution patching of every variant of [`PatchConfig::targets`] over every pair: one row per pair x
/// variant with the columns of [`activation_patching`](crate::patching::activation_patching); `raw` is the
/// first-order estimate of the patched metric, `m_base + (a_clean - a_base) · ∂m/∂a`.
///
/// The metric must be [`PatchMetric::LogitDiff`] (reciprocal rank has no gradient). One forward and one
/// backward pass per pair, whatever the number of variants.
pub fn attribution_patching(
    gm: &GenirModel,
    pairs: &[PatchPair],
    cfg: &PatchConfig,
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
        let variants = decoder_variants(layers, heads, t, cfg);
        let mut points: Vec<HookPoint> = variants
            .iter()
            .filter_map(|v| v.patch.as_ref().map(|(p, _)| *p))
            .collect();
        points.sort();
        points.dedup();

        // The corrupted (base) run with a zero leaf added at every patched point and at the encoder output.
        let leaves: Leaves = Rc::new(RefCell::new(Vec::new()));
        let mut hooks = Hooks::none();
        for p in &points {
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
        for (p, z) in leaves.borrow().iter() {
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
            let g = enc_leaf
                .grad(&grads)
                .map(host)
                .transpose()?
                .unwrap_or_else(|| vec![0.0; s * d]);
            let clean = host(run.enc_clean.clone())?;
            let base = host(run.enc_base.clone())?;
            let point = HookPoint::final_norm(Stack::Encoder);
            for p in 0..s {
                let attr: f64 = (p * d..(p + 1) * d)
                    .map(|i| f64::from(clean[i] - base[i]) * f64::from(g[i]))
                    .sum();
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

/// Agreement of attribution patching with exact activation patching: the rows of both tables are matched
/// on `qid, target, layer, component, head, position`; per target (and `all`), the number of matched rows
/// `n`, the Pearson correlation of their `value`s and the mean absolute difference. Rows with a NaN value
/// (pairs whose clean and corrupted metrics are equal) are left out.
pub fn agreement(exact: &Table, attribution: &Table) -> Result<Table> {
    type Key = (String, String, i64, String, i64, i64);
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
        Ok((0..df.height())
            .map(|r| {
                (
                    (
                        qid[r].clone(),
                        target[r].clone(),
                        layer[r],
                        component[r].clone(),
                        head[r],
                        position[r],
                    ),
                    value[r],
                )
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
