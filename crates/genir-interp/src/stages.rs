//! The decoder's stages, derived from data, and path patching between components.
//!
//! Reusch & Belinkov split the 24 decoder layers of T5-large into three stages: **priming** (layers 0-6:
//! the residual stream is prepared for docid tokens, cross-attention matters little), **bridging** (7-17:
//! cross-attention moves query information from the encoder into the residual stream) and **interaction**
//! (18-23: MLPs turn that information into the docid, whose rank drops to 1). [`derive_stages`] finds the
//! same split for any model from a logit-lens table and an activation-patching table:
//!
//! - interaction starts at the first layer whose residual stream (`resid_post`, through the lens) gives the
//!   correct docid at least [`StageConfig::rr_fraction`] of the reciprocal rank it has after the last layer;
//! - bridging starts at the first earlier layer whose cross-attention output, patched from the clean run,
//!   restores at least [`StageConfig::cross_fraction`] of the largest cross-attention patching effect.
//!
//! [`path_patching`] measures which upstream components drive a chosen downstream one (e.g. cross-attention
//! or a late MLP): the sender's clean output reaches the receiver only along the direct residual path.

use std::collections::BTreeMap;

use burn::prelude::*;
use genir_data::Table;
use genir_model::hooks::{
    Activation, ActivationCache, HookFilter, HookPoint, Hooks, Intervention, Selection, Site, Stack,
};
use genir_train::bundle::GenirModel;

use crate::ablation::{ablation_study, Ablation, AblationConfig, AblationMode};
use crate::common::Probe;
use crate::common::{cached3, col, f64_col, i64_col, str_col};
use crate::error::{InterpError, Result};
use crate::lens::{logit_lens, LensConfig};
use crate::patching::{activation_patching, PatchTarget};
use crate::patching::{prepare_pair, PairRun, PatchConfig, PatchPair, PreparedPair};

/// A decoder stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Stage I: the residual stream is prepared for docid tokens.
    Priming,
    /// Stage II: cross-attention brings query information in.
    Bridging,
    /// Stage III: the MLPs write the docid.
    Interaction,
}

impl Stage {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Priming => "priming",
            Stage::Bridging => "bridging",
            Stage::Interaction => "interaction",
        }
    }
}

/// Decoder layers `0..bridging_start` are priming, `bridging_start..interaction_start` bridging, the rest
/// interaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageSplit {
    /// Decoder layers.
    pub layers: usize,
    /// First bridging layer.
    pub bridging_start: usize,
    /// First interaction layer.
    pub interaction_start: usize,
}

impl StageSplit {
    /// A split; errors unless `bridging_start <= interaction_start <= layers`.
    pub fn new(layers: usize, bridging_start: usize, interaction_start: usize) -> Result<Self> {
        if bridging_start > interaction_start || interaction_start > layers {
            return Err(InterpError::Input(format!(
                "stage split {bridging_start}/{interaction_start} does not fit {layers} decoder layers"
            )));
        }
        Ok(Self {
            layers,
            bridging_start,
            interaction_start,
        })
    }

    /// The paper's split of T5-large's 24 decoder layers: 0-6 / 7-17 / 18-23.
    pub fn paper_t5_large() -> Self {
        Self {
            layers: 24,
            bridging_start: 7,
            interaction_start: 18,
        }
    }

    /// The stage of decoder layer `l`.
    pub fn stage(&self, l: usize) -> Stage {
        if l < self.bridging_start {
            Stage::Priming
        } else if l < self.interaction_start {
            Stage::Bridging
        } else {
            Stage::Interaction
        }
    }

    /// `"0-2 / 3-4 / 5-5"`-style description (`-` for an empty stage).
    pub fn describe(&self) -> String {
        let r = |a: usize, b: usize| {
            if a < b {
                format!("{}-{}", a, b - 1)
            } else {
                "-".into()
            }
        };
        format!(
            "{} / {} / {}",
            r(0, self.bridging_start),
            r(self.bridging_start, self.interaction_start),
            r(self.interaction_start, self.layers)
        )
    }

