//! `genir train`, `genir search`, `genir eval`: the DSI workflow.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::Args;
use genir_data::Collection;
use genir_train::bundle::{DocidTokenPattern, GenirModel, DOCIDS_FILE};
use genir_train::dense::DenseIndex;
use genir_train::docid::DocidKind;
use genir_train::examples::ExampleConfig;
use genir_train::metrics::evaluate;
use genir_train::train::{Architecture, Init, Progress, StepInfo, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

/// File in a run folder recording which collection it was trained on.
const RUN_INFO: &str = "genir_run.json";

/// Loads a collection: a shipped name (`wiki-genir`, `wiki-genir-mini`) or a folder with `corpus.*`,
/// `queries.<split>.*` and `qrels.<split>.*`.
pub fn load_collection(spec: &str) -> Result<Collection> {
    genir_data::shipped::load_name_or_dir(spec).with_context(|| format!("--corpus {spec:?}"))
}

pub fn corpus_of(model: &Path, given: Option<&str>) -> Result<String> {
    if let Some(c) = given {
        return Ok(c.to_string());
    }
    let info = model.join(RUN_INFO);
    let text = std::fs::read_to_string(&info).with_context(|| {
        format!(
            "{} is missing: pass --corpus to say which collection the model was trained on",
            info.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", info.display()))?;
    v.get("corpus")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no \"corpus\" field", info.display()))
}

pub const TRAIN_EXAMPLES: &str = "Examples:
  # a small DSI model from scratch on the shipped corpus, atomic docids (the defaults; the study of
  # `cargo xtask reproduce` trains its own, 6 epochs at lr 1e-3)
  genir train --out models/dsi-atomic
  # semantic (hierarchical k-means) docids, 10 clusters per level, leaves of 100
  genir train --out models/dsi-semantic --docids semantic:10:100 --epochs 40
  # a \"missing documents\" model: the same recipe without three documents
  genir train --out models/dsi-minus3 --exclude 17,256,1024
  # continue a run that was stopped
  genir train --out models/dsi-atomic --resume";

/// Arguments of `genir train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Collection: a shipped name or a folder (corpus.*, queries.<split>.*, qrels.<split>.*).
    #[arg(long, default_value = "wiki-genir")]
    pub corpus: String,
    /// Run folder (model, tokenizer, docids, checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Docid scheme: atomic, naive, semantic or semantic:K:C.
    #[arg(long, default_value = "atomic")]
    pub docids: String,
    /// Document embeddings for semantic docids: tfidf, bi-encoder:DIR (e.g. all-MiniLM-L6-v2) or t5:DIR.
    #[arg(long, default_value = "tfidf")]
    pub embedder: String,
    /// Keep atomic docid rows random instead of initialising them from the model's own document
    /// representations.
    #[arg(long)]
    pub random_docid_rows: bool,
    /// Start from a Hugging Face T5 folder instead of training from scratch.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// From scratch: residual width.
    #[arg(long, default_value_t = 128)]
    pub d_model: usize,
    /// From scratch: feed-forward width.
    #[arg(long, default_value_t = 512)]
    pub d_ff: usize,
    /// From scratch: encoder (and decoder) blocks.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// From scratch: attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// From scratch: WordPiece vocabulary size learned from the corpus.
    #[arg(long, default_value_t = 8000)]
    pub text_vocab: usize,
    /// From scratch: use this tokenizer.json (e.g. the BERT one of all-MiniLM-L6-v2,
    /// models/all-MiniLM-L6-v2/tokenizer.json) instead of learning one from the corpus; --text-vocab is
    /// then ignored. Its id 0 must be the padding token.
    #[arg(long, conflicts_with = "pretrained")]
    pub tokenizer: Option<PathBuf>,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Global gradient-norm clipping (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f32,
    /// Seed of initialisation and data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Longest encoder input in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_source_len: usize,
    /// Indexing examples per document (consecutive chunks of its text).
    #[arg(long, default_value_t = 2)]
    pub index_chunks: usize,
    /// Also index every sentence of each document as its own example.
    #[arg(long)]
    pub index_sentences: bool,
    /// Indexing examples per retrieval example in an epoch (default: every indexing example once).
    #[arg(long)]
    pub index_ratio: Option<f64>,
    /// Documents to leave out of training (comma-separated docids).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Validate every N steps (0: at the end only).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Data-parallel shards per step (one thread each, all on the one --backend device; the library's
    /// `Trainer::devices` puts shard i on device i mod n).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Stop after this many steps of this session (a later --resume continues); for tests and budgets.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let arch = Architecture {
            d_model: self.d_model,
            d_ff: self.d_ff,
            layers: self.layers,
            heads: self.heads,
            text_vocab: self.text_vocab,
        };
        let init = match (&self.pretrained, &self.tokenizer) {
            (Some(p), _) => Init::Pretrained(p.clone()),
            (None, Some(t)) => Init::ScratchWithTokenizer {
                arch,
                tokenizer: t.clone(),
            },
            (None, None) => Init::Scratch(arch),
        };
        Ok(TrainConfig {
            init,
            docids: self.docids.parse::<DocidKind>()?,
            examples: ExampleConfig {
                max_source_len: self.max_source_len,
                index_chunks: self.index_chunks,
                index_sentences: self.index_sentences,
                index_ratio: self.index_ratio,
                exclude: self.exclude.clone(),
            },
            batch_size: self.batch_size,
            epochs: self.epochs,
            lr: self.lr,
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            clip_norm: (self.clip_norm > 0.0).then_some(self.clip_norm),
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            eval_every: self.eval_every,
            validation_split: "validation".into(),
            shards: self.shards,
            embedder: self.embedder.parse()?,
            docid_rows_from_documents: !self.random_docid_rows,
        })
    }
}

