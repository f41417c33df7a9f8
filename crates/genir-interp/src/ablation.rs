//! Removing components: zero- or mean-ablate a set of hook points and measure retrieval before and after.

use burn::prelude::*;
use genir_data::QuerySet;
use genir_data::Table;
use genir_model::hooks::{
    Activation, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention, Selection, Site,
    Stack,
};
use genir_model::t5::Seq2SeqInput;
use genir_train::bundle::GenirModel;

use crate::common::{col, host};
use crate::error::{InterpError, Result};
use crate::swap::{evaluate_set, rank_atomic, run_queries, RankOver};

/// What an ablated activation is replaced with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AblationMode {
    /// Zeros.
    Zero,
    /// The mean activation over a reference query set (over queries and positions; padding excluded).
    Mean,
}

impl AblationMode {
    fn name(self) -> &'static str {
        match self {
            AblationMode::Zero => "zero",
            AblationMode::Mean => "mean",
        }
    }
}

/// A named set of hook points to ablate together.
#[derive(Clone, Debug)]
pub struct Ablation {
    /// Name in the table.
    pub label: String,
    /// The points (every position, every head).
    pub points: Vec<HookPoint>,
    /// Zero or mean.
    pub mode: AblationMode,
    /// Points zero-ablated together with `points` (a mixed ablation, e.g. the paper's minimal circuit: zero
    /// self-attention, mean MLPs); empty for a plain one. See [`Ablation::and_zero`].
    pub also_zero: Vec<HookPoint>,
}

impl Ablation {
    /// The points of `gm` matching comma-separated glob patterns (`decoder.blocks.*.hook_attn_out`); a pattern
    /// that matches no point is a `ModelError::UnknownHook` error with suggestions.
    pub fn parse(gm: &GenirModel, label: &str, patterns: &str, mode: AblationMode) -> Result<Self> {
        let (e, d) = gm.model.depth();
        let filter = HookFilter::parse(patterns);
        filter.validate(e, d)?;
        let points: Vec<HookPoint> = HookPoint::all(e, d)
            .into_iter()
            .filter(|p| filter.matches(p))
            .collect();
        if points.is_empty() {
            return Err(InterpError::Input(format!(
                "{patterns:?} selects no hook point"
            )));
        }
        Ok(Self {
            label: label.to_string(),
            points,
            mode,
            also_zero: Vec::new(),
        })
    }

    /// This ablation with the points of `patterns` (comma-separated globs, as [`Ablation::parse`]) also
    /// zero-ablated; points already in `points` stay as they are.
    pub fn and_zero(mut self, gm: &GenirModel, patterns: &str) -> Result<Self> {
        let zero = Self::parse(gm, &self.label, patterns, AblationMode::Zero)?;
        for p in zero.points {
            if !self.points.contains(&p) && !self.also_zero.contains(&p) {
                self.also_zero.push(p);
            }
        }
        Ok(self)
    }

    /// The mode column of the ablation table: `zero`, `mean`, or `mean+zero` for a mixed ablation.
    pub fn mode_label(&self) -> String {
        match (self.mode, self.also_zero.is_empty()) {
            (m, true) => m.name().to_string(),
            (AblationMode::Zero, false) => "zero".to_string(),
            (AblationMode::Mean, false) => "mean+zero".to_string(),
        }
    }

    /// Every ablated point: `points`, then `also_zero`.
    pub fn all_points(&self) -> Vec<HookPoint> {
        let mut v = self.points.clone();
        v.extend(self.also_zero.iter().copied());
        v
    }

    /// The model with these components removed for good: it skips them (faster) and can be saved. A zero
    /// ablation ([`T5Model::remove_components`]) keeps the Hugging Face layout exact (the removed outputs'
    /// projections are zero); a mean ablation ([`T5Model::replace_components_with_means`]) makes each
    /// output its mean over the `reference` queries (as [`mean_activations`]), kept in `config.json` for
    /// genir. Only whole components (`hook_self_attn_out`, `hook_cross_attn_out`, `hook_mlp_out`) can be
    /// removed; anything else is an error, as is a mean ablation without reference queries.
    ///
    /// [`T5Model::remove_components`]: genir_model::t5::T5Model::remove_components
    /// [`T5Model::replace_components_with_means`]: genir_model::t5::T5Model::replace_components_with_means
    pub fn prune(&self, gm: &GenirModel, reference: &[String]) -> Result<GenirModel> {
        let model = match self.mode {
            AblationMode::Zero => gm.model.clone().remove_components(&self.all_points())?,
            AblationMode::Mean => {
                if let Some(p) = self.points.iter().find(|p| {
                    !matches!(
                        p.site,
                        Site::SelfAttnOut | Site::CrossAttnOut | Site::MlpOut
                    ) || p.layer.is_none()
                }) {
                    return Err(InterpError::Input(format!(
                        "{}: cannot remove {p}: only a block's hook_self_attn_out, hook_cross_attn_out or \
                         hook_mlp_out names a removable component",
                        self.label
                    )));
                }
                let means = mean_activations(gm, reference, &self.points, 64)?
                    .into_iter()
                    .map(|(p, a)| Ok((p, a.to_vec()?)))
                    .collect::<Result<Vec<_>>>()?;
                // the means are the unablated model's, as in `ablation_study` (and the paper's circuit)
                gm.model
                    .clone()
                    .replace_components_with_means(&means)?
                    .remove_components(&self.also_zero)?
            }
        };
        Ok(GenirModel {
            model,
            tok: gm.tok.clone(),
            scheme: gm.scheme.clone(),
            max_source_len: gm.max_source_len,
        })
    }

