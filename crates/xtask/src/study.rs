//! `cargo xtask reproduce`: trains the models, runs every analysis and the edits, and collects the results
//! the report shows. Each step is cached (see [`crate::steps`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use genir_data::Collection;
use genir_interp::ablation::{ablation_study, Ablation, AblationConfig, AblationMode};
use genir_interp::attribution::{
    agreement, attribution_patching, attribution_patching_with, EncoderEstimate,
};
use genir_interp::heads::{head_vocab_projection, HeadProjectionConfig};
use genir_interp::lens::{component_contributions, encoder_lens, logit_lens, LensConfig};
use genir_interp::patching::{
    activation_patching, make_pairs, make_pairs_at, Corruption, PatchConfig, PatchTarget,
};
use genir_interp::stages::{stage_analysis, StageConfig};
use genir_interp::swap::{EncoderSwap, SwapNorm};
use genir_interp::{figures, Probe};
use genir_mechir::plot::{block_panels, head_panels, heatmap};
use genir_mechir::{
    sweep_blocks, sweep_heads, EncodeConfig, PairDataset, PairPerturbation, PatchModel, Sampling,
};
use genir_model::bert::{Cat, Dot};
use genir_model::device::Backend;
use genir_model::t5::T5Config;
use genir_train::bundle::GenirModel;
use genir_train::docid::DocidKind;
use genir_train::examples::ExampleConfig;
use genir_train::train::{Architecture, Init, Progress, StepInfo, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::frames::{f64s, group, i64s, mean, median, strs};
use crate::steps::{Key, StepRecord, Steps};
use genir_interp::figures::svg_to_png;

/// Peak learning rate of the paper scale's GenIR models. The default scale's 1e-3 under-trains the larger
/// model (20 epochs: training loss 3.77, training Hits@1 0.289, test Hits@1 0.029); at 3e-4 it ends at loss
/// 1.10, training Hits@1 1.000 and test Hits@1 0.054 / Hits@10 0.161 (2026-12-05, `wiki-genir`).
const PAPER_LR: f64 = 3e-4;
/// Continued training's step limit per added document for a pretrained model (a step of flan-t5-small takes
/// about a second on two cores; the from-scratch scales use the library default).
const PRETRAINED_FINETUNE_STEPS: usize = 30;

/// How big a study to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Minutes on a laptop: the 179-passage mini corpus, a tiny model (used by the tests).
    Smoke,
    /// The shipped 1,985-passage corpus with the README's recipe (under 30 minutes on 2 CPU cores).
    Default,
    /// A larger model (learning rate 3e-4), longer training, more probes and block patching of both rankers.
    Paper,
}

/// Everything a scale decides.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleParams {
    /// Collection used when `--corpus` is not given.
    pub corpus: String,
    /// The GenIR model.
    pub arch: Architecture,
    /// Training epochs.
    pub epochs: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Documents left out of the "missing documents" model.
    pub missing: usize,
    /// Correctly retrieved queries analysed by the logit lens, contributions, head projection, ablations.
    pub probes: usize,
    /// Clean / corrupted pairs of the activation-patching sweep.
    pub patch_pairs: usize,
    /// Pairs of the MechIR head patching.
    pub mechir_pairs: usize,
    /// Pairs of the MechIR block patching (0: not run).
    pub mechir_block_pairs: usize,
    /// Documents added by each editing method.
    pub edit_docs: usize,
}

impl Scale {
    /// The parameters of this scale.
    pub fn params(self) -> ScaleParams {
        match self {
            Scale::Smoke => ScaleParams {
                corpus: "wiki-genir-mini".into(),
                arch: Architecture {
                    d_model: 64,
                    d_ff: 256,
                    layers: 2,
                    heads: 4,
                    text_vocab: 1000,
                },
                epochs: 12,
                lr: 1e-3,
                missing: 5,
                probes: 16,
                patch_pairs: 6,
                mechir_pairs: 3,
                mechir_block_pairs: 0,
                edit_docs: 3,
            },
            Scale::Default => ScaleParams {
                corpus: "wiki-genir".into(),
                arch: Architecture::default(),
                epochs: 6,
                lr: 1e-3,
                missing: 10,
                probes: 64,
                patch_pairs: 24,
                mechir_pairs: 8,
                mechir_block_pairs: 0,
                edit_docs: 20,
            },
            Scale::Paper => ScaleParams {
                corpus: "wiki-genir".into(),
                arch: Architecture {
                    d_model: 256,
                    d_ff: 1024,
                    layers: 4,
                    heads: 4,
                    text_vocab: 8000,
                },
                epochs: 20,
                lr: PAPER_LR,
                missing: 10,
                probes: 128,
                patch_pairs: 48,
                mechir_pairs: 16,
                mechir_block_pairs: 4,
                edit_docs: 50,
            },
        }
    }
}

/// Options of `cargo xtask reproduce`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shipped collection name or collection folder (`None`: the scale's).
    pub corpus: Option<String>,
    /// Scale.
    pub scale: Scale,
    /// Report folder.
    pub report: PathBuf,
    /// Work folder (models, cached steps).
    pub work: PathBuf,
    /// Compute backend.
    pub backend: Backend,
    /// Bi-encoder folder for the MechIR step (skipped with a reason when absent).
    pub bi_encoder: Option<PathBuf>,
    /// Cross-encoder folder for the MechIR step (skipped with a reason when absent).
    pub cross_encoder: Option<PathBuf>,
    /// Ignore the cache.
    pub force: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Start the GenIR models from this pretrained Hugging Face T5 folder (its architecture and tokenizer)
    /// instead of training the scale's architecture from scratch.
    pub pretrained: Option<PathBuf>,
    /// Training epochs instead of the scale's.
    pub epochs: Option<usize>,
    /// Peak learning rate instead of the scale's.
    pub lr: Option<f64>,
}

impl Options {
    /// The scale's parameters with this run's `epochs` and `lr` in place of the scale's.
    pub fn params(&self) -> ScaleParams {
        let mut p = self.scale.params();
        if let Some(e) = self.epochs {
            p.epochs = e;
        }
        if let Some(lr) = self.lr {
            p.lr = lr;
        }
        p
    }

    /// The default work folder: `target/reproduce/<scale>`, with `-<folder name>` appended for a pretrained
    /// start and `-<backend>` for a backend other than flex (so such a study does not overwrite the
    /// from-scratch flex one's cached steps).
    pub fn default_work(scale: Scale, pretrained: Option<&Path>, backend: Backend) -> PathBuf {
        let mut name = format!("{scale:?}").to_lowercase();
        if let Some(n) = pretrained.and_then(|p| p.file_name()) {
            name.push('-');
            name.push_str(&n.to_string_lossy());
        }
        if backend != Backend::Flex {
            name.push('-');
            name.push_str(backend.name());
        }
        PathBuf::from("target/reproduce").join(name)
    }
}

/// One model's retrieval quality on one split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelRow {
    /// `base` or `missing`.
    pub model: String,
    /// Documents whose texts and queries it was trained on.
    pub trained_docs: usize,
    /// Split evaluated.
    pub split: String,
    /// Queries.
    pub queries: usize,
    /// Hits@1.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub hits_at_1: f64,
    /// Hits@10.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub hits_at_10: f64,
    /// MRR@10.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mrr_at_10: f64,
}

/// A trained model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trained {
    /// Its folder.
    pub dir: PathBuf,
    /// Training steps.
    pub steps: usize,
    /// Examples per second of the last session.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub examples_per_sec: f64,
    /// Final training loss.
    pub final_loss: f32,
}

/// One encoder-swap evaluation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwapRow {
    /// Whose encoder.
    pub encoder: String,
    /// Whose decoder.
    pub decoder: String,
    /// Query subset.
    pub subset: String,
    /// Queries.
    pub queries: usize,
    /// Hits@1.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub hits_at_1: f64,
    /// Hits@10.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub hits_at_10: f64,
    /// MRR@10.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mrr_at_10: f64,
}