    /// The paper's minimal circuit on this split (technion-cs-nlp/re-gen-ir, `eval_patching_all_stages.py`):
    /// every decoder self-attention output and the priming layers' cross-attention outputs zeroed, the
    /// priming and bridging layers' MLP outputs replaced by their mean over a reference query set; the
    /// interaction layers' cross-attention and MLPs are kept.
    pub fn minimal_circuit(&self, gm: &GenirModel) -> Result<Ablation> {
        let mut zero = vec!["decoder.blocks.*.hook_self_attn_out".to_string()];
        for l in 0..self.bridging_start {
            zero.push(format!("decoder.blocks.{l}.hook_cross_attn_out"));
        }
        let mean: Vec<String> = (0..self.interaction_start)
            .map(|l| format!("decoder.blocks.{l}.hook_mlp_out"))
            .collect();
        let label = format!("minimal circuit (stages {})", self.describe());
        if mean.is_empty() {
            // every layer interacts: nothing to mean-ablate
            return Ablation::parse(gm, &label, &zero.join(","), AblationMode::Zero);
        }
        Ablation::parse(gm, &label, &mean.join(","), AblationMode::Mean)?
            .and_zero(gm, &zero.join(","))
    }
}

/// Thresholds of [`derive_stages`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageConfig {
    /// Interaction starts where the lens's mean reciprocal rank of the correct docid (among docid tokens)
    /// first reaches this fraction of its value after the last layer.
    pub rr_fraction: f64,
    /// Bridging starts at the first earlier layer whose cross-attention patching effect reaches this fraction
    /// of the largest one.
    pub cross_fraction: f64,
}

impl Default for StageConfig {
    fn default() -> Self {
        Self {
            rr_fraction: 0.5,
            cross_fraction: 0.25,
        }
    }
}

