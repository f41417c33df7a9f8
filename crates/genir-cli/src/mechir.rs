//! `genir mechir`: MechIR-style activation patching of bi-encoders and cross-encoders.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::{Args, Subcommand, ValueEnum};
use genir_mechir::attention::{attention_patterns, PatternFilter};
use genir_mechir::plot::{block_panels, head_panels, heatmap};
use genir_mechir::table::write_table;
use genir_mechir::{
    pairs_frame, sweep_blocks, sweep_heads, EncodeConfig, PairDataset, PairPerturbation,
    PatchConfig, PatchModel, Sampling,
};
use genir_model::bert::{Cat, Dot};

use crate::dsi::load_collection;

pub const EXAMPLES: &str = "Examples:
  genir mechir patch --model models/all-MiniLM-L6-v2 --kind dot --corpus wiki-genir --split test \\
      --pairs 16 --perturbation tfc1 --patch blocks --out mechir-out
  genir mechir patch --model models/ms-marco-MiniLM-L-12-v2 --kind cat --perturbation tdc --patch heads \\
      --patterns --out mechir-cat

Writes {blocks,heads}.parquet/.csv (long tables: component, layer, position, token, value / layer, head,
position, value), {blocks,heads}.svg and .png heatmaps, pairs.parquet/.csv (the pairs and their scores), and
with --patterns attention.parquet/.csv (attention weights of every pair, original and perturbed).
Values are MechIR's: (patched - original) / (perturbed - original), averaged over the pairs, with the
perturbed run's activations patched into the original run.";

/// `genir mechir ...`.
#[derive(Args, Debug)]
pub struct MechirArgs {
    #[command(subcommand)]
    pub command: MechirCommand,
}

/// Subcommands of `genir mechir`.
#[derive(Subcommand, Debug)]
pub enum MechirCommand {
    /// Activation patching of a ranker under a document perturbation: tables and heatmaps.
    #[command(after_help = EXAMPLES)]
    Patch(PatchArgs),
}

/// The ranker kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Bi-encoder (sentence-transformers folder): mean/CLS pooling, raw dot product (MechIR's Dot).
    Dot,
    /// Cross-encoder (`…ForSequenceClassification` folder): relevance logit (MechIR's Cat).
    Cat,
}

/// What to patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Patch {
    /// Residual stream, attention output and MLP output per layer and position.
    Blocks,
    /// Each attention head's output, all positions at once.
    Heads,
    /// Both.
    Both,
}

/// Arguments of `genir mechir patch`.
#[derive(Args, Debug)]
pub struct PatchArgs {
    /// Model folder (Hugging Face / sentence-transformers).
    #[arg(long)]
    pub model: PathBuf,
    /// Ranker kind.
    #[arg(long, value_enum, default_value = "dot")]
    pub kind: Kind,
    /// Shipped collection name or collection folder.
    #[arg(long, alias = "dataset", default_value = "wiki-genir")]
    pub corpus: String,
    /// Query split whose judgments give the pairs.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Number of pairs (relevance-stratified, seeded sample of the judgments).
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Seed of the sample (and of seeded perturbations).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Perturbation: tfc1 (the first query term appended), tfc1-random (a query term drawn with --seed, like
    /// MechIR's TFC1), tdc, delete, replace, shuffle, inject (the query at the start).
    #[arg(long, default_value = "tfc1")]
    pub perturbation: String,
    /// What to patch.
    #[arg(long, value_enum, default_value = "blocks")]
    pub patch: Patch,
    /// Maximum query tokens (MechIR's q_max_length).
    #[arg(long, default_value_t = 30)]
    pub query_max_length: usize,
    /// Maximum document tokens (MechIR's d_max_length).
    #[arg(long, default_value_t = 200)]
    pub doc_max_length: usize,
    /// Report positions up to the maximum length, as MechIR's padding="max_length" (zeros past the inputs).
    #[arg(long)]
    pub pad_to_max_length: bool,
    /// Pairs per batch.
    #[arg(long, default_value_t = 16)]
    pub pair_batch: usize,
    /// Tokens per patched forward pass.
    #[arg(long, default_value_t = 8192)]
    pub token_budget: usize,
    /// Also write the attention patterns of every pair.
    #[arg(long)]
    pub patterns: bool,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: MechirArgs, device: &Device) -> Result<()> {
    match args.command {
        MechirCommand::Patch(a) => patch(a, device),
    }
}

fn patch(args: PatchArgs, device: &Device) -> Result<()> {
    if args.pairs == 0 {
        bail!("--pairs must be positive");
    }
    let collection = load_collection(&args.corpus)?;
    let split = collection.require_split(&args.split).context("--split")?;
    let perturbation = PairPerturbation::parse(&args.perturbation, args.seed)?;
    let pairs = PairDataset::sample(
        &collection.corpus,
        &split.queries,
        &split.qrels,
        perturbation,
        &Sampling::new(args.pairs, args.seed),
    )?;
    if pairs.len() < args.pairs {
        eprintln!(
            "note: only {} judged pairs are changed by {}",
            pairs.len(),
            args.perturbation
        );
    }
    let config = PatchConfig {
        encode: EncodeConfig {
            query_max_length: args.query_max_length,
            doc_max_length: args.doc_max_length,
            pad_to_max_length: args.pad_to_max_length,
            ..EncodeConfig::default()
        },
        pair_batch: args.pair_batch,
        token_budget: args.token_budget,
        ..PatchConfig::default()
    };
    match args.kind {
        Kind::Dot => {
            let m = Dot::from_pretrained(&args.model, device)
                .with_context(|| format!("loading a bi-encoder from {}", args.model.display()))?;
            sweep(&m, &pairs, &config, &args)
        }
        Kind::Cat => {
            let m = Cat::from_pretrained(&args.model, device).with_context(|| {
                format!("loading a cross-encoder from {}", args.model.display())
            })?;
            sweep(&m, &pairs, &config, &args)
        }
    }
}

fn figures(panels: &[genir_mechir::plot::Panel], out: &Path, stem: &str) -> Result<()> {
    for ext in ["svg", "png"] {
        heatmap(panels, &out.join(format!("{stem}.{ext}")))?;
    }
    Ok(())
}

fn sweep<M: PatchModel>(
    model: &M,
    pairs: &PairDataset,
    config: &PatchConfig,
    args: &PatchArgs,
) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let started = std::time::Instant::now();
    let mut scores = None;
    if matches!(args.patch, Patch::Blocks | Patch::Both) {
        let r = sweep_blocks(model, pairs, config)?;
        write_table(&r.to_frame()?, &args.out, "blocks")?;
        figures(&block_panels(&r), &args.out, "blocks")?;
        scores = Some(r.scores);
    }
    if matches!(args.patch, Patch::Heads | Patch::Both) {
        let r = sweep_heads(model, pairs, None, config)?;
        write_table(&r.to_frame()?, &args.out, "heads")?;
        figures(&head_panels(&r), &args.out, "heads")?;
        scores = Some(r.scores);
    }
    if let Some(s) = scores {
        write_table(&pairs_frame(&pairs.pairs, &s)?, &args.out, "pairs")?;
    }
    if args.patterns {
        let df = attention_patterns(model, pairs, &config.encode, &PatternFilter::default())?;
        write_table(&df, &args.out, "attention")?;
    }
    eprintln!(
        "patched {} pairs ({}, {}) with {} in {:.1} s; results in {}",
        pairs.len(),
        model.kind(),
        pairs.perturbation.name(),
        match args.patch {
            Patch::Blocks => "block patching",
            Patch::Heads => "head patching",
            Patch::Both => "block and head patching",
        },
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