struct Bar {
    bar: ProgressBar,
    /// When stderr is not a terminal the bar is hidden: print a line every this many steps instead.
    every: usize,
}

impl Progress for Bar {
    fn step(&mut self, info: &StepInfo) {
        if self.bar.length() != Some(info.total_steps as u64) {
            self.bar.set_length(info.total_steps as u64);
        }
        self.bar.set_position(info.step as u64);
        let msg = format!(
            "epoch {} loss {:.4} lr {:.2e} {:.0} ex/s",
            info.epoch + 1,
            info.loss,
            info.lr,
            info.examples_per_sec
        );
        if self.bar.is_hidden()
            && (info.step.is_multiple_of(self.every) || info.step == info.total_steps)
        {
            eprintln!("step {}/{}: {msg}", info.step, info.total_steps);
        }
        self.bar.set_message(msg);
    }
    fn event(&mut self, message: &str) {
        if self.bar.is_hidden() {
            eprintln!("{message}");
        } else {
            self.bar.println(message);
        }
        tracing::info!("{message}");
    }
}

pub fn train(args: TrainArgs, device: &Device) -> Result<()> {
    let config = args.config()?;
    let collection = load_collection(&args.corpus)?;
    let started = Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps, ETA {eta} | {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut progress = Bar { bar, every: 100 };
    let mut trainer = Trainer::new(config, device.clone());
    trainer.stop_after = args.stop_after;
    let summary = trainer
        .train(&collection, &args.out, args.resume, &mut progress)
        .with_context(|| format!("training into {}", args.out.display()))?;
    progress.bar.finish_and_clear();
    if !summary.finished {
        eprintln!(
            "stopped after step {} of {} (--stop-after); continue with --resume",
            summary.state.step, summary.state.total_steps
        );
        return Ok(());
    }
    let info = serde_json::json!({ "corpus": args.corpus });
    genir_io::write_atomic(&args.out.join(RUN_INFO), info.to_string().as_bytes())?;
    let last = summary.state.validation.last();
    eprintln!(
        "trained {} steps in {:.1} s ({:.1} examples/s this session){}; model in {}",
        summary.state.step,
        started.elapsed().as_secs_f64(),
        summary.examples_per_sec,
        last.map(|v| format!(
            "; validation Hits@1 {:.4}, Hits@10 {:.4}",
            v.hits_at_1, v.hits_at_10
        ))
        .unwrap_or_default(),
        args.out.display()
    );
    Ok(())
}

pub const SEARCH_EXAMPLES: &str = "Examples:
  genir search --model models/dsi-atomic \"who founded the anarchist congress of amsterdam\"
  genir search --model models/dsi-atomic -k 3 \"first query\" \"second query\"";

/// Arguments of `genir search`.
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Model folder written by `genir train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Collection for titles (default: the one the model was trained on).
    #[arg(long)]
    pub corpus: Option<String>,
    /// Results per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Beam width for multi-token docids (at least k).
    #[arg(long, default_value_t = 10)]
    pub beams: usize,
    /// Query texts.
    #[arg(required = true)]
    pub queries: Vec<String>,
}

pub fn search(args: SearchArgs, device: &Device) -> Result<()> {
    if args.k == 0 {
        bail!("-k must be at least 1");
    }
    let model = GenirModel::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    // titles, when the model's collection is known; one named with --corpus must load
    let collection = match &args.corpus {
        Some(spec) => Some(load_collection(spec)?),
        None => corpus_of(&args.model, None)
            .and_then(|c| load_collection(&c))
            .ok(),
    };
    let mut searcher = model.searcher()?;
    searcher.beams = args.beams;
    let hits = searcher.search(&args.queries, args.k)?;
    for (q, hs) in args.queries.iter().zip(hits) {
        println!("query: {q}");
        for (i, h) in hs.iter().enumerate() {
            let title = collection
                .as_ref()
                .and_then(|c| c.corpus.get(&h.docid))
                .map(|d| d.title.clone())
                .unwrap_or_default();
            println!("{:>3}  {:>8}  {:>9.4}  {}", i + 1, h.docid, h.score, title);
        }
    }
    Ok(())
}

pub const IMPORT_EXAMPLES: &str = "Examples:
  # a checkpoint of the paper's code (T5 with one added token @DOC_ID_<docid>@ per document), checked
  # against the collection it was trained on; a genir model folder (a copy of the weights) in --out
  genir import --model runs/t5-nq10k --docid-tokens '@DOC_ID_{}@' --corpus data/nq10k --out models/t5-nq10k
  # without a copy: docids.json (and genir_run.json) written beside the weights
  genir import --model runs/t5-nq10k --corpus data/nq10k
  # naive docids written as text (the docid's own tokens, then </s>): the collection names the docids
  genir import --model runs/t5-nq10k-naive --docids text --corpus data/nq10k --out models/t5-nq10k-naive
  # the paper's semantic ids (its --semantic-doc-id-mapping: docid -> \"1_4_2\", written as the words 1 4 2)
  genir import --model runs/t5-nq10k-sem --docids text --docid-map semantic_ids.json --corpus data/nq10k --out models/t5-sem
  # then every command opens it
  genir eval --model models/t5-nq10k --split test";

pub const EXPORT_EXAMPLES: &str = "Examples:
  # a genir model whose docid tokens the paper's Python code finds (@DOC_ID_<docid>@)
  genir export --model models/dsi-atomic --out exported/dsi-atomic
  # in Python: transformers.T5ForConditionalGeneration.from_pretrained(\"exported/dsi-atomic\"), and
  # tokenizer.convert_tokens_to_ids(\"@DOC_ID_17@\") is document 17's output row
  genir export --model models/dsi-atomic --docid-tokens '<doc {}>' --out exported/other-names";

/// Arguments of `genir export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// genir model folder with atomic docids.
    #[arg(long)]
    pub model: PathBuf,
    /// How the docid tokens are named in the copy: fixed text around `{}`, where the docid goes (the paper's
    /// code: `@DOC_ID_{}@`).
    #[arg(long, default_value = "@DOC_ID_{}@")]
    pub docid_tokens: String,
    /// The new folder (a Hugging Face T5 folder that is also a genir model folder). Must not hold a model.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the model's collection in the paper's layout here: `corpus.json` and `queries.<split>.json`
    /// (JSON arrays, relevant documents inline: its preprocess.py's -d, -t, -v and --test files) and
    /// `correct_valid.json`, the [docid token, query id] pairs of validation queries the model retrieves at
    /// rank 1 (what its analysis scripts take as --correct-valid).
    #[arg(long, value_name = "DIR")]
    pub collection_out: Option<PathBuf>,
    /// The collection for --collection-out (default: the one the model was trained on).
    #[arg(long)]
    pub corpus: Option<String>,
}

