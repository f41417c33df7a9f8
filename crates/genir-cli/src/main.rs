//! `genir`: the command line of genir.

mod cache;
mod dsi;
mod edit;
mod interp;
mod mechir;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Train, search with, look inside and edit generative retrieval models.
#[derive(Parser, Debug)]
#[command(name = "genir", version, about, long_about = None)]
struct Cli {
    /// Compute backend: flex (CPU), wgpu or cuda, where built in.
    #[arg(long, global = true, default_value = "flex")]
    backend: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a model on inputs and write its logits and cached activations to a safetensors file.
    #[command(after_help = cache::EXAMPLES)]
    Cache(cache::CacheArgs),
    /// Train a GenIR (DSI) model on a collection: indexing and retrieval examples, resumable checkpoints.
    #[command(after_help = dsi::TRAIN_EXAMPLES)]
    Train(Box<dsi::TrainArgs>),
    /// Retrieve docids for queries with constrained beam search.
    #[command(after_help = dsi::SEARCH_EXAMPLES)]
    Search(dsi::SearchArgs),
    /// Open a Hugging Face T5 checkpoint trained by other code as a genir model: atomic docids (one added
    /// token per docid, e.g. `@DOC_ID_<docid>@`) or docids written as text (naive docids).
    #[command(after_help = dsi::IMPORT_EXAMPLES)]
    Import(dsi::ImportArgs),
    /// Write a copy of a model with its atomic docid tokens renamed (e.g. `@DOC_ID_<docid>@`, what the
    /// paper's Python code looks up): the way back from genir to Python DSI code.
    #[command(after_help = dsi::EXPORT_EXAMPLES)]
    Export(dsi::ExportArgs),
    /// Evaluate a model on a query split: Hits@1, Hits@10, MRR@10, Recall@k; TREC run and Parquet output.
    #[command(after_help = dsi::EVAL_EXAMPLES)]
    Eval(dsi::EvalArgs),
    /// Interpretability analyses of a GenIR model: logit lens, contributions, patching, heads, ablation, swap.
    #[command(after_help = interp::EXAMPLES)]
    Interp(interp::InterpArgs),
    /// MechIR-style activation patching of bi-encoders and cross-encoders under document perturbations.
    Mechir(mechir::MechirArgs),
    /// Add, delete or change documents in a trained model without retraining; list, undo, replay edits.
    #[command(after_help = edit::EXAMPLES)]
    Edit(edit::EditArgs),
}

fn main() -> Result<()> {
    genir_model::device::reuse_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let backend: genir_model::device::Backend = cli.backend.parse()?;
    let device = backend.device()?;
    if matches!(cli.command, Command::Train(_))
        && backend != genir_model::device::Backend::Flex
        && std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none()
    {
        // seen on an H100: autotuning picks matmul kernels by timing, and they sum in different orders
        tracing::warn!(
            "training on {backend}: runs are bit-for-bit reproducible (same seed, --resume) only with \
             CUBECL_AUTOTUNE_LEVEL=minimal (docs/backends.md)"
        );
    }
    match cli.command {
        Command::Cache(args) => cache::run(args, &device),
        Command::Train(args) => dsi::train(*args, &device),
        Command::Search(args) => dsi::search(args, &device),
        Command::Import(args) => dsi::import(args, &device),
        Command::Export(args) => dsi::export(args, &device),
        Command::Eval(args) => dsi::eval(args, &device),
        Command::Interp(args) => interp::run(args, &device),
        Command::Mechir(args) => mechir::run(args, &device),
        Command::Edit(args) => edit::run(args, &device),
    }
}