fn layer_means(layer: &[i64], keep: impl Fn(usize) -> bool, value: &[f64]) -> BTreeMap<i64, f64> {
    let mut acc: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for i in 0..layer.len() {
        if keep(i) && value[i].is_finite() {
            let e = acc.entry(layer[i]).or_default();
            e.0 += value[i];
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(l, (s, n))| (l, s / n as f64))
        .collect()
}

/// Derives the stage split from a [`logit_lens`](crate::lens::logit_lens) table and an
/// [`activation_patching`](crate::patching::activation_patching) table with the `components` target (same
/// model). Also returns the evidence per layer: `layer, stage, lens_reciprocal_rank` (mean over probes of
/// `1 / rank_in_docids` at `resid_post`), `self_attn_patch`, `cross_attn_patch`, `mlp_patch` (mean
/// normalised patching effect of each component output).
pub fn derive_stages(
    lens: &Table,
    patching: &Table,
    cfg: &StageConfig,
) -> Result<(StageSplit, Table)> {
    let (l_layer, l_comp) = (i64_col(lens, "layer")?, str_col(lens, "component")?);
    let rr: Vec<f64> = i64_col(lens, "rank_in_docids")?
        .iter()
        .map(|&r| 1.0 / r.max(1) as f64)
        .collect();
    let lens_rr = layer_means(&l_layer, |i| l_comp[i] == "resid_post", &rr);
    let (p_layer, p_target, p_comp, p_value) = (
        i64_col(patching, "layer")?,
        str_col(patching, "target")?,
        str_col(patching, "component")?,
        f64_col(patching, "value")?,
    );
    let patch = |name: &str| {
        layer_means(
            &p_layer,
            |i| p_target[i] == "components" && p_comp[i] == name,
            &p_value,
        )
    };
    let (sa, ca, mlp) = (
        patch("self_attn_out"),
        patch("cross_attn_out"),
        patch("mlp_out"),
    );
    let layers = lens_rr
        .keys()
        .max()
        .map(|&l| l as usize + 1)
        .ok_or_else(|| InterpError::Input("the logit-lens table has no resid_post rows".into()))?;
    if ca.is_empty() {
        return Err(InterpError::Input(
            "the patching table has no component rows (run it with the components target)".into(),
        ));
    }
    let rr_at = |l: usize| lens_rr.get(&(l as i64)).copied().unwrap_or(0.0);
    let last = rr_at(layers - 1);
    let interaction_start = (0..layers)
        .find(|&l| rr_at(l) >= cfg.rr_fraction * last)
        .unwrap_or(layers - 1);
    let ca_at = |l: usize| ca.get(&(l as i64)).copied().unwrap_or(0.0);
    let ca_max = (0..layers).map(ca_at).fold(0.0f64, f64::max);
    let bridging_start = (0..interaction_start)
        .find(|&l| ca_max > 0.0 && ca_at(l) >= cfg.cross_fraction * ca_max)
        .unwrap_or(interaction_start);
    let split = StageSplit::new(layers, bridging_start, interaction_start)?;
    let get = |m: &BTreeMap<i64, f64>, l: usize| m.get(&(l as i64)).copied().unwrap_or(f64::NAN);
    let df = Table::new(vec![
        col("layer", (0..layers as i64).collect::<Vec<_>>()),
        col(
            "stage",
            (0..layers)
                .map(|l| split.stage(l).name().to_string())
                .collect::<Vec<_>>(),
        ),
        col(
            "lens_reciprocal_rank",
            (0..layers).map(|l| get(&lens_rr, l)).collect::<Vec<_>>(),
        ),
        col(
            "self_attn_patch",
            (0..layers).map(|l| get(&sa, l)).collect::<Vec<_>>(),
        ),
        col(
            "cross_attn_patch",
            (0..layers).map(|l| get(&ca, l)).collect::<Vec<_>>(),
        ),
        col(
            "mlp_patch",
            (0..layers).map(|l| get(&mlp, l)).collect::<Vec<_>>(),
        ),
    ])?;
    Ok((split, df))
}

/// The decoder component outputs path patching works with.
const COMPONENTS: [Site; 3] = [Site::SelfAttnOut, Site::CrossAttnOut, Site::MlpOut];

fn component_rank(site: Site) -> Option<usize> {
    COMPONENTS.iter().position(|&s| s == site)
}

/// Whether `a` runs before `b` in the decoder (both decoder component outputs).
fn before(a: &HookPoint, b: &HookPoint) -> bool {
    match (
        a.layer,
        b.layer,
        component_rank(a.site),
        component_rank(b.site),
    ) {
        (Some(la), Some(lb), Some(ra), Some(rb)) => (la, ra) < (lb, rb),
        _ => false,
    }
}

/// Checks a sender or receiver: a decoder `hook_self_attn_out`, `hook_cross_attn_out` or `hook_mlp_out`.
fn check_component(p: &HookPoint, layers: usize, role: &str) -> Result<()> {
    let ok = p.stack == Stack::Decoder
        && p.layer.is_some_and(|l| l < layers)
        && component_rank(p.site).is_some();
    if ok {
        Ok(())
    } else {
        Err(InterpError::Input(format!(
            "path patching {role} {p}: must be a decoder block's hook_self_attn_out, hook_cross_attn_out or hook_mlp_out"
        )))
    }
}

/// The (sender, receiver) pairs of every sender before every receiver.
pub fn sender_receiver_pairs(
    senders: &[HookPoint],
    receivers: &[HookPoint],
) -> Vec<(HookPoint, HookPoint)> {
    receivers
        .iter()
        .flat_map(|r| {
            senders
                .iter()
                .filter(move |s| before(s, r))
                .map(move |s| (*s, *r))
        })
        .collect()
}

/// Every decoder component output of `layers` layers (self-attention, cross-attention, MLP).
pub fn decoder_components(layers: usize) -> Vec<HookPoint> {
    (0..layers)
        .flat_map(|l| {
            COMPONENTS
                .iter()
                .map(move |&s| HookPoint::block(Stack::Decoder, l, s))
        })
        .collect()
}

impl PairRun<'_> {
    /// Path patching of `edges` (sender, receiver): step 1 runs the base with the sender's clean output and
    /// every other component output between them frozen to the base run, caching the receiver; step 2 runs
    /// the base with only the receiver patched to that value. One row per edge, batched.
    fn run_paths(&self, edges: &[(HookPoint, HookPoint)], batch: usize) -> Result<Vec<f64>> {
        let layers = self.gm.model.decoder.blocks.len();
        let all = decoder_components(layers);
        let x0 = cached3(
            &self.base_cache,
            HookPoint::block(Stack::Decoder, 0, Site::ResidPre),
        )?;
        let mut out = Vec::with_capacity(edges.len());
        for chunk in edges.chunks(batch.max(1)) {
            let n = chunk.len();
            let rep = |cache: &ActivationCache, p: &HookPoint| -> Result<Tensor<3>> {
                Ok(cached3(cache, *p)?.repeat_dim(0, n))
            };
            // step 1
            let receivers: Vec<HookPoint> = chunk.iter().map(|e| e.1).collect();
            let mut hooks = Hooks::caching(HookFilter::points(&receivers));
            let mut sources: BTreeMap<(bool, HookPoint), Tensor<3>> = BTreeMap::new();
            for (row, (s, r)) in chunk.iter().enumerate() {
                for p in all.iter().filter(|p| p != &s && p != &r) {
                    if before(s, p) && before(p, r) {
                        let source = match sources.entry((false, *p)) {
                            std::collections::btree_map::Entry::Occupied(e) => e.get().clone(),
                            std::collections::btree_map::Entry::Vacant(e) => {
                                e.insert(rep(&self.base_cache, p)?).clone()
                            }
                        };
                        hooks.add(
                            *p,
                            Intervention::Patch {
                                source: Activation::Rank3(source),
                                selection: Selection::batch(vec![row]),
                            },
                        );
                    }
                }
                let source = match sources.entry((true, *s)) {
                    std::collections::btree_map::Entry::Occupied(e) => e.get().clone(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(rep(&self.cache, s)?).clone()
                    }
                };
                hooks.add(
                    *s,
                    Intervention::Patch {
                        source: Activation::Rank3(source),
                        selection: Selection::batch(vec![row]),
                    },
                );
            }
            self.decode_rows(x0.clone(), n, &mut hooks)?;
            let step1 = hooks.take_cache();
            // step 2
            let mut hooks = Hooks::none();
            for (row, (_, r)) in chunk.iter().enumerate() {
                hooks.add(
                    *r,
                    Intervention::Patch {
                        source: step1.require(r)?.clone(),
                        selection: Selection::batch(vec![row]),
                    },
                );
            }
            let h = self.decode_rows(x0.clone(), n, &mut hooks)?;
            out.extend(self.metrics(h)?);
        }
        Ok(out)
    }
}