    /// Every decoder layer's self-attention output (the paper's "remove self-attention").
    pub fn decoder_self_attention(gm: &GenirModel, mode: AblationMode) -> Result<Self> {
        Self::parse(
            gm,
            "decoder_self_attn",
            "decoder.blocks.*.hook_self_attn_out",
            mode,
        )
    }
}

/// Whether a point's position axis runs over the (padded) source.
fn over_source(p: &HookPoint) -> bool {
    p.stack == Stack::Encoder
        || matches!(
            p.site,
            Site::Attn(AttnKind::CrossAttn, AttnSite::K | AttnSite::V)
        )
}

/// Mean activations of `points` over the reference queries at the first decoding step: shape
/// `[1, 1, ...]` (rank 3: `[1, 1, d]`; per head: `[1, 1, head, d_head]`).
pub fn mean_activations(
    gm: &GenirModel,
    reference: &[String],
    points: &[HookPoint],
    batch_size: usize,
) -> Result<Vec<(HookPoint, Activation)>> {
    if reference.is_empty() {
        return Err(InterpError::Input(
            "mean ablation needs a non-empty reference query set".into(),
        ));
    }
    if let Some(p) = points
        .iter()
        .find(|p| matches!(p.site, Site::Attn(_, AttnSite::Scores | AttnSite::Pattern)))
    {
        return Err(InterpError::Input(format!(
            "{p}: mean ablation of attention scores or patterns is not supported (their key axis depends on \
             the query length); use zero ablation"
        )));
    }
    let model = &gm.model;
    let device = model.shared.val().device();
    let start = model.config.decoder_start() as u32;
    let searcher = gm.searcher()?;
    let mut sums: Vec<(Vec<f64>, f64, Vec<usize>)> = points
        .iter()
        .map(|_| (Vec::new(), 0.0, Vec::new()))
        .collect();
    for chunk in reference.chunks(batch_size.max(1)) {
        let ids = searcher.encode_queries(chunk)?;
        let dec: Vec<Vec<u32>> = ids.iter().map(|_| vec![start]).collect();
        let input = Seq2SeqInput::from_ids(&ids, &dec, model.config.pad_token_id as u32, &device)?;
        let mask = host(input.attention_mask.clone().float())?;
        let s = input.attention_mask.dims()[1];
        let mut hooks = Hooks::caching(HookFilter::points(points));
        model.forward(&input, &mut hooks)?;
        let cache = hooks.take_cache();
        for (p, acc) in points.iter().zip(sums.iter_mut()) {
            let act = cache.require(p)?;
            let dims = act.dims();
            let values = act.to_vec()?;
            let (b, pos) = (dims[0], dims[1]);
            let inner: usize = dims[2..].iter().product();
            if acc.0.is_empty() {
                acc.0 = vec![0.0; inner];
                acc.2 = dims[2..].to_vec();
            }
            for i in 0..b {
                for j in 0..pos {
                    let w = if over_source(p) && pos == s {
                        f64::from(mask[i * s + j])
                    } else {
                        1.0
                    };
                    if w == 0.0 {
                        continue;
                    }
                    let row = &values[(i * pos + j) * inner..(i * pos + j + 1) * inner];
                    for (a, &v) in acc.0.iter_mut().zip(row) {
                        *a += w * f64::from(v);
                    }
                    acc.1 += w;
                }
            }
        }
    }
    Ok(points
        .iter()
        .zip(sums)
        .map(|(p, (sum, n, inner))| {
            let mean: Vec<f32> = sum.iter().map(|v| (v / n.max(1.0)) as f32).collect();
            let act = if inner.len() == 1 {
                Activation::Rank3(Tensor::from_data(
                    TensorData::new(mean, [1, 1, inner[0]]),
                    &device,
                ))
            } else {
                Activation::Rank4(Tensor::from_data(
                    TensorData::new(mean, [1, 1, inner[0], inner[1]]),
                    &device,
                ))
            };
            (*p, act)
        })
        .collect())
}

