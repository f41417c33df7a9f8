//! `genir interp`: the interpretability analyses of genir-interp as tables (Parquet + CSV) and figures
//! (SVG + PNG).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::{Args, Subcommand, ValueEnum};
use genir_data::QuerySet;
use genir_data::Table;
use genir_interp::ablation::{ablation_study, Ablation, AblationConfig, AblationMode};
use genir_interp::attribution::{agreement, attribution_patching_with, EncoderEstimate};
use genir_interp::figures;
use genir_interp::heads::{head_vocab_projection, HeadProjectionConfig};
use genir_interp::lens::{component_contributions, encoder_lens, logit_lens, LensConfig};
use genir_interp::patching::{
    activation_patching, make_pairs, make_pairs_at, prefix_pairs, relevant_term_pairs, Corruption,
    PatchConfig, PatchMetric, PatchTarget,
};
use genir_interp::stages::{stage_analysis, StageConfig};
use genir_interp::swap::{EncoderSwap, RankOver, SwapNorm};
use genir_interp::{correctly_retrieved, write_table, Probe};
use genir_model::hooks::AttnKind;
use genir_train::bundle::GenirModel;

use crate::dsi::{corpus_of, load_collection};

pub const EXAMPLES: &str = "Examples:
  genir interp lens --model models/dsi --out interp
  genir interp contributions --model models/dsi --out interp
  genir interp patch --model models/dsi --pairs 24 --corruption other-query --out interp
  genir interp heads --model models/dsi --top-k 10 --out interp
  genir interp ablate --model models/dsi --points 'decoder.blocks.*.hook_self_attn_out' --mode mean --out interp
  genir interp swap --encoder models/dsi-minus10 --decoder models/dsi --unseen 17,256 --out interp
  genir interp patch --model models/dsi --pairs 24 --attribution --out interp
  genir interp stages --model models/dsi --pairs 16 --out interp

Each writes <out>/<analysis>.parquet, .csv, .svg and .png. The queries analysed are those of --split that
the model retrieves at rank 1 (the paper's \"correct queries\"; --all-queries for every query), at most --probes.";

/// `genir interp ...`.
#[derive(Args, Debug)]
pub struct InterpArgs {
    #[command(subcommand)]
    pub command: InterpCommand,
}

/// The analyses.
#[derive(Subcommand, Debug)]
pub enum InterpCommand {
    /// Logit lens of the decoder residual stream and of each component's output.
    Lens(LensArgs),
    /// Each component's share of the residual change and its cosine with the layer output.
    Contributions(Common),
    /// Activation patching: components, heads, encoder positions (clean into corrupted runs).
    Patch(PatchArgs),
    /// Vocabulary projection of every attention head's output.
    Heads(HeadsArgs),
    /// Zero or mean ablation of hook points: Hits@1 before and after.
    Ablate(AblateArgs),
    /// Encoder swap: one model's encoder with another's decoder.
    Swap(SwapArgs),
    /// Decoder stages from the data (lens + patching), path patching into them, and the minimal circuit.
    Stages(StagesArgs),
}

/// Arguments of `genir interp lens`.
#[derive(Args, Debug)]
pub struct LensArgs {
    #[command(flatten)]
    pub common: Common,
    /// Decoding step read (multi-token docids): the decoder is fed the first STEP tokens of the correct
    /// docid and read where it predicts the next one.
    #[arg(long, default_value_t = 0)]
    pub step: usize,
    /// Also read the encoder's residual stream through the decoder's head (mean-pooled and per position;
    /// writes encoder_lens.*).
    #[arg(long)]
    pub encoder: bool,
}

/// Arguments of `genir interp stages`.
#[derive(Args, Debug)]
pub struct StagesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clean / corrupted pairs (other-query corruption) for patching and path patching.
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Seed of the pairing.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Interaction starts where the lens's reciprocal rank of the correct docid reaches this fraction of its
    /// final value.
    #[arg(long, default_value_t = 0.5)]
    pub rr_fraction: f64,
    /// Bridging starts at the first layer whose cross-attention patching effect reaches this fraction of the
    /// largest.
    #[arg(long, default_value_t = 0.25)]
    pub cross_fraction: f64,
}