/// Per decoder layer and component: the logit lens summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LensRow {
    /// Layer.
    pub layer: i64,
    /// Component or residual point.
    pub component: String,
    /// Median rank of the correct docid (1 = top).
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub median_rank: f64,
    /// Share of probes with the correct docid at rank 1.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub top1: f64,
    /// Mean rank of all docid tokens.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mean_rank_docids: f64,
    /// Mean rank of all other tokens.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mean_rank_non_docids: f64,
}

/// Per decoder layer and component: the contribution summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContribRow {
    /// Layer.
    pub layer: i64,
    /// Component.
    pub component: String,
    /// Mean share of the residual change (by norm).
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub share: f64,
    /// Mean norm ratio to the residual change.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub ratio: f64,
    /// Mean cosine with the layer output.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub cos: f64,
}

/// A patched cell's mean metric.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PatchRow {
    /// Patch target.
    pub target: String,
    /// Layer.
    pub layer: i64,
    /// Component.
    pub component: String,
    /// Head (-1: none).
    pub head: i64,
    /// Position (-1: none).
    pub position: i64,
    /// Mean normalised metric (0 corrupted, 1 clean).
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub value: f64,
}

/// A cross-attention head's vocabulary projection summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeadRow {
    /// Layer.
    pub layer: i64,
    /// Head.
    pub head: i64,
    /// Mean rank of the correct docid among docid tokens.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub correct_rank: f64,
    /// The text tokens most often in the head's top 5, with counts.
    pub frequent_tokens: String,
    /// An example: query and the head's top text tokens for it.
    pub example: String,
}

/// An ablation's effect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationRow {
    /// Label.
    pub label: String,
    /// zero / mean.
    pub mode: String,
    /// Hits@1 on the correctly retrieved queries after ablation.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub hits_at_1: f64,
    /// Share of those queries no longer at rank 1 (the paper's Table 3 measure), in percent.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub lost_percent: f64,
}

/// One decoder layer's stage and evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageLayerRow {
    /// Decoder layer.
    pub layer: usize,
    /// priming / bridging / interaction.
    pub stage: String,
    /// Mean reciprocal rank of the correct docid (lens at resid_post).
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub lens_reciprocal_rank: f64,
    /// Mean patching effect of the self-attention output.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub self_attn_patch: f64,
    /// Mean patching effect of the cross-attention output.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub cross_attn_patch: f64,
    /// Mean patching effect of the MLP output.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mlp_patch: f64,
}

/// One path-patching edge, averaged over pairs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PathRow {
    /// Upstream component.
    pub sender: String,
    /// Downstream component.
    pub receiver: String,
    /// Mean normalised effect.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub value: f64,
}

/// Agreement of attribution with exact patching for one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgreementRow {
    /// Patch target (or `all`).
    pub target: String,
    /// Matched cells.
    pub n: i64,
    /// Pearson correlation of the normalised values.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub pearson: f64,
    /// Mean absolute difference.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mean_abs_diff: f64,
}

/// The stage analysis of the base model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StagesResult {
    /// `"0-1 / 2-3 / 4-5"`.
    pub split: String,
    /// Decoder layers.
    pub layers: usize,
    /// First bridging layer.
    pub bridging_start: usize,
    /// First interaction layer.
    pub interaction_start: usize,
    /// Hits@1 of the full model on the probes.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub full_hits_at_1: f64,
    /// Hits@1 of the minimal circuit.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub circuit_hits_at_1: f64,
    /// Per-layer evidence.
    pub evidence: Vec<StageLayerRow>,
    /// The ten strongest path-patching edges.
    pub top_paths: Vec<PathRow>,
    /// Attribution vs exact patching.
    pub attribution: Vec<AgreementRow>,
}

/// Epochs of the multi-token (naive docid) model: a from-scratch study's, and the least a pretrained one's
/// gets (naive docid tokens start from random rows: flan-t5-small on the mini corpus, 10 epochs at 3e-4,
/// retrieved 4 of 144 training queries).
const MT_EPOCHS: usize = 30;

/// Multi-token docids: a naive-docid model of the mini corpus, its per-step logit lens and the two
/// patching experiments (corrupted query with the clean docid prefix; the query held with another
/// document's prefix).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MultiTokenResult {
    /// The model.
    pub trained: Option<Trained>,
    /// How it was trained (`None` in studies cached before it was recorded: the smoke architecture from
    /// scratch).
    #[serde(default)]
    pub config: Option<TrainConfig>,
    /// Hits@1 on its training queries.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub train_hits_at_1: f64,
    /// Training queries retrieved at rank 1 (probes).
    pub probes: usize,
    /// Logit lens at each decoding step, residual stream after each layer.
    pub lens: Vec<MtLensRow>,
    /// Patching per experiment, step and layer.
    pub patching: Vec<MtPatchRow>,
}

impl MultiTokenResult {
    /// Whether the logit lens ran at decoding step `step` (it needs probes whose docid has a token there).
    pub fn lens_at(&self, step: usize) -> bool {
        self.lens.iter().any(|r| r.step == step)
    }

    /// Whether patching experiment `experiment` (`query` or `prefix`) ran at decoding step `step`.
    pub fn patched_at(&self, experiment: &str, step: usize) -> bool {
        self.patching
            .iter()
            .any(|r| r.step == step && r.experiment == experiment)
    }
}

/// One (step, layer) of the multi-token logit lens (`resid_post`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MtLensRow {
    /// Decoding step (0: the first docid token).
    pub step: usize,
    /// Decoder layer.
    pub layer: i64,
    /// Probes whose docid has a token at this step.
    pub probes: usize,
    /// Share with the correct token at rank 1.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub top1: f64,
    /// Median rank of the correct token.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub median_rank: f64,
}

/// One (experiment, step, layer) of the multi-token patching: median normalised effects over pairs (and
/// positions).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MtPatchRow {
    /// `query` (corrupted query, clean prefix) or `prefix` (same query, another docid prefix).
    pub experiment: String,
    /// Decoding step read.
    pub step: usize,
    /// Pairs.
    pub pairs: usize,
    /// Decoder layer.
    pub layer: i64,
    /// Self-attention output patched (all positions).
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub self_attn: f64,
    /// Cross-attention output patched.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub cross_attn: f64,
    /// MLP output patched.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub mlp: f64,
    /// The layer's residual stream (`resid_pre`) patched at the earlier docid positions only (start token
    /// and the fed docid tokens, not the position read).
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub earlier_positions: f64,
    /// The layer's residual stream patched at the position read only.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub read_position: f64,
}