/// `genir export`: a copy of a model with its docid tokens renamed.
/// Refuses an output folder that already holds a model (its weights, config or docids would be overwritten
/// and its checkpoints or edit log left beside another model).
pub(crate) fn refuse_model_folder(out: &Path) -> Result<()> {
    for f in [DOCIDS_FILE, "model.safetensors", "config.json"] {
        let p = out.join(f);
        if p.exists() {
            bail!("{} exists: --out must be a new folder", p.display());
        }
    }
    Ok(())
}

pub fn export(args: ExportArgs, device: &Device) -> Result<()> {
    let pattern: DocidTokenPattern = args.docid_tokens.parse()?;
    refuse_model_folder(&args.out)?;
    let model = GenirModel::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?
        .rename_docid_tokens(&pattern)
        .with_context(|| format!("renaming the docid tokens of {}", args.model.display()))?;
    model.save(&args.out)?;
    let info = args.model.join(RUN_INFO);
    if info.exists() {
        let bytes = std::fs::read(&info).with_context(|| format!("reading {}", info.display()))?;
        genir_io::write_atomic(&args.out.join(RUN_INFO), &bytes)?;
    }
    eprintln!(
        "{} docid tokens named {pattern} (ids {}..{}); model folder {}",
        model.scheme.len(),
        model.scheme.token_offset,
        model.scheme.vocab_size(),
        args.out.display()
    );
    if let Some(dir) = &args.collection_out {
        let spec = corpus_of(&args.model, args.corpus.as_deref())?;
        let c = load_collection(&spec)?;
        let files = genir_data::formats::save_json_array_collection(dir, &c)?;
        eprintln!(
            "collection {spec:?} in the paper's layout: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        match c.split("validation") {
            Some(val) => {
                let run = model.searcher()?.run(&val.queries, 1, 32, "genir")?;
                let pairs: Vec<(String, String)> = run
                    .entries
                    .iter()
                    .filter(|e| val.qrels.relevant(&e.qid).any(|d| d == e.docid))
                    .map(|e| (pattern.token(&e.docid), e.qid.clone()))
                    .collect();
                let path = dir.join("correct_valid.json");
                genir_io::write_atomic(&path, serde_json::to_string(&pairs)?.as_bytes())?;
                eprintln!(
                    "{}: {} of {} validation queries retrieved at rank 1",
                    path.display(),
                    pairs.len(),
                    val.queries.len()
                );
            }
            None => eprintln!("no validation split: no correct_valid.json"),
        }
    }
    Ok(())
}