/// Path patching: for each pair and each (sender, receiver) edge with the sender before the receiver, the
/// normalised metric when the sender's clean output reaches the receiver only along the direct residual
/// path (every component output between them frozen to the corrupted run), and the receiver's output is
/// then patched into the corrupted run.
///
/// Senders and receivers are decoder component outputs (`decoder.blocks.{l}.hook_{self_attn,cross_attn,
/// mlp}_out`). One row per pair x edge: `qid, sender, receiver, sender_layer, receiver_layer, raw, clean,
/// corrupt, value` (0 = corrupted, 1 = clean).
pub fn path_patching(
    gm: &GenirModel,
    pairs: &[PatchPair],
    senders: &[HookPoint],
    receivers: &[HookPoint],
    cfg: &PatchConfig,
) -> Result<Table> {
    if pairs.is_empty() {
        return Err(InterpError::Input("no query pairs to patch".into()));
    }
    let layers = gm.model.decoder.blocks.len();
    for s in senders {
        check_component(s, layers, "sender")?;
    }
    for r in receivers {
        check_component(r, layers, "receiver")?;
    }
    let edges = sender_receiver_pairs(senders, receivers);
    if edges.is_empty() {
        return Err(InterpError::Input(
            "path patching: no sender runs before any receiver".into(),
        ));
    }
    let searcher = gm.searcher()?;
    let (mut qid, mut snd, mut rcv, mut sl, mut rl) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut raw, mut clean, mut corrupt, mut value) = (vec![], vec![], vec![], vec![]);
    for pair in pairs {
        let PreparedPair {
            run,
            m_clean,
            m_corrupt,
            ..
        } = prepare_pair(gm, &searcher, pair, cfg)?;
        let denom = m_clean - m_corrupt;
        for ((s, r), m) in edges.iter().zip(run.run_paths(&edges, cfg.batch_size)?) {
            qid.push(pair.qid.clone());
            snd.push(s.to_string());
            rcv.push(r.to_string());
            sl.push(s.layer.unwrap_or_default() as i64);
            rl.push(r.layer.unwrap_or_default() as i64);
            raw.push(m);
            clean.push(m_clean);
            corrupt.push(m_corrupt);
            value.push(if denom.abs() < 1e-9 {
                f64::NAN
            } else {
                (m - m_corrupt) / denom
            });
        }
    }
    Ok(Table::new(vec![
        col("qid", qid),
        col("sender", snd),
        col("receiver", rcv),
        col("sender_layer", sl),
        col("receiver_layer", rl),
        col("raw", raw),
        col("clean", clean),
        col("corrupt", corrupt),
        col("value", value),
    ])?)
}