fn multi_token_study(
    trained: &Trained,
    config: &TrainConfig,
    c: &Collection,
    max_pairs: usize,
    dir: &Path,
    device: &Device,
) -> Result<MultiTokenResult> {
    let gm = GenirModel::load(&trained.dir, device)?;
    let train = c.require_split("train")?;
    let run = gm.searcher()?.run(&train.queries, 1, 64, "mt")?;
    let train_hits_at_1 = genir_train::metrics::evaluate(&run, &train.qrels, None).hits_at_1;
    let all = Probe::from_query_set(&genir_interp::correctly_retrieved_in(
        &run,
        train,
        usize::MAX,
    )?);
    // docid lengths, looked up once for all steps
    let lens_of: Vec<usize> = all
        .iter()
        .map(|p| Ok(gm.scheme.target(gm.scheme.require(&p.docid, "")?).len()))
        .collect::<Result<_>>()?;
    let mut lens = Vec::new();
    let mut patching = Vec::new();
    for step in 0..3usize {
        // the token read is a digit, not the closing `</s>` (docids of every length are spread by a seeded
        // shuffle: the first probes are the one-digit docids)
        let mut probes: Vec<Probe> = all
            .iter()
            .zip(&lens_of)
            .filter(|(_, &n)| n > step + 1)
            .map(|(p, _)| p.clone())
            .collect();
        probes.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(step as u64));
        if probes.len() < 2 {
            continue;
        }
        let df = save(
            logit_lens(
                &gm,
                &probes,
                &LensConfig {
                    step,
                    ..LensConfig::default()
                },
            )?,
            dir,
            &format!("mt_logit_lens_step{step}"),
            figures::logit_lens_figure,
        )?;
        let keys = layer_component(&df)?;
        for (k, r) in group(&keys, &f64s(&df, "rank")?) {
            if k.1 == "resid_post" {
                lens.push(MtLensRow {
                    step,
                    layer: k.0,
                    probes: r.len(),
                    top1: r.iter().filter(|x| **x <= 1.0).count() as f64 / r.len().max(1) as f64,
                    median_rank: median(&r),
                });
            }
        }
        if step == 0 {
            continue;
        }
        let n = max_pairs.min(probes.len());
        let query_pairs =
            make_pairs_at(&gm, &probes[..n], &Corruption::OtherQuery { seed: 0 }, step)?;
        let prefix_pairs = match genir_interp::patching::prefix_pairs(&gm, &probes[..n], step, 0) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("multi-token prefix pairs at step {step}: {e}");
                Vec::new()
            }
        };
        for (experiment, pairs, corrupt_prefix) in [
            ("query", query_pairs, false),
            ("prefix", prefix_pairs, true),
        ] {
            if pairs.is_empty() {
                continue;
            }
            let cfg = PatchConfig {
                targets: vec![PatchTarget::Components, PatchTarget::DecoderPositions],
                decoder_prefix: step,
                corrupt_prefix,
                ..PatchConfig::default()
            };
            let df = save(
                activation_patching(&gm, &pairs, &cfg)?,
                dir,
                &format!("mt_patching_{experiment}_step{step}"),
                figures::patching_figure,
            )?;
            let (target, layer, comp, pos, value) = (
                strs(&df, "target")?,
                i64s(&df, "layer")?,
                strs(&df, "component")?,
                i64s(&df, "position")?,
                f64s(&df, "value")?,
            );
            // pairs whose two compared docid tokens coincide at this step have no logit difference (every
            // value NaN, warned about): the rows count the pairs that were measured
            let qids = strs(&df, "qid")?;
            let measured = (0..df.height())
                .filter(|&i| value[i].is_finite())
                .map(|i| qids[i].as_str())
                .collect::<BTreeSet<_>>()
                .len();
            let layers = gm.model.decoder.blocks.len() as i64;
            for l in 0..layers {
                let pick = |f: &dyn Fn(usize) -> bool| {
                    let v: Vec<f64> = (0..df.height())
                        .filter(|&i| layer[i] == l && f(i) && value[i].is_finite())
                        .map(|i| value[i])
                        .collect();
                    // median: a pair whose clean and corrupted metrics are close has huge normalised values
                    median(&v)
                };
                let (target, comp) = (&target, &comp);
                let comp_is = |name: &'static str| {
                    move |i: usize| target[i] == "components" && comp[i] == name
                };
                patching.push(MtPatchRow {
                    experiment: experiment.into(),
                    step,
                    pairs: measured,
                    layer: l,
                    self_attn: pick(&comp_is("self_attn_out")),
                    cross_attn: pick(&comp_is("cross_attn_out")),
                    mlp: pick(&comp_is("mlp_out")),
                    earlier_positions: pick(&|i| {
                        target[i] == "decoder_positions"
                            && comp[i] == "resid_pre"
                            && pos[i] < step as i64
                    }),
                    read_position: pick(&|i| {
                        target[i] == "decoder_positions"
                            && comp[i] == "resid_pre"
                            && pos[i] == step as i64
                    }),
                });
            }
        }
    }
    Ok(MultiTokenResult {
        trained: Some(trained.clone()),
        config: Some(config.clone()),
        train_hits_at_1,
        probes: all.len(),
        lens,
        patching,
    })
}

/// One (layer, component) of the encoder lens (the encoder's residual stream through the decoder's head).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncoderLensRow {
    /// Encoder layer.
    pub layer: i64,
    /// `resid_pre` (embeddings), `resid_post` or `final_norm`.
    pub component: String,
    /// Median rank of the correct docid, mean-pooled over the query's positions.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub median_rank: f64,
    /// Median over probes of the best rank at any single position.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub median_best_rank: f64,
    /// Share of probes with the correct docid at rank 1 at some position.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub top1_any_position: f64,
}

/// One MechIR sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MechirRow {
    /// Model folder name.
    pub model: String,
    /// dot / cat.
    pub kind: String,
    /// Perturbation.
    pub perturbation: String,
    /// heads / blocks.
    pub patch: String,
    /// Pairs.
    pub pairs: usize,
    /// Seconds the sweep took.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub seconds: f64,
    /// Mean relevance score of the original and of the perturbed documents.
    pub mean_scores: (f64, f64),
    /// The strongest cells: "L3H5 0.41" or "attn L2 pos 17 0.3".
    pub top: String,
    /// Figure stem.
    pub figure: String,
}

/// The edit comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EditsResult {
    /// Markdown table from genir-edit.
    pub markdown: String,
    /// The report itself.
    pub report: genir_edit::eval::EvalReport,
}

/// A figure of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    /// File stem under `figures/` (`.svg` and `.png` exist).
    pub stem: String,
    /// Caption.
    pub caption: String,
}

/// Every result the report shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Study {
    /// Collection name.
    pub corpus: String,
    /// Scale.
    pub scale: Scale,
    /// Its parameters.
    pub params: ScaleParams,
    /// Backend that ran it.
    pub backend: String,
    /// Documents / queries per split.
    pub collection_stats: String,
    /// Training configuration of the base model.
    pub train_config: TrainConfig,
    /// The base model's architecture (from its config.json after training).
    #[serde(default)]
    pub model_config: Option<T5Config>,
    /// Trained models.
    pub trained: BTreeMap<String, Trained>,
    /// Retrieval quality.
    pub models: Vec<ModelRow>,
    /// Documents the missing-documents model never saw.
    pub removed: Vec<String>,
    /// Encoder swap.
    pub swap: Vec<SwapRow>,
    /// Probes analysed (training queries the base model retrieves at rank 1).
    pub probes: usize,
    /// Logit lens.
    pub lens: Vec<LensRow>,
    /// The encoder's residual stream through the decoder's head.
    #[serde(default)]
    pub encoder_lens: Vec<EncoderLensRow>,
    /// Contributions.
    pub contrib: Vec<ContribRow>,
    /// Patching (components and top heads).
    pub patching: Vec<PatchRow>,
    /// Patching pairs.
    pub patch_pairs: usize,
    /// Head projection.
    pub heads: Vec<HeadRow>,
    /// Ablations.
    pub ablation: Vec<AblationRow>,
    /// Stages derived from the data, path patching, the minimal circuit and attribution patching.
    pub stages: StagesResult,
    /// Multi-token docids: per-step lens and the two patching experiments.
    #[serde(default)]
    pub multi_token: MultiTokenResult,
    /// MechIR sweeps.
    pub mechir: Vec<MechirRow>,
    /// MechIR models skipped, with the reason.
    pub mechir_skipped: Vec<String>,
    /// Edits.
    pub edits: Option<EditsResult>,
    /// The bi-encoder's dense retrieval on the edit comparison's query sets (empty without a bi-encoder).
    #[serde(default)]
    pub edits_dense: Vec<genir_edit::eval::Reference>,
    /// Figures.
    pub figures: Vec<Figure>,
    /// Steps, their times and whether they came from the cache.
    pub steps: Vec<StepRecord>,
    /// Seconds this run took.
    #[serde(deserialize_with = "crate::frames::nan_f64")]
    pub total_seconds: f64,
}

struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn step(&mut self, info: &StepInfo) {
        self.bar.set_length(info.total_steps as u64);
        self.bar.set_position(info.step as u64);
        self.bar.set_message(format!(
            "epoch {} loss {:.3} {:.0} ex/s",
            info.epoch + 1,
            info.loss,
            info.examples_per_sec
        ));
    }
    fn event(&mut self, message: &str) {
        tracing::info!("{message}");
    }
}