/// Arguments of `genir import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Hugging Face T5 folder (config.json, model.safetensors or pytorch_model.bin, tokenizer.json) trained by
    /// other code.
    #[arg(long)]
    pub model: PathBuf,
    /// How the model writes docids: `atomic` (one added token per docid, named by --docid-tokens) or `text`
    /// (the docid string in the model's own tokens, then `</s>`: naive docids of Python DSI code; needs
    /// --corpus, whose documents are the docids).
    #[arg(long, default_value = "atomic", value_parser = ["atomic", "text"])]
    pub docids: String,
    /// With `--docids text`: a JSON object from each docid to what the model writes for it, e.g. the paper's
    /// semantic ids (`"1_4_2"`; underscores separate words, written as `1 4 2`). Default: the docid itself.
    #[arg(long, value_name = "FILE")]
    pub docid_map: Option<PathBuf>,
    /// How the atomic docid tokens are named: fixed text around `{}`, where the docid goes (the paper's code:
    /// `@DOC_ID_{}@`). The matching tokens must be consecutive ids, in any order of docids.
    #[arg(long, default_value = "@DOC_ID_{}@")]
    pub docid_tokens: String,
    /// The collection it was trained on: every one of its documents must have a docid token; later commands
    /// use it by default.
    #[arg(long)]
    pub corpus: Option<String>,
    /// Write a genir model folder here (weights, tokenizer, docids; a new folder). Default: write docids.json
    /// into --model (atomic docids only: `--docids text` grows the vocabulary and needs --out).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn import(args: ImportArgs, device: &Device) -> Result<()> {
    let pattern: DocidTokenPattern = args.docid_tokens.parse()?;
    if args.docid_map.is_some() && args.docids != "text" {
        bail!("--docid-map applies to --docids text (atomic docids are named by --docid-tokens)");
    }
    if let Some(out) = &args.out {
        refuse_model_folder(out)?;
    }
    let model = if args.docids == "text" {
        let spec = args
            .corpus
            .as_deref()
            .context("--docids text needs --corpus: its documents' ids are the docids")?;
        if args.out.is_none() {
            // a text import adds rows and tokens: docids.json alone beside the old weights would not open
            bail!(
                "--docids text gives the model one new row per docid token: pass --out NEW to write the \
                 imported model (weights, tokenizer, docids) into a new folder"
            );
        }
        let docids: Vec<String> = load_collection(spec)?
            .corpus
            .iter()
            .map(|d| d.docid.clone())
            .collect();
        let written = match &args.docid_map {
            None => docids.clone(),
            Some(path) => {
                let text = std::fs::read(path)
                    .with_context(|| format!("reading --docid-map {}", path.display()))?;
                let map: std::collections::HashMap<String, String> = serde_json::from_slice(&text)
                    .with_context(|| {
                        format!(
                            "--docid-map {}: expected a JSON object from docid to string",
                            path.display()
                        )
                    })?;
                docids
                    .iter()
                    .map(|d| {
                        map.get(d).map(|w| w.replace('_', " ")).with_context(|| {
                            format!(
                                "--docid-map {} has no entry for docid {d:?}",
                                path.display()
                            )
                        })
                    })
                    .collect::<Result<_>>()?
            }
        };
        GenirModel::import_text(&args.model, &docids, &written, device)
    } else {
        GenirModel::import_atomic(&args.model, &pattern, device)
    }
    .with_context(|| format!("importing {}", args.model.display()))?;
    if let (Some(spec), true) = (&args.corpus, model.scheme.is_atomic()) {
        let c = load_collection(spec)?;
        let missing: Vec<&str> = c
            .corpus
            .iter()
            .map(|d| d.docid.as_str())
            .filter(|d| model.scheme.index_of(d).is_none())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} of the {} documents of --corpus {spec:?} have no docid token {pattern} in {}, e.g. {:?}",
                missing.len(),
                c.corpus.len(),
                args.model.display(),
                &missing[..missing.len().min(5)]
            );
        }
        let extra = model.scheme.len().saturating_sub(c.corpus.len());
        if extra > 0 {
            tracing::warn!(
                "{extra} docid tokens of {} name documents that are not in --corpus {spec:?}",
                args.model.display()
            );
        }
    }
    let dir = match &args.out {
        Some(out) => {
            model.save(out)?;
            out.clone()
        }
        None => {
            let path = args.model.join(DOCIDS_FILE);
            if path.exists() {
                bail!(
                    "{} exists: {} is already a genir model folder (pass --out to write a new one)",
                    path.display(),
                    args.model.display()
                );
            }
            model.scheme.save(&path)?;
            args.model.clone()
        }
    };
    if let Some(spec) = &args.corpus {
        let info = serde_json::json!({ "corpus": spec });
        genir_io::write_atomic(&dir.join(RUN_INFO), info.to_string().as_bytes())?;
    }
    eprintln!(
        "{} {} docids (docid tokens {}..{}{}); genir model folder {}",
        model.scheme.len(),
        model.scheme.kind,
        model.scheme.token_offset,
        model.scheme.vocab_size(),
        if model.scheme.is_atomic() {
            format!(", {pattern}")
        } else {
            String::new()
        },
        dir.display()
    );
    Ok(())
}