/// Options every per-query analysis takes.
#[derive(Args, Debug)]
pub struct Common {
    /// Model folder written by `genir train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Collection (default: the one the model was trained on).
    #[arg(long)]
    pub corpus: Option<String>,
    /// Query split to analyse.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Most queries analysed.
    #[arg(long, default_value_t = 64)]
    pub probes: usize,
    /// Analyse every query, not only those retrieved at rank 1.
    #[arg(long)]
    pub all_queries: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// Corruptions of `genir interp patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CorruptionArg {
    /// Another analysed query (of another document).
    OtherQuery,
    /// The query's words shuffled.
    Shuffle,
    /// The query's words found in its relevant document replaced by other queries' words found in neither.
    RelevantTerms,
    /// Multi-token docids: the same query, with another analysed document's docid prefix fed to the
    /// decoder (needs `--decoder-prefix` >= 1): what the decoder carries from the earlier docid tokens.
    Prefix,
}

/// Metrics of `genir interp patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    /// Clean minus corrupted docid logit.
    LogitDiff,
    /// Reciprocal rank of the clean docid among docid tokens.
    ReciprocalRank,
}

/// How attribution patching estimates encoder positions (`genir interp patch --attribution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncoderEstimateArg {
    /// AtP*'s QK fix: cross-attention patterns recomputed exactly with the patched key, then linearised.
    QkFix,
    /// The plain gradient estimate.
    Gradient,
}

/// Arguments of `genir interp patch`.
#[derive(Args, Debug)]
pub struct PatchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Clean / corrupted pairs.
    #[arg(long, default_value_t = 24)]
    pub pairs: usize,
    /// How the corrupted query is made.
    #[arg(long, value_enum, default_value = "other-query")]
    pub corruption: CorruptionArg,
    /// Seed of the corruption.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Metric.
    #[arg(long, value_enum, default_value = "logit-diff")]
    pub metric: MetricArg,
    /// Multi-token docids: feed this many clean docid tokens to the decoder and patch the step that predicts
    /// the next one (adds per-position decoder patching).
    #[arg(long, default_value_t = 0)]
    pub decoder_prefix: usize,
    /// Also run attribution patching (one backward pass per pair) and write `attribution.*` and its agreement
    /// with exact patching, `attribution_agreement.*` (logit-diff metric only).
    #[arg(long)]
    pub attribution: bool,
    /// How attribution patching estimates encoder positions.
    #[arg(long, value_enum, default_value = "qk-fix")]
    pub attribution_encoder: EncoderEstimateArg,
}

/// Arguments of `genir interp heads`.
#[derive(Args, Debug)]
pub struct HeadsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Tokens per head and vocabulary part.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Project self-attention heads instead of cross-attention heads.
    #[arg(long)]
    pub self_attention: bool,
}

/// Ablation modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Zeros.
    Zero,
    /// The mean over the analysed queries.
    Mean,
}

/// Arguments of `genir interp ablate`.
#[derive(Args, Debug)]
pub struct AblateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Comma-separated hook-point globs ablated together; repeat for several ablations.
    #[arg(long, required = true)]
    pub points: Vec<String>,
    /// Zero or mean ablation.
    #[arg(long, value_enum, default_value = "mean")]
    pub mode: ModeArg,
    /// Also save the model with every component of --points removed (whole hook_self_attn_out /
    /// hook_cross_attn_out / hook_mlp_out only): it skips them. Zero mode loads anywhere (Hugging Face
    /// included); mean mode bakes each output's mean over the analysed queries (those of the ablation table:
    /// up to --probes) into config.json (genir only). Must be a new folder.
    #[arg(long)]
    pub save_removed: Option<PathBuf>,
    /// What Hits@k ranks documents among: `docids` (the docid tokens, as constrained search) or `vocabulary`
    /// (every token, as the paper's scripts: a text token above the relevant docid takes a rank).
    #[arg(long, value_enum, default_value = "docids")]
    pub rank_over: RankOverArg,
}