fn bar(progress: bool, label: &str) -> ProgressBar {
    let b = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{label:>12} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// A fingerprint of a collection's content.
/// `key` for a backend: itself on flex (the keys of earlier runs stay valid), else derived from the backend
/// (its numbers and times are that backend's).
fn with_backend(backend: Backend, key: Key) -> Result<Key> {
    Ok(match backend {
        Backend::Flex => key,
        b => Key::of(&("backend", b.name()), &[key])?,
    })
}

fn collection_key(c: &Collection) -> Result<Key> {
    let mut h = 0u64;
    for d in c.corpus.iter() {
        for s in [&d.docid, &d.title, &d.text] {
            h = crate::steps::fnv1a(s.as_bytes(), h);
        }
    }
    for (name, s) in &c.splits {
        h = crate::steps::fnv1a(name.as_bytes(), h);
        for q in s.queries.iter() {
            h = crate::steps::fnv1a(q.qid.as_bytes(), h);
            h = crate::steps::fnv1a(q.text.as_bytes(), h);
        }
        for r in s.qrels.iter() {
            h = crate::steps::fnv1a(r.qid.as_bytes(), h);
            h = crate::steps::fnv1a(r.docid.as_bytes(), h);
        }
    }
    Ok(Key(h))
}

/// Documents that are the only relevant document of at least one training query: the missing-documents
/// model leaves `n` of them out (seeded).
fn choose_removed(c: &Collection, n: usize, seed: u64) -> Result<Vec<String>> {
    let train = c.require_split("train")?;
    let mut cand = BTreeSet::new();
    for q in train.queries.iter() {
        let rel: Vec<&str> = train.qrels.relevant(&q.qid).collect();
        if rel.len() == 1 {
            cand.insert(rel[0].to_string());
        }
    }
    let mut cand: Vec<String> = cand.into_iter().collect();
    if cand.len() < n {
        bail!(
            "only {} documents have a training query of their own; {n} are needed",
            cand.len()
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    cand.shuffle(&mut rng);
    let mut v = cand[..n].to_vec();
    v.sort();
    Ok(v)
}

fn train_model(
    name: &str,
    cfg: &TrainConfig,
    c: &Collection,
    dir: &Path,
    resume: bool,
    device: &Device,
    progress: bool,
) -> Result<Trained> {
    let run = dir.join("model");
    let mut p = Bar {
        bar: bar(progress, name),
    };
    let trainer = Trainer::new(cfg.clone(), device.clone());
    let resume = resume && genir_train::train::latest_checkpoint(&run)?.is_some();
    if resume {
        tracing::info!("{name}: resuming the interrupted run in {}", run.display());
    }
    let s = trainer.train(c, &run, resume, &mut p)?;
    p.bar.finish_and_clear();
    Ok(Trained {
        dir: run,
        steps: s.state.step,
        examples_per_sec: s.examples_per_sec,
        final_loss: s.state.losses.last().map(|l| l.1).unwrap_or(f32::NAN),
    })
}

fn evaluate_model(
    gm: &GenirModel,
    name: &str,
    trained_docs: usize,
    c: &Collection,
) -> Result<Vec<ModelRow>> {
    let searcher = gm.searcher()?;
    let mut rows = Vec::new();
    for split in ["train", "validation", "test"] {
        let Some(set) = c.split(split) else { continue };
        let run = searcher.run(&set.queries, 10, 64, name)?;
        let e = genir_train::metrics::evaluate(&run, &set.qrels, None);
        rows.push(ModelRow {
            model: name.into(),
            trained_docs,
            split: split.into(),
            queries: e.per_query.len(),
            hits_at_1: e.hits_at_1,
            hits_at_10: e.hits_at_10,
            mrr_at_10: e.mrr_at_10,
        });
    }
    Ok(rows)
}

/// Writes an analysis's table and figure into `dir` under `stem` (see [`figures::write_analysis`]).
fn save(
    df: genir_data::Table,
    dir: &Path,
    stem: &str,
    figure: fn(&genir_data::Table, &Path) -> genir_interp::Result<()>,
) -> Result<genir_data::Table> {
    figures::write_analysis(&df, dir, stem, figure)?;
    Ok(df)
}

/// `(layer, component)` of every row.
fn layer_component(df: &genir_data::Table) -> Result<Vec<(i64, String)>> {
    Ok(i64s(df, "layer")?
        .into_iter()
        .zip(strs(df, "component")?)
        .collect())
}

/// The key of a GenIR model fine-tuned from the pretrained folder `dir`: the folder's, and how its tokenizer
/// is read (since its saved truncation and padding are no longer applied, as in Hugging Face: the
/// flan-t5-small checkpoint's `tokenizer.json` saves a truncation to 48 tokens, which cut every training
/// input there before; models trained so are retrained).
fn pretrained_start_key(dir: &Path) -> Result<Key> {
    Key::of(
        &"tokenizer.json settings not applied",
        &[model_folder_key(dir)?],
    )
}

/// A cache key for a model folder: the bytes of its config, tokenizer, weights and tokenizer and
/// sentence-transformers settings, so that a checkpoint
/// replaced by another of the same architecture and size does not reuse the old one's cached results.
fn model_folder_key(dir: &Path) -> Result<Key> {
    let mut h = 0;
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "pytorch_model.bin",
        // the settings that change how a ranker tokenizes, pools and compares
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ] {
        h = crate::steps::fnv1a(name.as_bytes(), h);
        let path = dir.join(name);
        if path.is_file() {
            h = crate::steps::hash_file(&path, h)?;
        }
    }
    Ok(Key(h))
}

/// Runs the study and writes the report; returns the study.
pub fn reproduce(opts: &Options) -> Result<Study> {
    let started = Instant::now();
    if let Some(dir) = &opts.pretrained {
        if !dir.join("config.json").is_file() {
            bail!(
                "--pretrained {}: not a model folder (no config.json)",
                dir.display()
            );
        }
    }
    let params = opts.params();
    let corpus = opts.corpus.clone().unwrap_or_else(|| params.corpus.clone());
    let c = genir_data::shipped::load_name_or_dir(&corpus)
        .with_context(|| format!("--corpus {corpus:?}"))?;
    let device = opts.backend.device()?;
    let backend = format!("{:?}", opts.backend).to_lowercase();
    // every step depends on the collection; on a backend other than flex on the backend too (its numbers
    // and times are that backend's; flex keys stay those of earlier runs)
    let ckey = with_backend(opts.backend, collection_key(&c)?)?;
    let mut steps = Steps::new(&opts.work, opts.force)?;
    let stats = format!(
        "{} documents; {}",
        c.corpus.len(),
        c.splits
            .iter()
            .map(|(n, s)| format!("{n}: {} queries", s.queries.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    tracing::info!(
        "{corpus}: {stats}; scale {:?}; backend {backend}",
        opts.scale
    );
    let mut figs: Vec<Figure> = Vec::new();

    // ---- training
    let (init, train_upstream) = match &opts.pretrained {
        Some(dir) => (
            Init::Pretrained(dir.clone()),
            vec![ckey, pretrained_start_key(dir)?],
        ),
        // from scratch: the collection alone (the keys of earlier runs stay valid)
        None => (Init::Scratch(params.arch.clone()), vec![ckey]),
    };
    let train_cfg = TrainConfig {
        init,
        docids: DocidKind::Atomic,
        examples: ExampleConfig::default(),
        epochs: params.epochs,
        lr: params.lr,
        checkpoint_every: 200,
        ..TrainConfig::default()
    };
    let base_key = Key::of(&(&train_cfg, "base"), &train_upstream)?;
    let progress = opts.progress;
    let base: Trained = steps.run("train_base", base_key, |dir, resume| {
        train_model("base", &train_cfg, &c, dir, resume, &device, progress)
    })?;
    let removed = choose_removed(&c, params.missing, 11)?;
    let mut missing_cfg = train_cfg.clone();
    missing_cfg.examples.exclude = removed.clone();
    let missing_key = Key::of(&(&missing_cfg, "missing"), &train_upstream)?;
    let missing: Trained = steps.run("train_missing", missing_key, |dir, resume| {
        train_model("missing", &missing_cfg, &c, dir, resume, &device, progress)
    })?;
    let gm = GenirModel::load(&base.dir, &device)?;
    let gm_missing = GenirModel::load(&missing.dir, &device)?;

    // ---- evaluation
    let models: Vec<ModelRow> = steps.run(
        "evaluate",
        Key::of(&"eval", &[base_key, missing_key])?,
        |_, _| {
            let mut rows = evaluate_model(&gm, "base", c.corpus.len(), &c)?;
            rows.extend(evaluate_model(
                &gm_missing,
                "missing",
                c.corpus.len() - removed.len(),
                &c,
            )?);
            Ok(rows)
        },
    )?;

    // ---- encoder swap: the removed documents' training queries
    // "final-norm": the cross rows are also run the paper's way (the encoder's blocks, the decoder model's
    // final encoder norm)
    let swap: Vec<SwapRow> = steps.run(
        "swap",
        Key::of(&("swap", "final-norm"), &[base_key, missing_key])?,
        |dir, _| {
            let train = c.require_split("train")?;
            let mut rows = Vec::new();
            let (own, paper) = (SwapNorm::Encoder, SwapNorm::Decoder);
            let combos = [
                ("base", &gm, "base", &gm, own),
                ("missing", &gm_missing, "missing", &gm_missing, own),
                ("missing", &gm_missing, "base", &gm, own),
                ("base", &gm, "missing", &gm_missing, own),
                ("missing", &gm_missing, "base", &gm, paper),
                ("base", &gm, "missing", &gm_missing, paper),
            ];
            let mut frames = Vec::new();
            for (en, e, dn, d, norm) in combos {
                let mut swap = EncoderSwap::new(e, d)?;
                swap.norm = norm;
                let ev = swap.evaluate(train, Some(&removed))?;
                let (en, label) = match norm {
                    SwapNorm::Encoder => (en.to_string(), format!("{en}_encoder+{dn}_decoder")),
                    SwapNorm::Decoder => (
                        format!("{en} (blocks only)"),
                        format!("{en}_encoder_blocks+{dn}_decoder"),
                    ),
                };
                frames.push(ev.to_frame(&label)?);
                for (subset, m) in [
                    ("all training queries", Some(&ev.all)),
                    ("removed documents' queries", ev.unseen.as_ref()),
                ] {
                    if let Some(m) = m {
                        rows.push(SwapRow {
                            encoder: en.clone(),
                            decoder: dn.into(),
                            subset: subset.into(),
                            queries: m.per_query.len(),
                            hits_at_1: m.hits_at_1,
                            hits_at_10: m.hits_at_10,
                            mrr_at_10: m.mrr_at_10,
                        });
                    }
                }
            }
            let mut frames = frames.into_iter();
            let mut all = frames.next().context("no swap rows")?;
            for f in frames {
                all = all.vstack(&f)?;
            }
            save(all, dir, "encoder_swap", figures::swap_figure)?;
            Ok(rows)
        },
    )?;
    figs.push(Figure {
        stem: "encoder_swap".into(),
        caption: "Encoder swap: Hits@1 of every encoder / decoder combination, on all training queries and on the queries of the documents the missing-documents model never saw.".into(),
    });

    // ---- probes: training queries the base model gets right
    let probe_set =
        genir_interp::correctly_retrieved(&gm, c.require_split("train")?, params.probes)?;
    let probes = Probe::from_query_set(&probe_set);
    let pkey = Key::of(&(params.probes, "probes"), &[base_key])?;

    let lens: Vec<LensRow> = steps.run("logit_lens", pkey, |dir, _| {
        let df = save(
            logit_lens(&gm, &probes, &LensConfig::default())?,
            dir,
            "logit_lens",
            figures::logit_lens_figure,
        )?;
        let keys = layer_component(&df)?;
        let rank = group(&keys, &f64s(&df, "rank")?);
        let md = group(&keys, &f64s(&df, "mean_rank_docids")?);
        let mn = group(&keys, &f64s(&df, "mean_rank_non_docids")?);
        Ok(rank
            .iter()
            .map(|(k, r)| LensRow {
                layer: k.0,
                component: k.1.clone(),
                median_rank: median(r),
                top1: r.iter().filter(|x| **x <= 1.0).count() as f64 / r.len().max(1) as f64,
                mean_rank_docids: mean(&md[k]),
                mean_rank_non_docids: mean(&mn[k]),
            })
            .collect())
    })?;
    figs.push(Figure {
        stem: "logit_lens".into(),
        caption: "Logit lens: rank of the correct docid (and the mean rank of docid tokens, the median rank of non-docid tokens, as the paper plots them) read from the residual stream and each component's output at every decoder layer.".into(),
    });

    let encoder_lens_key = Key::of(&"encoder-lens-v1", &[pkey])?;
    let encoder_lens_rows: Vec<EncoderLensRow> =
        steps.run("encoder_lens", encoder_lens_key, |dir, _| {
            let df = save(
                encoder_lens(&gm, &probes, &LensConfig::default())?,
                dir,
                "encoder_lens",
                figures::logit_lens_figure,
            )?;
            let keys = layer_component(&df)?;
            let rank = group(&keys, &f64s(&df, "rank")?);
            let best = group(&keys, &f64s(&df, "best_rank")?);
            let order = |c: &str| {
                ["resid_pre", "resid_post", "final_norm"]
                    .iter()
                    .position(|x| *x == c)
            };
            let mut rank: Vec<_> = rank.into_iter().collect();
            rank.sort_by_key(|(k, _)| (k.0, order(&k.1)));
            Ok(rank
                .iter()
                .map(|(k, r)| EncoderLensRow {
                    layer: k.0,
                    component: k.1.clone(),
                    median_rank: median(r),
                    median_best_rank: median(&best[k]),
                    top1_any_position: best[k].iter().filter(|x| **x <= 1.0).count() as f64
                        / best[k].len().max(1) as f64,
                })
                .collect())
        })?;
    figs.push(Figure {
        stem: "encoder_lens".into(),
        caption: "Logit lens on the encoder: the encoder's residual stream (embeddings, after each layer, final norm) mean-pooled over the query and read through the decoder's final norm and LM head: rank of the correct docid.".into(),
    });

    let contrib: Vec<ContribRow> = steps.run("contributions", pkey, |dir, _| {
        let df = save(
            component_contributions(&gm, &probes, &LensConfig::default())?,
            dir,
            "contributions",
            figures::contribution_figure,
        )?;
        let keys = layer_component(&df)?;
        let share = group(&keys, &f64s(&df, "share")?);
        let ratio = group(&keys, &f64s(&df, "ratio_to_delta")?);
        let cos = group(&keys, &f64s(&df, "cos_resid_post")?);
        Ok(share
            .iter()
            .map(|(k, s)| ContribRow {
                layer: k.0,
                component: k.1.clone(),
                share: mean(s),
                ratio: mean(&ratio[k]),
                cos: mean(&cos[k]),
            })
            .collect())
    })?;
    figs.push(Figure {
        stem: "contributions".into(),
        caption: "Component contribution: each component's share of the residual-stream change per decoder layer, and its cosine with the layer output.".into(),
    });

    let n_pairs = params.patch_pairs.min(probes.len());
    let pairs = make_pairs(&probes[..n_pairs], &Corruption::OtherQuery { seed: 0 })?;
    // "shared-positions": encoder positions are patched only where both queries have a token (25f5f06)
    let patch_key = Key::of(&(n_pairs, "patch", "shared-positions"), &[pkey])?;
    let patching: Vec<PatchRow> = steps.run("patching", patch_key, |dir, _| {
        let df = save(
            activation_patching(&gm, &pairs, &PatchConfig::default())?,
            dir,
            "patching",
            figures::patching_figure,
        )?;
        let target = strs(&df, "target")?;
        let layer = i64s(&df, "layer")?;
        let comp = strs(&df, "component")?;
        let head = i64s(&df, "head")?;
        let pos = i64s(&df, "position")?;
        let keys: Vec<(String, i64, String, i64, i64)> = (0..df.height())
            .map(|i| {
                (
                    target[i].clone(),
                    layer[i],
                    comp[i].clone(),
                    head[i],
                    pos[i],
                )
            })
            .collect();
        let g = group(&keys, &f64s(&df, "value")?);
        Ok(g.iter()
            .map(|(k, v)| PatchRow {
                target: k.0.clone(),
                layer: k.1,
                component: k.2.clone(),
                head: k.3,
                position: k.4,
                value: mean(v),
            })
            .collect())
    })?;
    figs.push(Figure {
        stem: "patching".into(),
        caption: "Activation patching (clean into corrupted run; corrupted = another query): normalised logit difference, 0 = corrupted, 1 = clean, per component, head and position.".into(),
    });

    let heads: Vec<HeadRow> = steps.run("head_projection", pkey, |dir, _| {
        let df = save(
            head_vocab_projection(&gm, &probes, &HeadProjectionConfig::default())?,
            dir,
            "head_projection",
            figures::head_projection_figure,
        )?;
        let part = strs(&df, "part")?;
        let layer = i64s(&df, "layer")?;
        let head = i64s(&df, "head")?;
        let rank = f64s(&df, "rank")?;
        let token = strs(&df, "token")?;
        let qid = strs(&df, "qid")?;
        let mut correct: BTreeMap<(i64, i64), Vec<f64>> = BTreeMap::new();
        let mut counts: BTreeMap<(i64, i64), BTreeMap<String, usize>> = BTreeMap::new();
        let mut example: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
        let first_qid = qid.first().cloned().unwrap_or_default();
        for i in 0..df.height() {
            let k = (layer[i], head[i]);
            match part[i].as_str() {
                "correct" => correct.entry(k).or_default().push(rank[i]),
                "text" if rank[i] <= 5.0 => {
                    *counts
                        .entry(k)
                        .or_default()
                        .entry(token[i].clone())
                        .or_default() += 1;
                    if qid[i] == first_qid {
                        example.entry(k).or_default().push(token[i].clone());
                    }
                }
                _ => {}
            }
        }
        let query = probes
            .iter()
            .find(|p| p.qid == first_qid)
            .map(|p| p.text.clone())
            .unwrap_or_default();
        Ok(correct
            .iter()
            .map(|(k, r)| {
                let mut c: Vec<(String, usize)> = counts
                    .get(k)
                    .map(|m| m.iter().map(|(t, n)| (t.clone(), *n)).collect())
                    .unwrap_or_default();
                c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                HeadRow {
                    layer: k.0,
                    head: k.1,
                    correct_rank: mean(r),
                    frequent_tokens: c
                        .iter()
                        .take(6)
                        .map(|(t, n)| format!("{t} ({n})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    example: format!(
                        "\"{query}\": {}",
                        example.get(k).map(|v| v.join(", ")).unwrap_or_default()
                    ),
                }
            })
            .collect())
    })?;
    figs.push(Figure {
        stem: "head_projection".into(),
        caption: "Cross-attention heads projected through the LM head: rank of the correct docid among docid tokens per layer and head.".into(),
    });

    // v2: the minimal circuit moved to the stages step (on the derived split)
    let ablation_key = Key::of(&"ablation-v2", &[pkey])?;
    let ablation: Vec<AblationRow> = steps.run("ablation", ablation_key, |dir, _| {
        let reference: Vec<String> = probe_set.queries.iter().map(|q| q.text.clone()).collect();
        let layers = gm.model.decoder.blocks.len();
        let mut abl = Vec::new();
        for mode in [AblationMode::Zero, AblationMode::Mean] {
            let m = match mode {
                AblationMode::Zero => "zero",
                AblationMode::Mean => "mean",
            };
            for (kind, hook) in [
                ("self_attn", "hook_self_attn_out"),
                ("cross_attn", "hook_cross_attn_out"),
                ("mlp", "hook_mlp_out"),
            ] {
                for l in 0..layers {
                    abl.push(Ablation::parse(
                        &gm,
                        &format!("{kind} L{l} ({m})"),
                        &format!("decoder.blocks.{l}.{hook}"),
                        mode,
                    )?);
                }
                abl.push(Ablation::parse(
                    &gm,
                    &format!("{kind} all layers ({m})"),
                    &format!("decoder.blocks.*.{hook}"),
                    mode,
                )?);
            }
        }
        let df = save(
            ablation_study(
                &gm,
                &probe_set,
                &abl,
                Some(&reference),
                &AblationConfig::default(),
            )?,
            dir,
            "ablation",
            figures::ablation_figure,
        )?;
        let label = strs(&df, "label")?;
        let mode = strs(&df, "mode")?;
        let h1 = f64s(&df, "hits_at_1")?;
        let base_h1 = h1.first().copied().unwrap_or(f64::NAN);
        Ok((0..df.height())
            .map(|i| AblationRow {
                label: label[i].clone(),
                mode: mode[i].clone(),
                hits_at_1: h1[i],
                lost_percent: 100.0 * (base_h1 - h1[i]).max(0.0) / base_h1.max(1e-12),
            })
            .collect())
    })?;
    figs.push(Figure {
        stem: "ablation".into(),
        caption: "Ablation: Hits@1 on the correctly retrieved training queries with components zeroed or mean-ablated.".into(),
    });

    // ---- stages derived from the data, path patching, minimal circuit, attribution patching
    // v2: encoder positions attributed with AtP*'s QK fix, the plain gradient estimate beside it
    let stages_key = Key::of(
        &(n_pairs, "stages-v3", "shared-positions", "paper-circuit"),
        &[pkey],
    )?;
    let stages: StagesResult = steps.run("stages", stages_key, |dir, _| {
        let r = stage_analysis(&gm, &probes, &pairs, &probe_set, &StageConfig::default())?;
        let evidence = save(r.evidence, dir, "stages", figures::stages_figure)?;
        let paths = save(r.paths, dir, "path_patching", figures::path_patching_figure)?;
        let circuit = save(r.circuit, dir, "minimal_circuit", figures::ablation_figure)?;
        let exact = activation_patching(&gm, &pairs, &PatchConfig::default())?;
        let attr = save(
            attribution_patching(&gm, &pairs, &PatchConfig::default())?,
            dir,
            "attribution",
            figures::patching_figure,
        )?;
        let ag = agreement(&exact, &attr)?;
        // encoder positions also by the plain gradient (no QK fix), for comparison
        let plain_cfg = PatchConfig {
            targets: vec![PatchTarget::EncoderPositions],
            ..PatchConfig::default()
        };
        let plain = attribution_patching_with(&gm, &pairs, &plain_cfg, EncoderEstimate::Gradient)?;
        let ag_plain = agreement(&exact, &plain)?;
        let ag = match strs(&ag_plain, "target")?
            .iter()
            .position(|t| t == "encoder_positions")
        {
            Some(i) => ag.vstack(&genir_data::Table::new(vec![
                genir_data::Column::new(
                    "target",
                    vec!["encoder_positions (plain gradient, no QK fix)".to_string()],
                ),
                genir_data::Column::new("n", vec![i64s(&ag_plain, "n")?[i]]),
                genir_data::Column::new("pearson", vec![f64s(&ag_plain, "pearson")?[i]]),
                genir_data::Column::new(
                    "mean_abs_diff",
                    vec![f64s(&ag_plain, "mean_abs_diff")?[i]],
                ),
            ])?)?,
            None => ag,
        };
        genir_interp::write_table(&ag, &dir.join("attribution_agreement"))?;
        let h1 = f64s(&circuit, "hits_at_1")?;
        let ev_stage = strs(&evidence, "stage")?;
        let (rr, sa, ca, mlp) = (
            f64s(&evidence, "lens_reciprocal_rank")?,
            f64s(&evidence, "self_attn_patch")?,
            f64s(&evidence, "cross_attn_patch")?,
            f64s(&evidence, "mlp_patch")?,
        );
        let keys: Vec<(String, String)> = strs(&paths, "sender")?
            .into_iter()
            .zip(strs(&paths, "receiver")?)
            .collect();
        let g = group(&keys, &f64s(&paths, "value")?);
        let mut top: Vec<PathRow> = g
            .iter()
            .map(|(k, v)| PathRow {
                sender: k.0.clone(),
                receiver: k.1.clone(),
                value: mean(v),
            })
            .collect();
        top.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
        top.truncate(10);
        let (t, n, r_, mad) = (
            strs(&ag, "target")?,
            i64s(&ag, "n")?,
            f64s(&ag, "pearson")?,
            f64s(&ag, "mean_abs_diff")?,
        );
        Ok(StagesResult {
            split: r.split.describe(),
            layers: r.split.layers,
            bridging_start: r.split.bridging_start,
            interaction_start: r.split.interaction_start,
            full_hits_at_1: h1.first().copied().unwrap_or(f64::NAN),
            circuit_hits_at_1: h1.get(1).copied().unwrap_or(f64::NAN),
            evidence: (0..evidence.height())
                .map(|l| StageLayerRow {
                    layer: l,
                    stage: ev_stage[l].clone(),
                    lens_reciprocal_rank: rr[l],
                    self_attn_patch: sa[l],
                    cross_attn_patch: ca[l],
                    mlp_patch: mlp[l],
                })
                .collect(),
            top_paths: top,
            attribution: (0..t.len())
                .map(|i| AgreementRow {
                    target: t[i].clone(),
                    n: n[i],
                    pearson: r_[i],
                    mean_abs_diff: mad[i],
                })
                .collect(),
        })
    })?;
    for (stem, caption) in [
        ("stages", "Decoder stages derived from the data: per layer, the logit lens's reciprocal rank of the correct docid (resid_post) and the mean patching effect of each component; the legend gives where each stage starts."),
        ("path_patching", "Path patching: mean normalised effect of each upstream component (sender) on the cross-attention of the bridging and interaction layers and the MLPs of the interaction layers (receivers), along the direct residual path only."),
        ("minimal_circuit", "The minimal circuit on the derived split (every self-attention and the priming cross-attention outputs zeroed, priming + bridging MLP outputs mean-ablated, as the paper's) against the full model."),
        ("attribution", "Attribution patching (gradient estimate, one backward pass per pair; encoder positions with AtP*'s QK fix) of the same cells as the activation-patching figure."),
    ] {
        figs.push(Figure {
            stem: stem.into(),
            caption: caption.into(),
        });
    }

    // ---- multi-token docids: per-step logit lens and the two patching experiments, on a naive-docid model
    // of the mini corpus (small enough for every scale's time budget): the smoke architecture from scratch,
    // or the study's pretrained folder fine-tuned with the base model's learning rate and at least MT_EPOCHS
    let mt_corpus = genir_data::shipped::load_name_or_dir("wiki-genir-mini")
        .context("the shipped wiki-genir-mini collection")?;
    let mut mt_upstream = vec![with_backend(opts.backend, collection_key(&mt_corpus)?)?];
    let mt_cfg = match &opts.pretrained {
        Some(dir) => {
            mt_upstream.push(pretrained_start_key(dir)?);
            TrainConfig {
                init: Init::Pretrained(dir.clone()),
                docids: DocidKind::Naive,
                examples: ExampleConfig::default(),
                epochs: params.epochs.max(MT_EPOCHS),
                lr: params.lr,
                checkpoint_every: 200,
                ..TrainConfig::default()
            }
        }
        None => TrainConfig {
            init: Init::Scratch(Scale::Smoke.params().arch),
            docids: DocidKind::Naive,
            examples: ExampleConfig::default(),
            epochs: MT_EPOCHS,
            checkpoint_every: 100_000,
            ..TrainConfig::default()
        },
    };
    let mt_key = Key::of(
        // "different-token": prefix pairs compare different tokens; the rows count the pairs measured;
        // "partners-differ-at-step": query pairs' partners have another token at the patched step
        &(
            &mt_cfg,
            params.patch_pairs,
            "multi-token-v2",
            "different-token",
            "partners-differ-at-step",
        ),
        &mt_upstream,
    )?;
    let multi_token: MultiTokenResult = steps.run("multi_token", mt_key, |dir, resume| {
        let trained = train_model(
            "multi-token",
            &mt_cfg,
            &mt_corpus,
            dir,
            resume,
            &device,
            progress,
        )?;
        multi_token_study(
            &trained,
            &mt_cfg,
            &mt_corpus,
            params.patch_pairs,
            dir,
            &device,
        )
    })?;
    for (stem, caption) in [
        ("mt_logit_lens_step1", "Multi-token docids, logit lens at the second decoding step (the decoder fed the start token and the correct docid's first token): rank of the correct second token per layer and component."),
        ("mt_patching_query_step1", "Multi-token docids, experiment 1 (what comes from the query): the query corrupted, both runs fed the clean docid's first token; normalised logit difference of the second token per component and decoder position."),
        ("mt_patching_prefix_step1", "Multi-token docids, experiment 2 (what comes from the earlier docid tokens): the query held, the corrupted run fed another document's first docid token; normalised logit difference per component and decoder position."),
    ] {
        // a step's figures exist only where it had probes (a model that retrieves few training queries may
        // have none whose docid has a second digit)
        let made = match stem {
            "mt_logit_lens_step1" => multi_token.lens_at(1),
            "mt_patching_query_step1" => multi_token.patched_at("query", 1),
            _ => multi_token.patched_at("prefix", 1),
        };
        if made {
            figs.push(Figure {
                stem: stem.into(),
                caption: caption.into(),
            });
        }
    }

    // ---- MechIR: bi-encoder and cross-encoder under TFC1 and TDC
    let mut mechir = Vec::new();
    let mut mechir_skipped = Vec::new();
    let rankers: [(&str, &Option<PathBuf>); 2] =
        [("dot", &opts.bi_encoder), ("cat", &opts.cross_encoder)];
    for (kind, dir) in rankers {
        let Some(dir) = dir else {
            mechir_skipped.push(format!(
                "{kind}: no {} folder given",
                if kind == "dot" {
                    "bi-encoder"
                } else {
                    "cross-encoder"
                }
            ));
            continue;
        };
        if !dir.join("config.json").exists() {
            mechir_skipped.push(format!(
                "{kind}: {} is not a model folder (no config.json); tools/models/install_reference_models.sh installs all-MiniLM-L6-v2",
                dir.display()
            ));
            continue;
        }
        let weights = model_folder_key(dir)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| kind.to_string());
        let mut jobs = vec![
            ("tfc1", "heads", params.mechir_pairs),
            ("tdc", "heads", params.mechir_pairs),
        ];
        if params.mechir_block_pairs > 0 {
            jobs.push(("tfc1", "blocks", params.mechir_block_pairs));
        }
        for (pert, patch, n) in jobs {
            let step = format!("mechir_{kind}_{pert}_{patch}");
            // "query-case": appended terms keep the query's case, judgments count once (cased rankers and
            // duplicate qrels give other pairs than before)
            let key = Key::of(&(kind, pert, patch, n, "query-case"), &[ckey, weights])?;
            let row: MechirRow = steps.run(&step, key, |out, _| {
                let split = c
                    .split("test")
                    .or_else(|| c.split("train"))
                    .context("no query split")?;
                let pairs = PairDataset::sample(
                    &c.corpus,
                    &split.queries,
                    &split.qrels,
                    PairPerturbation::parse(pert, 0)?,
                    &Sampling::new(n, 0),
                )?;
                let cfg = genir_mechir::PatchConfig {
                    encode: EncodeConfig::default(),
                    ..genir_mechir::PatchConfig::default()
                };
                if kind == "dot" {
                    let m = Dot::from_pretrained(dir, &device)
                        .with_context(|| format!("loading {}", dir.display()))?;
                    mechir_sweep(&m, &pairs, &cfg, patch, out, &step, &name, kind, pert)
                } else {
                    let m = Cat::from_pretrained(dir, &device)
                        .with_context(|| format!("loading {}", dir.display()))?;
                    mechir_sweep(&m, &pairs, &cfg, patch, out, &step, &name, kind, pert)
                }
            })?;
            figs.push(Figure {
                stem: step.clone(),
                caption: format!(
                    "MechIR {patch} patching of {} ({kind}) under {}: (patched - original) / (perturbed - original), {} pairs.",
                    row.model,
                    pert.to_uppercase(),
                    row.pairs
                ),
            });
            mechir.push(row);
        }
    }

    // ---- edits
    let mut edit_train = train_cfg.clone();
    edit_train.checkpoint_every = 100_000;
    // "references": the step's result gained the reference measures (BM25, the base model's held-out queries);
    // "continued-v2": continued training runs until the document is learned (at most FINETUNE_STEPS steps at
    // the base model's learning rate) and says how often it was
    let finetune_steps = if matches!(edit_train.init, Init::Pretrained(_)) {
        PRETRAINED_FINETUNE_STEPS
    } else {
        genir_edit::eval::EvalConfig::new(PathBuf::new(), edit_train.clone()).finetune_steps
    };
    let edit_key = Key::of(
        &(
            &edit_train,
            params.edit_docs,
            "edits",
            "references",
            "continued-v2",
            finetune_steps,
        ),
        &train_upstream,
    )?;
    let edits: EditsResult = steps.run("edits", edit_key, |dir, _| {
        let mut cfg = genir_edit::eval::EvalConfig::new(dir.join("work"), edit_train.clone());
        cfg.n_new = params.edit_docs;
        cfg.finetune_steps = finetune_steps;
        cfg.decay_points = [1, 10, 100, 1000]
            .into_iter()
            .filter(|&p| p <= params.edit_docs)
            .chain(std::iter::once(params.edit_docs))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let b = bar(progress, "edits");
        b.set_message("training the edit base model, editing, retraining");
        b.enable_steady_tick(std::time::Duration::from_millis(500));
        let report = genir_edit::eval::evaluate_methods(&c, &cfg, &device)?;
        b.finish_and_clear();
        report.write_parquet(&dir.join("edits.parquet"))?;
        let df = report.dataframe()?;
        df.write_csv(&dir.join("edits.csv"))?;
        report
            .references_dataframe()?
            .write_csv(&dir.join("edits_references.csv"))?;
        // the models are large and not part of the report
        let _ = std::fs::remove_dir_all(dir.join("work"));
        Ok(EditsResult {
            markdown: report.markdown(),
            report,
        })
    })?;
    // what a trained dual encoder gets on the same query sets: a step of its own, so that adding it keeps
    // the edits step (and its trained models) cached
    let mut edits_dense = Vec::new();
    if let Some(dir) = opts
        .bi_encoder
        .as_ref()
        .filter(|d| d.join("config.json").exists())
    {
        let mut cfg = genir_edit::eval::EvalConfig::new(PathBuf::new(), edit_train.clone());
        cfg.n_new = params.edit_docs;
        let key = Key::of(
            &(cfg.n_new, cfg.seed, "edits-dense"),
            &[ckey, model_folder_key(dir)?],
        )?;
        edits_dense = steps.run("edits_dense", key, |out, _| {
            let b = bar(progress, "edits");
            b.set_message(format!(
                "dense reference: embedding the corpus with {}",
                dir.display()
            ));
            b.enable_steady_tick(std::time::Duration::from_millis(500));
            let rows = genir_edit::eval::dense_references(&c, &cfg, dir, &device)
                .with_context(|| format!("dense reference with {}", dir.display()))?;
            b.finish_and_clear();
            genir_edit::eval::references_table(&rows)?.write_csv(&out.join("edits_dense.csv"))?;
            Ok(rows)
        })?;
    }

    let study = Study {
        corpus,
        scale: opts.scale,
        params,
        backend,
        collection_stats: stats,
        train_config: train_cfg,
        model_config: Some(gm.model.config.clone()),
        trained: BTreeMap::from([("base".into(), base), ("missing".into(), missing)]),
        models,
        removed,
        swap,
        probes: probes.len(),
        lens,
        encoder_lens: encoder_lens_rows,
        contrib,
        patching,
        patch_pairs: n_pairs,
        heads,
        ablation,
        stages,
        multi_token,
        mechir,
        mechir_skipped,
        edits: Some(edits),
        edits_dense,
        figures: figs,
        steps: steps.records.clone(),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    crate::report::write(&study, &opts.work, &opts.report)?;
    Ok(study)
}

#[allow(clippy::too_many_arguments)]
fn mechir_sweep<M: PatchModel>(
    m: &M,
    pairs: &PairDataset,
    cfg: &genir_mechir::PatchConfig,
    patch: &str,
    out: &Path,
    stem: &str,
    name: &str,
    kind: &str,
    pert: &str,
) -> Result<MechirRow> {
    let t = Instant::now();
    let (df, panels, scores, top) = if patch == "blocks" {
        let r = sweep_blocks(m, pairs, cfg)?;
        let df = r.to_frame()?;
        let comp = strs(&df, "component")?;
        let layer = i64s(&df, "layer")?;
        let pos = i64s(&df, "position")?;
        let v = f64s(&df, "value")?;
        let mut idx: Vec<usize> = (0..df.height()).collect();
        idx.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()));
        let top = idx
            .iter()
            .take(5)
            .map(|&i| format!("{} L{} pos {} {:.2}", comp[i], layer[i], pos[i], v[i]))
            .collect::<Vec<_>>()
            .join("; ");
        (df, block_panels(&r), r.scores, top)
    } else {
        let r = sweep_heads(m, pairs, None, cfg)?;
        let df = r.to_frame()?;
        let layer = i64s(&df, "layer")?;
        let head = i64s(&df, "head")?;
        let v = f64s(&df, "value")?;
        let g = group(
            &layer
                .iter()
                .zip(&head)
                .map(|(l, h)| (*l, *h))
                .collect::<Vec<_>>(),
            &v,
        );
        let mut cells: Vec<((i64, i64), f64)> = g.iter().map(|(k, v)| (*k, mean(v))).collect();
        cells.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let top = cells
            .iter()
            .take(5)
            .map(|((l, h), v)| format!("L{l}H{h} {v:.2}"))
            .collect::<Vec<_>>()
            .join("; ");
        (df, head_panels(&r), r.scores, top)
    };
    let seconds = t.elapsed().as_secs_f64();
    genir_mechir::table::write_table(&df, out, stem)?;
    let svg = out.join(format!("{stem}.svg"));
    heatmap(&panels, &svg)?;
    svg_to_png(&svg, 2.0)?;
    let mean_of = |v: &[f32]| v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len().max(1) as f64;
    Ok(MechirRow {
        model: name.into(),
        kind: kind.into(),
        perturbation: pert.into(),
        patch: patch.into(),
        pairs: pairs.len(),
        seconds,
        mean_scores: (mean_of(&scores.original), mean_of(&scores.perturbed)),
        top,
        figure: stem.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_folder_key_changes_with_the_weights_not_only_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, w) in [(&a, [1u8, 2, 3, 4]), (&b, [1u8, 2, 3, 5])] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("config.json"), b"{}").unwrap();
            std::fs::write(d.join("model.safetensors"), w).unwrap();
        }
        let ka = model_folder_key(&a).unwrap();
        assert_eq!(ka, model_folder_key(&a).unwrap());
        assert_ne!(ka, model_folder_key(&b).unwrap());
        // the tokenizer is part of the model
        std::fs::write(a.join("tokenizer.json"), b"{}").unwrap();
        let kt = model_folder_key(&a).unwrap();
        assert_ne!(ka, kt);
        // and so are its tokenizer and sentence-transformers settings
        std::fs::create_dir(a.join("1_Pooling")).unwrap();
        std::fs::write(a.join("1_Pooling/config.json"), b"{}").unwrap();
        let kp = model_folder_key(&a).unwrap();
        assert_ne!(kt, kp);
        std::fs::write(a.join("tokenizer_config.json"), b"{}").unwrap();
        assert_ne!(kp, model_folder_key(&a).unwrap());
    }
}