pub const EVAL_EXAMPLES: &str = "Examples:
  genir eval --model models/dsi-atomic --split test
  genir eval --model models/dsi-atomic --split test --run-out test.run --parquet test.parquet
  genir eval --bm25 --corpus wiki-genir --split test      (the lexical reference: BM25, k1 0.9, b 0.4)
  genir eval --dense models/all-MiniLM-L6-v2 --corpus wiki-genir --split test   (a dual-encoder reference)";

/// Arguments of `genir eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model folder written by `genir train`.
    #[arg(long, required_unless_present_any = ["bm25", "dense"])]
    pub model: Option<PathBuf>,
    /// Evaluate BM25 (k1 0.9, b 0.4, over title + text) instead of a model: the lexical reference on the same
    /// queries. Needs --corpus; --beams and --batch-size do not apply.
    #[arg(long, conflicts_with_all = ["model", "dense"], requires = "corpus")]
    pub bm25: bool,
    /// Evaluate a bi-encoder folder (sentence-transformers or Hugging Face BERT-family) as a dense retriever
    /// instead of a model: every document embedded once, exact ranking by the model's similarity. Needs
    /// --corpus; --beams does not apply; --batch-size is the texts per encoder pass.
    #[arg(
        long,
        conflicts_with = "model",
        requires = "corpus",
        value_name = "DIR"
    )]
    pub dense: Option<PathBuf>,
    /// Collection (default: the one the model was trained on).
    #[arg(long)]
    pub corpus: Option<String>,
    /// Query split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Results per query (Recall@100 needs 100).
    #[arg(short, long, default_value_t = 100)]
    pub k: usize,
    /// Beam width for multi-token docids (at least k).
    #[arg(long, default_value_t = 10)]
    pub beams: usize,
    /// Queries per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Write the ranked results as a TREC run file.
    #[arg(long)]
    pub run_out: Option<PathBuf>,
    /// Write per-query measures as Parquet.
    #[arg(long)]
    pub parquet: Option<PathBuf>,
}