/// `--rank-over` of `interp ablate` and `interp swap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RankOverArg {
    /// Among the docid tokens.
    Docids,
    /// Among the whole vocabulary (the paper's `logits.topk`).
    Vocabulary,
}

impl From<RankOverArg> for RankOver {
    fn from(a: RankOverArg) -> Self {
        match a {
            RankOverArg::Docids => RankOver::Docids,
            RankOverArg::Vocabulary => RankOver::Vocabulary,
        }
    }
}

/// Arguments of `genir interp swap`.
#[derive(Args, Debug)]
pub struct SwapArgs {
    /// Model whose encoder runs.
    #[arg(long)]
    pub encoder: PathBuf,
    /// Model whose decoder runs.
    #[arg(long)]
    pub decoder: PathBuf,
    /// Collection (default: the decoder model's).
    #[arg(long)]
    pub corpus: Option<String>,
    /// Query split.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Comma-separated docids one of the models never saw: also evaluated on their queries alone.
    #[arg(long, value_delimiter = ',')]
    pub unseen: Vec<String>,
    /// Whose final encoder norm applies: `encoder` (the encoder model's whole encoder) or `decoder` (the
    /// encoder model's blocks, then the decoder model's final norm: the paper's swap, which patches the last
    /// encoder block's output).
    #[arg(long, value_enum, default_value = "encoder")]
    pub final_norm: FinalNormArg,
    /// What Hits@k ranks documents among: `docids` or `vocabulary` (as `interp ablate`).
    #[arg(long, value_enum, default_value = "docids")]
    pub rank_over: RankOverArg,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

/// `--final-norm` of `interp swap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FinalNormArg {
    /// The encoder model's.
    Encoder,
    /// The decoder model's (the paper's swap).
    Decoder,
}