/// Settings of an ablation study.
#[derive(Clone, Debug)]
pub struct AblationConfig {
    /// Queries per forward pass.
    pub batch_size: usize,
    /// What documents are ranked among: docid tokens (constrained search, the default) or the whole
    /// vocabulary (the paper's scripts).
    pub rank_over: RankOver,
}

impl Default for AblationConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            rank_over: RankOver::Docids,
        }
    }
}

/// Hits@1 / Hits@10 / MRR@10 on `set` without ablation (row `none`) and with each ablation (atomic docids).
/// Mean ablations average over the `reference` query texts.
///
/// One row per ablation: `label, mode, points` (comma-separated hook names), `queries, hits_at_1,
/// hits_at_10, mrr_at_10, delta_hits_at_1` (change from the unablated model).
pub fn ablation_study(
    gm: &GenirModel,
    set: &QuerySet,
    ablations: &[Ablation],
    reference: Option<&[String]>,
    cfg: &AblationConfig,
) -> Result<Table> {
    if set.queries.is_empty() {
        return Err(InterpError::Input("no queries to evaluate".into()));
    }
    let searcher = gm.searcher()?;
    let model = &gm.model;
    let (e, d) = model.depth();
    let eval = |hooks: &mut Hooks<'_>| -> Result<genir_train::metrics::Evaluation> {
        let run = run_queries(&set.queries, cfg.batch_size, "ablation", |texts| {
            let ids = searcher.encode_queries(texts)?;
            rank_atomic(
                model,
                model,
                &gm.scheme,
                &ids,
                None,
                10,
                hooks,
                None,
                cfg.rank_over,
            )
        })?;
        Ok(evaluate_set(&run, set))
    };
    let base = eval(&mut Hooks::none())?;
    let mut rows = vec![(
        "none".to_string(),
        "none".to_string(),
        String::new(),
        base.clone(),
    )];
    for a in ablations {
        for p in &a.points {
            p.validate(e, d).map_err(InterpError::from)?;
        }
        let mut hooks = Hooks::none();
        for p in &a.also_zero {
            p.validate(e, d).map_err(InterpError::from)?;
            hooks.add(*p, Intervention::Zero(Selection::all()));
        }
        match a.mode {
            AblationMode::Zero => {
                for p in &a.points {
                    hooks.add(*p, Intervention::Zero(Selection::all()));
                }
            }
            AblationMode::Mean => {
                let reference = reference.ok_or_else(|| {
                    InterpError::Input(format!(
                        "ablation {}: mean ablation needs reference queries",
                        a.label
                    ))
                })?;
                for (p, mean) in mean_activations(gm, reference, &a.points, cfg.batch_size)? {
                    hooks.add(
                        p,
                        Intervention::Mean {
                            mean,
                            selection: Selection::all(),
                        },
                    );
                }
            }
        }
        let ev = eval(&mut hooks)?;
        tracing::info!(label = %a.label, hits_at_1 = ev.hits_at_1, base = base.hits_at_1, "ablation");
        let names: Vec<String> = a.all_points().iter().map(|p| p.to_string()).collect();
        rows.push((a.label.clone(), a.mode_label(), names.join(","), ev));
    }
    Ok(Table::new(vec![
        col(
            "label",
            rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        ),
        col(
            "mode",
            rows.iter().map(|r| r.1.to_string()).collect::<Vec<_>>(),
        ),
        col(
            "points",
            rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        ),
        col(
            "queries",
            rows.iter()
                .map(|r| r.3.per_query.len() as i64)
                .collect::<Vec<_>>(),
        ),
        col(
            "hits_at_1",
            rows.iter().map(|r| r.3.hits_at_1).collect::<Vec<_>>(),
        ),
        col(
            "hits_at_10",
            rows.iter().map(|r| r.3.hits_at_10).collect::<Vec<_>>(),
        ),
        col(
            "mrr_at_10",
            rows.iter().map(|r| r.3.mrr_at_10).collect::<Vec<_>>(),
        ),
        col(
            "delta_hits_at_1",
            rows.iter()
                .map(|r| r.3.hits_at_1 - base.hits_at_1)
                .collect::<Vec<_>>(),
        ),
    ])?)
}