/// Everything [`stage_analysis`] finds.
pub struct StageAnalysis {
    /// The derived split.
    pub split: StageSplit,
    /// Per-layer evidence ([`derive_stages`]).
    pub evidence: Table,
    /// Path patching from every decoder component into the cross-attention of the bridging and interaction
    /// layers and the MLPs of the interaction layers ([`path_patching`]).
    pub paths: Table,
    /// Hits@1 / Hits@10 of the full model and of its minimal circuit on the split
    /// ([`StageSplit::minimal_circuit`], [`ablation_study`]).
    pub circuit: Table,
}

/// The stage analysis end to end: logit lens over `probes`, component patching of `pairs`, the split derived
/// from both, path patching into the stages' key components, and the minimal circuit evaluated on `set`
/// (mean activations over `set`'s queries).
pub fn stage_analysis(
    gm: &GenirModel,
    probes: &[Probe],
    pairs: &[PatchPair],
    set: &genir_data::QuerySet,
    cfg: &StageConfig,
) -> Result<StageAnalysis> {
    // the circuit is evaluated by ranking atomic docids: say so before the lens and patching run
    if !gm.scheme.is_atomic() {
        return Err(InterpError::Input(format!(
            "the stage analysis ends with the minimal circuit's retrieval, which ranks atomic docids; this \
             model's are {}",
            gm.scheme.kind
        )));
    }
    let lens = logit_lens(gm, probes, &LensConfig::default())?;
    let pcfg = PatchConfig {
        targets: vec![PatchTarget::Components],
        ..PatchConfig::default()
    };
    let patching = activation_patching(gm, pairs, &pcfg)?;
    let (split, evidence) = derive_stages(&lens, &patching, cfg)?;
    let layers = split.layers;
    let mut receivers: Vec<HookPoint> = (split.bridging_start..layers)
        .map(|l| HookPoint::block(Stack::Decoder, l, Site::CrossAttnOut))
        .collect();
    receivers.extend(
        (split.interaction_start..layers)
            .map(|l| HookPoint::block(Stack::Decoder, l, Site::MlpOut)),
    );
    let senders = decoder_components(layers);
    let paths = path_patching(gm, pairs, &senders, &receivers, &pcfg)?;
    let reference: Vec<String> = set.queries.iter().map(|q| q.text.clone()).collect();
    let circuit = ablation_study(
        gm,
        set,
        &[split.minimal_circuit(gm)?],
        Some(&reference),
        &AblationConfig::default(),
    )?;
    tracing::info!(split = %split.describe(), "decoder stages");
    Ok(StageAnalysis {
        split,
        evidence,
        paths,
        circuit,
    })
}
