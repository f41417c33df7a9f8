//! `cargo xtask reproduce`: trains the GenIR models on the shipped corpus, runs every analysis, the MechIR
//! patching and the corpus edits, and writes `report/index.html` and `report/README.md`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xtask::{reproduce, Options, Scale};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "genir's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole study end to end, with a report (cached: a second run redoes only what changed).
    #[command(after_help = "Examples:
  cargo xtask reproduce                       # shipped wiki-genir corpus, default scale
  cargo xtask reproduce --scale smoke         # a few minutes: the mini corpus and a tiny model
  cargo xtask reproduce --corpus data/my-collection --report my-report
  cargo xtask reproduce --backend wgpu
  cargo xtask reproduce --corpus wiki-genir-mini --pretrained models/flan-t5-small-traceforge --epochs 10 --lr 3e-4")]
    Reproduce {
        /// Shipped collection name (wiki-genir, wiki-genir-mini) or a collection folder; default: the scale's.
        #[arg(long)]
        corpus: Option<String>,
        /// smoke | default | paper.
        #[arg(long, value_enum, default_value = "default")]
        scale: Scale,
        /// Compute backend: flex (CPU), wgpu or cuda, where built in.
        #[arg(long, default_value = "flex")]
        backend: String,
        /// Report folder.
        #[arg(long, default_value = "report")]
        report: PathBuf,
        /// Work folder for models and cached steps (default: target/reproduce/<scale>, plus
        /// `-<folder name>` with --pretrained).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Bi-encoder for the MechIR step and the edit comparison's dense reference.
        #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
        bi_encoder: PathBuf,
        /// Cross-encoder for the MechIR step (a `…ForSequenceClassification` folder).
        #[arg(long, default_value = "models/ms-marco-MiniLM-L-12-v2")]
        cross_encoder: PathBuf,
        /// Run every step again, ignoring the cache.
        #[arg(long)]
        force: bool,
        /// Start the GenIR models from a pretrained Hugging Face T5 folder (its architecture and tokenizer)
        /// instead of the scale's architecture from scratch.
        #[arg(long)]
        pretrained: Option<PathBuf>,
        /// Training epochs (default: the scale's).
        #[arg(long)]
        epochs: Option<usize>,
        /// Peak learning rate (default: the scale's).
        #[arg(long)]
        lr: Option<f64>,
    },
    /// Criterion benchmarks on every backend asked for, PyTorch baselines, and the results in docs/benchmarks.md.
    #[command(after_help = "Examples:
  cargo xtask bench --python ../venv-ref/bin/python           # flex + PyTorch, writes docs/benchmarks.md
  cargo xtask bench --backend flex --backend wgpu
  cargo xtask bench --quick --out target/bench.md             # CI's short mode")]
    Bench {
        /// Backends to run (flex, wgpu, cuda); wgpu/cuda benches are built with that feature.
        #[arg(long = "backend", default_value = "flex")]
        backends: Vec<String>,
        /// Criterion's quick mode, and only the fast benchmarks (not MechIR patching).
        #[arg(long)]
        quick: bool,
        /// Only these benchmarks (forward, train_search, patching, sweep); repeatable.
        #[arg(long = "bench")]
        only: Vec<String>,
        /// A Python with torch and transformers: runs tools/reference/bench_*.py as the baselines.
        #[arg(long, env = "GENIR_REFERENCE_PYTHON")]
        python: Option<PathBuf>,
        /// Markdown file whose generated section is rewritten.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Extra cargo features for every `cargo bench` (e.g. genir-model/wgpu, to reuse the test build).
        #[arg(long = "cargo-features", value_delimiter = ',')]
        cargo_features: Vec<String>,
    },
}

fn main() -> Result<()> {
    genir_model::device::reuse_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,usvg=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Reproduce {
            corpus,
            scale,
            backend,
            report,
            work,
            bi_encoder,
            cross_encoder,
            force,
            pretrained,
            epochs,
            lr,
        } => {
            let backend = backend.parse()?;
            let opts = Options {
                corpus,
                scale,
                work: work.unwrap_or_else(|| {
                    Options::default_work(scale, pretrained.as_deref(), backend)
                }),
                report,
                backend,
                bi_encoder: Some(bi_encoder),
                cross_encoder: Some(cross_encoder),
                force,
                progress: std::io::stderr().is_terminal(),
                pretrained,
                epochs,
                lr,
            };
            let s = reproduce(&opts)?;
            eprintln!(
                "study done in {:.1} s on {} ({} steps, {} from the cache); report: {}",
                s.total_seconds,
                s.backend,
                s.steps.len(),
                s.steps.iter().filter(|r| r.cached).count(),
                opts.report.join("index.html").display()
            );
            Ok(())
        }
        Command::Bench {
            backends,
            quick,
            only,
            python,
            out,
            cargo_features,
        } => {
            let root = std::env::current_dir()?;
            let m = xtask::bench::run(&xtask::bench::BenchOptions {
                backends,
                quick,
                only,
                python,
                criterion_home: root.join("target/xtask-bench/criterion"),
                out: out.clone(),
                root,
                cargo_features,
            })?;
            eprintln!(
                "{} benchmarks measured; results in {}",
                m.len(),
                out.display()
            );
            Ok(())
        }
    }
}