/// A retriever evaluated instead of a model.
enum Reference {
    Bm25(genir_data::bm25::Bm25),
    Dense(Box<DenseIndex>, String),
}

/// A run tag from a folder's name.
fn tag_of(dir: &Path, default: &str) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| default.into())
}

pub fn eval(args: EvalArgs, device: &Device) -> Result<()> {
    if args.k == 0 {
        bail!("-k must be at least 1 (Recall@k)");
    }
    let model = match &args.model {
        Some(m) => {
            Some(GenirModel::load(m, device).with_context(|| format!("loading {}", m.display()))?)
        }
        None => None,
    };
    let corpus = match &args.model {
        Some(m) => corpus_of(m, args.corpus.as_deref())?,
        None => args
            .corpus
            .clone()
            .context("--bm25 and --dense need --corpus to say which collection to index")?,
    };
    let collection = load_collection(&corpus)?;
    let split = collection.require_split(&args.split).context("--split")?;
    // an index is built before the clock starts, as a model is loaded before it
    let reference = match (&model, &args.dense) {
        (Some(_), _) => None,
        (None, Some(dir)) => {
            let dot = genir_model::bert::Dot::from_pretrained(dir, device)
                .with_context(|| format!("loading the bi-encoder {}", dir.display()))?;
            let bar = ProgressBar::new(collection.corpus.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} documents embedded, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let index = DenseIndex::build_with_progress(
                dot,
                &collection.corpus,
                args.batch_size,
                |d, _| bar.set_position(d as u64),
            )
            .with_context(|| format!("indexing {} with {}", corpus, dir.display()))?;
            bar.finish_and_clear();
            Some(Reference::Dense(Box::new(index), tag_of(dir, "dense")))
        }
        (None, None) => Some(Reference::Bm25(genir_data::bm25::Bm25::new(
            &collection.corpus,
        ))),
    };
    let started = Instant::now();
    let run = match (&model, &args.model, reference) {
        (Some(model), Some(dir), _) => {
            let mut searcher = model.searcher()?;
            searcher.beams = args.beams;
            searcher.run(
                &split.queries,
                args.k,
                args.batch_size,
                &tag_of(dir, "genir"),
            )?
        }
        (_, _, Some(Reference::Dense(index, tag))) => index.run(&split.queries, args.k, &tag)?,
        (_, _, Some(Reference::Bm25(bm25))) => bm25.run(&split.queries, args.k, "bm25"),
        _ => bail!("no model and no reference index"),
    };
    let secs = started.elapsed().as_secs_f64();
    let qids: Vec<String> = split.queries.iter().map(|q| q.qid.clone()).collect();
    let ev = evaluate(&run, &split.qrels, Some(&qids));
    println!("{} {}: {}", collection.name, args.split, ev.summary());
    eprintln!(
        "{} queries in {:.2} s ({:.1} queries/s)",
        qids.len(),
        secs,
        qids.len() as f64 / secs.max(1e-9)
    );
    if let Some(p) = &args.run_out {
        genir_data::formats::save_run(p, &run)?;
    }
    if let Some(p) = &args.parquet {
        ev.write_parquet(p)?;
    }
    Ok(())
}