pub fn run(args: InterpArgs, device: &Device) -> Result<()> {
    match args.command {
        InterpCommand::Lens(a) => {
            let (gm, set) = setup(&a.common, device)?;
            let cfg = LensConfig {
                step: a.step,
                ..LensConfig::default()
            };
            let probes = Probe::from_query_set(&set);
            let df = logit_lens(&gm, &probes, &cfg)?;
            write(df, &a.common.out, "logit_lens", figures::logit_lens_figure)?;
            if a.encoder {
                let df = encoder_lens(&gm, &probes, &cfg)?;
                write(
                    df,
                    &a.common.out,
                    "encoder_lens",
                    figures::logit_lens_figure,
                )?;
            }
            Ok(())
        }
        InterpCommand::Contributions(c) => {
            let (gm, set) = setup(&c, device)?;
            let df =
                component_contributions(&gm, &Probe::from_query_set(&set), &LensConfig::default())?;
            write(df, &c.out, "contributions", figures::contribution_figure)
        }
        InterpCommand::Patch(a) => {
            let (gm, set) = setup(&a.common, device)?;
            let probes = Probe::from_query_set(&set);
            let n = a.pairs.min(probes.len());
            if n < 2 {
                bail!(
                    "patching needs at least two queries (--pairs {}; {} analysed queries)",
                    a.pairs,
                    probes.len()
                );
            }
            let pairs = match a.corruption {
                // partners whose docid differs at the patched step (multi-token docids)
                CorruptionArg::OtherQuery => make_pairs_at(
                    &gm,
                    &probes[..n],
                    &Corruption::OtherQuery { seed: a.seed },
                    a.decoder_prefix,
                )?,
                CorruptionArg::Shuffle => {
                    make_pairs(&probes[..n], &Corruption::Shuffle { seed: a.seed })?
                }
                CorruptionArg::RelevantTerms => {
                    let c =
                        load_collection(&corpus_of(&a.common.model, a.common.corpus.as_deref())?)?;
                    relevant_term_pairs(&probes[..n], &c.corpus, a.seed)?
                }
                CorruptionArg::Prefix => {
                    if a.decoder_prefix == 0 {
                        bail!("--corruption prefix needs --decoder-prefix 1 or more (multi-token docids)");
                    }
                    prefix_pairs(&gm, &probes[..n], a.decoder_prefix, a.seed)?
                }
            };
            let cfg = PatchConfig {
                metric: match a.metric {
                    MetricArg::LogitDiff => PatchMetric::LogitDiff,
                    MetricArg::ReciprocalRank => PatchMetric::ReciprocalRank,
                },
                targets: vec![
                    PatchTarget::Components,
                    PatchTarget::Heads,
                    PatchTarget::EncoderPositions,
                    PatchTarget::DecoderPositions,
                ],
                decoder_prefix: a.decoder_prefix,
                corrupt_prefix: a.corruption == CorruptionArg::Prefix,
                ..PatchConfig::default()
            };
            if a.attribution && cfg.metric != PatchMetric::LogitDiff {
                bail!("--attribution needs --metric logit-diff (reciprocal rank has no gradient)");
            }
            let df = activation_patching(&gm, &pairs, &cfg)?;
            if a.attribution {
                let encoder = match a.attribution_encoder {
                    EncoderEstimateArg::QkFix => EncoderEstimate::QkFix,
                    EncoderEstimateArg::Gradient => EncoderEstimate::Gradient,
                };
                let attr = attribution_patching_with(&gm, &pairs, &cfg, encoder)?;
                let ag = agreement(&df, &attr)?;
                let (parquet, csv) = write_table(&ag, &a.common.out.join("attribution_agreement"))?;
                eprintln!(
                    "attribution vs exact patching (Pearson r per target): {}, {}",
                    parquet.display(),
                    csv.display()
                );
                write(attr, &a.common.out, "attribution", figures::patching_figure)?;
            }
            write(df, &a.common.out, "patching", figures::patching_figure)
        }
        InterpCommand::Stages(a) => {
            let (gm, set) = setup(&a.common, device)?;
            let probes = Probe::from_query_set(&set);
            let n = a.pairs.min(probes.len());
            if n < 2 {
                bail!("stages need at least two queries; {} found", probes.len());
            }
            let pairs = make_pairs(&probes[..n], &Corruption::OtherQuery { seed: a.seed })?;
            let cfg = StageConfig {
                rr_fraction: a.rr_fraction,
                cross_fraction: a.cross_fraction,
            };
            let r = stage_analysis(&gm, &probes, &pairs, &set, &cfg)?;
            eprintln!(
                "decoder stages (priming / bridging / interaction): {}",
                r.split.describe()
            );
            write(r.evidence, &a.common.out, "stages", figures::stages_figure)?;
            write(
                r.paths,
                &a.common.out,
                "path_patching",
                figures::path_patching_figure,
            )?;
            write(
                r.circuit,
                &a.common.out,
                "minimal_circuit",
                figures::ablation_figure,
            )
        }
        InterpCommand::Heads(a) => {
            let (gm, set) = setup(&a.common, device)?;
            let cfg = HeadProjectionConfig {
                top_k: a.top_k,
                kind: if a.self_attention {
                    AttnKind::SelfAttn
                } else {
                    AttnKind::CrossAttn
                },
                ..HeadProjectionConfig::default()
            };
            let df = head_vocab_projection(&gm, &Probe::from_query_set(&set), &cfg)?;
            write(
                df,
                &a.common.out,
                "head_projection",
                figures::head_projection_figure,
            )
        }
        InterpCommand::Ablate(a) => {
            if let Some(dir) = &a.save_removed {
                crate::dsi::refuse_model_folder(dir)?;
            }
            let (gm, set) = setup(&a.common, device)?;
            let mode = match a.mode {
                ModeArg::Zero => AblationMode::Zero,
                ModeArg::Mean => AblationMode::Mean,
            };
            let ablations = a
                .points
                .iter()
                .map(|p| Ablation::parse(&gm, p, p, mode))
                .collect::<Result<Vec<_>, _>>()?;
            let reference: Vec<String> = set.queries.iter().map(|q| q.text.clone()).collect();
            let df = ablation_study(
                &gm,
                &set,
                &ablations,
                Some(&reference),
                &AblationConfig {
                    rank_over: a.rank_over.into(),
                    ..AblationConfig::default()
                },
            )?;
            write(df, &a.common.out, "ablation", figures::ablation_figure)?;
            if let Some(dir) = &a.save_removed {
                let all = Ablation {
                    label: "removed".into(),
                    points: ablations.iter().flat_map(|x| x.points.clone()).collect(),
                    mode,
                    also_zero: Vec::new(),
                };
                all.prune(&gm, &reference)?.save(dir)?;
                eprintln!(
                    "saved the model with {} components removed to {}",
                    all.points.len(),
                    dir.display()
                );
            }
            Ok(())
        }
        InterpCommand::Swap(a) => {
            let enc = load(&a.encoder, device)?;
            let dec = load(&a.decoder, device)?;
            let c = load_collection(&corpus_of(&a.decoder, a.corpus.as_deref())?)?;
            let set = split(&c, &a.split)?;
            let unseen = (!a.unseen.is_empty()).then_some(a.unseen.as_slice());
            let mut swap = EncoderSwap::new(&enc, &dec)?;
            swap.norm = match a.final_norm {
                FinalNormArg::Encoder => SwapNorm::Encoder,
                FinalNormArg::Decoder => SwapNorm::Decoder,
            };
            swap.rank_over = a.rank_over.into();
            let ev = swap.evaluate(set, unseen)?;
            let label = format!(
                "{}_encoder+{}_decoder",
                name_of(&a.encoder),
                name_of(&a.decoder)
            );
            eprintln!(
                "{label}: Hits@1 {:.4} Hits@10 {:.4} MRR@10 {:.4} ({} queries){}",
                ev.all.hits_at_1,
                ev.all.hits_at_10,
                ev.all.mrr_at_10,
                ev.all.per_query.len(),
                ev.unseen
                    .as_ref()
                    .map(|u| format!(
                        "; unseen documents' queries: Hits@1 {:.4} ({} queries)",
                        u.hits_at_1,
                        u.per_query.len()
                    ))
                    .unwrap_or_default()
            );
            write(
                ev.to_frame(&label)?,
                &a.out,
                "encoder_swap",
                figures::swap_figure,
            )
        }
    }
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn load(dir: &Path, device: &Device) -> Result<GenirModel> {
    GenirModel::load(dir, device).with_context(|| format!("loading {}", dir.display()))
}

fn split<'a>(c: &'a genir_data::Collection, name: &str) -> Result<&'a QuerySet> {
    c.require_split(name).context("--split")
}

fn setup(c: &Common, device: &Device) -> Result<(GenirModel, QuerySet)> {
    if c.probes == 0 {
        bail!("--probes must be positive");
    }
    let gm = load(&c.model, device)?;
    let collection = load_collection(&corpus_of(&c.model, c.corpus.as_deref())?)?;
    let set = split(&collection, &c.split)?;
    let set = if c.all_queries {
        let queries: Vec<_> = set.queries.iter().take(c.probes).cloned().collect();
        let keep: std::collections::BTreeSet<&str> =
            queries.iter().map(|q| q.qid.as_str()).collect();
        QuerySet {
            qrels: set.qrels.filter(|r| keep.contains(r.qid.as_str())),
            queries: genir_data::Queries::new(queries),
        }
    } else {
        correctly_retrieved(&gm, set, c.probes)?
    };
    eprintln!(
        "analysing {} queries of split {}{}",
        set.queries.len(),
        c.split,
        if c.all_queries {
            ""
        } else {
            " (retrieved at rank 1)"
        }
    );
    Ok((gm, set))
}

fn write(
    df: Table,
    out: &Path,
    stem: &str,
    figure: fn(&Table, &Path) -> genir_interp::Result<()>,
) -> Result<()> {
    let [parquet, csv, svg, png] = figures::write_analysis(&df, out, stem, figure)?;
    eprintln!(
        "{} rows: {}, {}, {}, {}",
        df.height(),
        parquet.display(),
        csv.display(),
        svg.display(),
        png.display()
    );
    Ok(())
}
