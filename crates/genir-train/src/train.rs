//! The DSI training loop: burn autodiff + AdamW, linear warm-up and decay, global gradient-norm clipping,
//! seeded and resumable bit for bit from atomic checkpoints, with validation Hits@1 / Hits@10.
//!
//! A run folder holds the finished model (a [`GenirModel`] folder) and `checkpoints/step-NNNNNNNN/` folders
//! (`config.json`, `model.safetensors`, `optimizer.bpk`, `state.json`), plus `checkpoints/latest` naming
//! the newest. A checkpoint is written to a temporary folder and renamed into place, and `latest` is
//! replaced atomically, so a run killed at any moment resumes from its last complete checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use genir_data::Collection;
use genir_model::hooks::Hooks;
use genir_model::t5::{T5Config, T5Model};
use genir_model::tokenizer::TextTokenizer;
use serde::{Deserialize, Serialize};

use crate::bundle::GenirModel;
use crate::docid::{DocidKind, DocidScheme};
use crate::embed::EmbedderSpec;
use crate::error::{Result, TrainError};
use crate::examples::{cross_entropy, Batch, Example, ExampleConfig, TrainingSet};
use crate::metrics::evaluate;
use crate::vocab;

/// Architecture of a model trained from scratch (T5 v1.0 layout: ReLU feed-forward, tied head).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// Residual width.
    pub d_model: usize,
    /// Feed-forward width.
    pub d_ff: usize,
    /// Encoder blocks (the decoder has as many).
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Size of the WordPiece text vocabulary learned from the corpus.
    pub text_vocab: usize,
}

impl Default for Architecture {
    fn default() -> Self {
        Self {
            d_model: 128,
            d_ff: 512,
            layers: 2,
            heads: 4,
            text_vocab: 8000,
        }
    }
}

/// Where the network comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Random initialisation (Hugging Face's T5 scheme) with a tokenizer learned from the corpus.
    Scratch(Architecture),
    /// A Hugging Face T5 folder; its vocabulary is extended with the docid tokens.
    Pretrained(PathBuf),
    /// Random initialisation with an existing `tokenizer.json` (e.g. the BERT WordPiece tokenizer shipped
    /// with all-MiniLM-L6-v2) instead of one learned from the corpus; the architecture's `text_vocab` is
    /// ignored. Its id 0 must be the padding token (genir's T5 pads and starts decoding with id 0); id 1 ends
    /// multi-token docids. The file's own padding and truncation are dropped (genir truncates sources).
    ScratchWithTokenizer {
        /// The network's sizes.
        arch: Architecture,
        /// The `tokenizer.json`.
        tokenizer: PathBuf,
    },
}

/// Loads a `tokenizer.json` for [`Init::ScratchWithTokenizer`]: id 0 must be a padding token; the file's
/// padding and truncation are switched off.
pub fn load_text_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let mut tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
    match tok.id_to_token(0).as_deref() {
        Some("[PAD]" | "<pad>") => {}
        other => {
            return Err(TrainError::Tokenizer(format!(
                "{}: id 0 is {other:?}, not a padding token ([PAD] or <pad>); genir's T5 pads and starts \
                 decoding with id 0",
                path.display()
            )))
        }
    }
    if tok.get_vocab_size(true) < 2 {
        return Err(TrainError::Tokenizer(format!(
            "{}: a vocabulary of {} token(s) is too small",
            path.display(),
            tok.get_vocab_size(true)
        )));
    }
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(tok)
}

/// Everything that determines a training run. Resuming requires the same configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub init: Init,
    /// Docid scheme.
    pub docids: DocidKind,
    /// Examples and their mix.
    pub examples: ExampleConfig,
    /// Examples per step.
    pub batch_size: usize,
    /// Passes over the training examples.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub clip_norm: Option<f32>,
    /// Seed of initialisation, data order and semantic-id clustering.
    pub seed: u64,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Validate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Split used for validation Hits@k.
    pub validation_split: String,
    /// Data-parallel shards per step (each on its own device of the list given to the trainer).
    pub shards: usize,
    /// Document embeddings for semantic docids.
    #[serde(default)]
    pub embedder: EmbedderSpec,
    /// Initialise each atomic docid's output row from the untrained model's own representation of the
    /// document (see [`init_docid_rows`]); otherwise the rows stay random.
    #[serde(default)]
    pub docid_rows_from_documents: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            init: Init::Scratch(Architecture::default()),
            docids: DocidKind::Atomic,
            examples: ExampleConfig::default(),
            batch_size: 32,
            epochs: 30,
            lr: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.01,
            clip_norm: Some(1.0),
            seed: 42,
            checkpoint_every: 500,
            keep_checkpoints: 2,
            eval_every: 0,
            validation_split: "validation".into(),
            shards: 1,
            embedder: EmbedderSpec::TfIdf,
            docid_rows_from_documents: true,
        }
    }
}

/// Progress of one step, for progress bars and logs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepInfo {
    /// Steps done (1-based).
    pub step: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Epoch of this step (0-based).
    pub epoch: usize,
    /// Training loss of the step.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Examples per second since the run (or resume) started.
    pub examples_per_sec: f64,
}

/// A validation result during training.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidationPoint {
    /// Step at which it was measured.
    pub step: usize,
    /// Hits@1 on the validation split.
    pub hits_at_1: f64,
    /// Hits@10 on the validation split.
    pub hits_at_10: f64,
}

/// What a training run reports.
pub trait Progress {
    /// Called after every step.
    fn step(&mut self, _info: &StepInfo) {}
    /// Called with a human-readable event (checkpoint written, validation result, ...).
    fn event(&mut self, message: &str) {
        tracing::info!("{message}");
    }
}

/// Progress that only logs events through `tracing`.
pub struct LogProgress;
impl Progress for LogProgress {}

/// Largest `index_ratio` accepted: indexing examples per retrieval example in an epoch.
pub const MAX_INDEX_RATIO: f64 = 1000.0;

/// The settings in which two configurations differ, as `path: checkpoint value, now value` (paths of their
/// JSON form, e.g. `epochs: 8 in the checkpoint, 10 now`).
pub fn config_differences(was: &TrainConfig, now: &TrainConfig) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                let null = serde_json::Value::Null;
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} in the checkpoint, {b} now")),
            _ => {}
        }
    }
    let (a, b) = (serde_json::to_value(was), serde_json::to_value(now));
    let mut out = Vec::new();
    match (a, b) {
        (Ok(a), Ok(b)) => walk("", &a, &b, &mut out),
        _ => out.push(format!("{was:?} in the checkpoint, {now:?} now")),
    }
    if out.is_empty() {
        out.push("settings that compare unequal but serialise alike".into());
    }
    out
}

/// State saved in every checkpoint beside the weights and optimizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Steps completed.
    pub step: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Mean loss of each epoch completed so far.
    pub losses: Vec<(usize, f32)>,
    /// Sum and number of the losses of the current (unfinished) epoch's steps so far, so that a resumed run
    /// records the same epoch mean as an uninterrupted one (absent in older checkpoints: zero).
    #[serde(default)]
    pub epoch_loss: (f64, usize),
    /// Validation results so far.
    pub validation: Vec<ValidationPoint>,
    /// Wall-clock seconds spent training (summed over resumes).
    pub seconds: f64,
    /// [`TrainingSet::digest`] of the examples the run trains on (absent in checkpoints written before it
    /// was recorded): a resume on other data is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples_digest: Option<String>,
}

impl TrainState {
    /// The final state of the finished run in `dir` (its `train_state.json`, written last).
    pub fn read_finished(dir: &Path) -> Result<TrainState> {
        read_json(&dir.join("train_state.json"))
    }
}

/// A finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The final state.
    pub state: TrainState,
    /// Examples per second over the last session.
    pub examples_per_sec: f64,
    /// Whether the run resumed from a checkpoint.
    pub resumed: bool,
    /// Whether training reached its last step (false when stopped by `stop_after`).
    pub finished: bool,
}

/// Learning rate at a step (0-based): linear warm-up to `lr`, then linear decay to 0 at `total`.
pub fn learning_rate(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let w = cfg.warmup_steps;
    if w > 0 && step < w {
        cfg.lr * (step + 1) as f64 / w as f64
    } else {
        let rest = total.saturating_sub(w).max(1);
        cfg.lr * (1.0 - (step.saturating_sub(w)) as f64 / rest as f64).max(0.0)
    }
}

const LATEST: &str = "latest";
const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.bpk";

fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The newest complete checkpoint of a run folder, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let latest = checkpoints_dir(out).join(LATEST);
    match std::fs::read_to_string(&latest) {
        Ok(name) => {
            let dir = checkpoints_dir(out).join(name.trim());
            if !dir.join(STATE).exists() {
                return Err(TrainError::Checkpoint {
                    path: dir,
                    message: format!("{} names it but it is incomplete", latest.display()),
                });
            }
            Ok(Some(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::Io {
            path: latest,
            source: e,
        }),
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| TrainError::Json {
        path: path.into(),
        message: e.to_string(),
    })?;
    genir_io::write_atomic(path, &text)?;
    Ok(())
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(TrainError::io(path))?;
    serde_json::from_slice(&text).map_err(|e| TrainError::Json {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Sum of squares of every gradient (as a device scalar), for global-norm clipping.
struct GradNorm<'g> {
    grads: &'g GradientsParams,
    sum: Option<Tensor<1>>,
}
impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.powi_scalar(2).sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// Scales every gradient by a factor.
struct ScaleGrads<'g> {
    grads: &'g mut GradientsParams,
    factor: f32,
}
impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Sums the gradients of data-parallel shards onto the first shard's device.
struct Reduce<'g> {
    shards: &'g mut [GradientsParams],
    out: GradientsParams,
    device: Device,
}
impl ModuleVisitor for Reduce<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let id: ParamId = param.id;
        let mut acc: Option<Tensor<D>> = None;
        for s in self.shards.iter_mut() {
            if let Some(g) = s.remove::<D>(id) {
                let g = g.to_device(&self.device);
                acc = Some(match acc.take() {
                    Some(a) => a + g,
                    None => g,
                });
            }
        }
        if let Some(a) = acc {
            self.out.register::<D>(id, a);
        }
    }
}

/// Trains GenIR models on a collection.
pub struct Trainer {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Devices: shard `i` of each step runs on `devices[i % len]` (autodiff is added by the trainer).
    pub devices: Vec<Device>,
    /// Return after this many steps of this session, without a final checkpoint or model (as if the run
    /// had been killed); a later resume continues from the last checkpoint.
    pub stop_after: Option<usize>,
}

/// Builds the tokenizer, docid scheme and initial model of a fresh run.
pub fn initial_model(
    config: &TrainConfig,
    collection: &Collection,
    device: &Device,
) -> Result<GenirModel> {
    let mut bundle = initial_parts(config, collection, device)?;
    if config.docid_rows_from_documents && bundle.scheme.is_atomic() {
        let texts: Vec<String> = collection.corpus.iter().map(|d| d.full_text()).collect();
        let skip: Vec<usize> = config
            .examples
            .exclude
            .iter()
            .filter_map(|d| bundle.scheme.index_of(d))
            .collect();
        let pretrained = matches!(config.init, Init::Pretrained(_));
        bundle.model = init_docid_rows(
            &bundle,
            &texts,
            &skip,
            config.examples.max_source_len,
            pretrained,
        )?;
    }
    Ok(bundle)
}

/// Sets every atomic docid's output row to the model's own decoder representation of its document, so that
/// training starts from retrieval by similarity instead of from a uniform guess.
///
/// With 2,000 randomly initialised docid rows a small model trained from scratch spends many epochs at the
/// uniform loss (ln N) before it tells documents apart. Here each document's first chunk is run through the
/// untrained model; its decoder state at the first position (final norm, output scaling) is centred on the
/// mean over documents (the shared component carries no identity), scaled to the norm of an embedding row
/// (`sqrt(d_model)` for T5's unit-variance initialisation) and written to the document's row. Rows of tied
/// models are also input embeddings, but atomic docid tokens are never decoder inputs. Documents in `skip`
/// (left out of training) keep their random rows, so nothing of their text enters the model.
///
/// With `orthogonal_to_mean` (pretrained models) the centred states are also projected off the mean state's
/// direction before scaling. A query's state carries that mean too, so without the projection the logit of
/// docid `j` holds `mean · row_j`, an offset of each document unrelated to the query; a pretrained decoder's
/// states share a large common component, and that offset decides the ranking (flan-t5-small on 150 wiki-genir
/// passages: each passage's own docid first for 4% of them at initialisation, logits spread over about 530; with
/// the projection 100%). From-scratch models keep the recipe their results were measured with.
pub fn init_docid_rows(
    bundle: &GenirModel,
    texts: &[String],
    skip: &[usize],
    max_len: usize,
    orthogonal_to_mean: bool,
) -> Result<T5Model> {
    let model = &bundle.model;
    let scheme = &bundle.scheme;
    let device = model.shared.val().device();
    let inference = model.valid();
    let d = model.config.d_model;
    let start = model.config.decoder_start() as i64;
    let pad = model.config.pad_token_id as u32;
    let mut reps: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        let ids = chunk
            .iter()
            .map(|t| {
                let mut ids = bundle.tok.encode(t)?;
                if ids.len() > max_len {
                    ids.truncate(max_len.saturating_sub(1));
                    ids.push(scheme.eos);
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let dev = device.clone().inner();
        let (input, mask) = genir_model::t5::pad_batch(&ids, pad, &dev)?;
        let enc = inference.encode(input, mask.clone(), &mut Hooks::none())?;
        let dec = Tensor::<2, Int>::from_data(
            burn::tensor::TensorData::new(vec![start; ids.len()], [ids.len(), 1]),
            &dev,
        );
        let h = inference.decode_hidden(&enc, mask, dec, None, &mut Hooks::none())?;
        reps.extend(crate::embed::tensor_rows(h.reshape([ids.len(), d]))?);
    }
    let kept: Vec<&Vec<f32>> = reps
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, r)| r)
        .collect();
    let n = kept.len().max(1) as f32;
    let mean: Vec<f32> = (0..d)
        .map(|i| kept.iter().map(|r| r[i]).sum::<f32>() / n)
        .collect();
    let mean_norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    let direction: Option<Vec<f32>> = (orthogonal_to_mean && mean_norm > 0.0)
        .then(|| mean.iter().map(|x| x / mean_norm).collect());
    let mut tensors = model.to_hf_tensors()?;
    let target = (d as f32).sqrt();
    let names: Vec<&str> = if model.lm_head.is_some() {
        vec!["lm_head.weight"]
    } else {
        vec!["shared.weight"]
    };
    for name in names {
        let Some(t) = tensors.get_mut(name) else {
            continue;
        };
        for (doc, r) in reps.iter().enumerate() {
            if skip.contains(&doc) {
                continue;
            }
            let mut c: Vec<f32> = r.iter().zip(&mean).map(|(x, m)| x - m).collect();
            if let Some(u) = &direction {
                let along: f32 = c.iter().zip(u).map(|(x, u)| x * u).sum();
                c.iter_mut().zip(u).for_each(|(x, u)| *x -= along * u);
            }
            let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            let row = scheme.target(doc)[0] as usize;
            for (k, x) in c.iter().enumerate() {
                t.values[row * d + k] = x / norm * target;
            }
        }
    }
    let mut w = genir_model::weights::WeightFile::from_tensors(
        "<docid rows from documents>",
        tensors.into_iter().collect(),
    );
    Ok(T5Model::from_weights(
        model.config.clone(),
        &mut w,
        &device,
    )?)
}

fn initial_parts(
    config: &TrainConfig,
    collection: &Collection,
    device: &Device,
) -> Result<GenirModel> {
    let docids: Vec<String> = collection.corpus.iter().map(|d| d.docid.clone()).collect();
    let texts: Vec<String> = collection.corpus.iter().map(|d| d.full_text()).collect();
    match &config.init {
        Init::Scratch(a) | Init::ScratchWithTokenizer { arch: a, .. } => {
            let (mut tok, source) = match &config.init {
                Init::ScratchWithTokenizer { tokenizer, .. } => {
                    (load_text_tokenizer(tokenizer)?, tokenizer.clone())
                }
                _ => (
                    vocab::train_wordpiece(&texts, a.text_vocab)?,
                    PathBuf::from("<trained tokenizer.json>"),
                ),
            };
            let offset = tok.get_vocab_size(true) as u32;
            let embeddings = semantic_embeddings(config, &texts, device)?;
            let scheme = DocidScheme::build(
                config.docids.clone(),
                docids,
                embeddings.as_deref(),
                offset,
                vocab::EOS,
                config.seed,
            )?;
            vocab::add_docid_tokens(&mut tok, &scheme)?;
            let t5 = T5Config::small(scheme.vocab_size(), a.d_model, a.d_ff, a.layers, a.heads);
            let model = T5Model::init(t5, config.seed, device)?;
            let tok = TextTokenizer::from_tokenizer(tok, source);
            GenirModel::new(model, tok, scheme)
        }
        Init::Pretrained(dir) => {
            let base = T5Model::from_pretrained(dir, device)?;
            let tok_path = dir.join("tokenizer.json");
            let tok = TextTokenizer::from_file(&tok_path, base.config.vocab_size)?;
            let mut inner = tok.inner().clone();
            let offset = inner.get_vocab_size(true) as u32;
            let embeddings = semantic_embeddings(config, &texts, device)?;
            let eos = base.config.eos_token_id as u32;
            let scheme = DocidScheme::build(
                config.docids.clone(),
                docids,
                embeddings.as_deref(),
                offset,
                eos,
                config.seed,
            )?;
            vocab::add_docid_tokens(&mut inner, &scheme)?;
            // Hugging Face T5 tables have unused rows past the tokenizer (32,128 vs 32,100): docid tokens
            // start right after the tokenizer, reuse those rows, then extend the table.
            let rows = scheme.vocab_size().max(base.config.vocab_size);
            let model = base.resize_vocab(rows, config.seed)?;
            let tok = TextTokenizer::from_tokenizer(inner, tok_path);
            GenirModel::new(model, tok, scheme)
        }
    }
}

fn semantic_embeddings(
    config: &TrainConfig,
    texts: &[String],
    device: &Device,
) -> Result<Option<Vec<Vec<f32>>>> {
    match config.docids {
        DocidKind::Semantic { .. } => {
            Ok(Some(config.embedder.embed(texts, &device.clone().inner())?))
        }
        _ => Ok(None),
    }
}

impl Trainer {
    /// A trainer on one device.
    pub fn new(config: TrainConfig, device: Device) -> Self {
        Self {
            config,
            devices: vec![device],
            stop_after: None,
        }
    }

    fn check(&self) -> Result<()> {
        let c = &self.config;
        if c.batch_size == 0 || c.epochs == 0 || c.checkpoint_every == 0 || c.shards == 0 {
            return Err(TrainError::Config(
                "batch_size, epochs, checkpoint_every and shards must be positive".into(),
            ));
        }
        if c.shards > c.batch_size {
            return Err(TrainError::Config(format!(
                "{} shards for batches of {}",
                c.shards, c.batch_size
            )));
        }
        if !(c.lr > 0.0 && c.lr.is_finite()) {
            return Err(TrainError::Config(format!(
                "learning rate {} must be positive",
                c.lr
            )));
        }
        if self.devices.is_empty() {
            return Err(TrainError::Config("no device".into()));
        }
        if let Init::Scratch(a) | Init::ScratchWithTokenizer { arch: a, .. } = &c.init {
            for (name, v) in [
                ("d_model", a.d_model),
                ("d_ff", a.d_ff),
                ("layers", a.layers),
                ("heads", a.heads),
            ] {
                if v == 0 {
                    return Err(TrainError::Config(format!("{name} must be positive")));
                }
            }
            if a.heads > a.d_model {
                return Err(TrainError::Config(format!(
                    "{} heads for d_model {}: each head needs at least one dimension",
                    a.heads, a.d_model
                )));
            }
        }
        if let Some(r) = c.examples.index_ratio {
            if !(r > 0.0 && r <= MAX_INDEX_RATIO) {
                return Err(TrainError::Config(format!(
                    "index ratio {r} must be positive and at most {MAX_INDEX_RATIO} (indexing examples per \
                     retrieval example in an epoch)"
                )));
            }
        }
        Ok(())
    }

    /// Trains on `collection` into the run folder `out`. With `resume`, continues from the newest
    /// checkpoint there (same configuration required); otherwise `out` must not hold a run yet.
    pub fn train(
        &self,
        collection: &Collection,
        out: &Path,
        resume: bool,
        progress: &mut dyn Progress,
    ) -> Result<TrainSummary> {
        self.check()?;
        let cfg = &self.config;
        let main = self.devices[0].clone().autodiff();
        let ckpt = latest_checkpoint(out)?;
        let (mut bundle, mut state, optim_path) = match (&ckpt, resume) {
            (Some(dir), true) => {
                let state: TrainState = read_json(&dir.join(STATE))?;
                if state.config != *cfg {
                    return Err(TrainError::Checkpoint {
                        path: dir.clone(),
                        message: format!(
                            "it was written by a run with another configuration ({}); resume with the run's \
                             settings (its train_config.json), or train into a new folder",
                            config_differences(&state.config, cfg).join("; ")
                        ),
                    });
                }
                let scheme = DocidScheme::load(&out.join(crate::bundle::DOCIDS_FILE))?;
                let model = T5Model::from_pretrained(dir, &main)?;
                let tok =
                    TextTokenizer::from_file(&out.join("tokenizer.json"), model.config.vocab_size)?;
                progress.event(&format!("resuming from {} (step {})", dir.display(), state.step));
                (
                    GenirModel::new(model, tok, scheme)?,
                    state,
                    Some(dir.join(OPTIMIZER)),
                )
            }
            (Some(dir), false) => {
                return Err(TrainError::Checkpoint {
                    path: dir.clone(),
                    message: "the output folder already holds a run: pass --resume to continue it, or use another folder".into(),
                })
            }
            (None, _) => {
                // a model folder without checkpoints (an import, or a finished run whose checkpoints were
                // deleted) is not overwritten
                let weights = out.join("model.safetensors");
                if weights.exists() {
                    return Err(TrainError::Checkpoint {
                        path: out.to_path_buf(),
                        message: format!(
                            "{} exists but no checkpoint does: the folder holds a model, not a run to resume; \
                             train into another folder",
                            weights.display()
                        ),
                    });
                }
                std::fs::create_dir_all(out).map_err(TrainError::io(out))?;
                let b = initial_model(cfg, collection, &main)?;
                vocab::save_tokenizer(b.tok.inner(), &out.join("tokenizer.json"))?;
                b.scheme.save(&out.join(crate::bundle::DOCIDS_FILE))?;
                write_json(&out.join("train_config.json"), cfg)?;
                let state = TrainState {
                    config: cfg.clone(),
                    step: 0,
                    total_steps: 0,
                    losses: Vec::new(),
                    validation: Vec::new(),
                    seconds: 0.0,
                    examples_digest: None,
                    epoch_loss: (0.0, 0),
                };
                (b, state, None)
            }
        };
        let resumed = optim_path.is_some();
        let train_split = collection.split("train");
        let set = TrainingSet::build(
            &collection.corpus,
            train_split,
            &bundle.scheme,
            &bundle.tok,
            &cfg.examples,
        )?;
        let digest = set.digest();
        if let Some(dir) = ckpt.as_ref().filter(|_| resumed) {
            match &state.examples_digest {
                Some(was) if *was != digest => {
                    return Err(TrainError::Checkpoint {
                        path: dir.clone(),
                        message: format!(
                            "the run started on other training examples (digest {was}, now {digest}): another \
                             collection, or a document, query or judgment changed since; resume on the run's \
                             data, or train into a new folder"
                        ),
                    });
                }
                Some(_) => {}
                None => progress.event(
                    "the checkpoint predates training-data digests: the data it resumes on is not checked",
                ),
            }
        }
        state.examples_digest = Some(digest);
        let epoch_len = set.epoch_len(cfg.examples.index_ratio);
        let steps_per_epoch = epoch_len.div_ceil(cfg.batch_size);
        let total = steps_per_epoch * cfg.epochs;
        state.total_steps = total;
        progress.event(&format!(
            "{} indexing + {} retrieval examples, {epoch_len} per epoch, {steps_per_epoch} steps per epoch, {total} steps",
            set.indexing.len(),
            set.retrieval.len()
        ));
        let mut optim = self.optimizer();
        if let Some(p) = &optim_path {
            // burn's loader asks for its default device, which panics when `BURN_DEVICE` names a backend this
            // build lacks: an error here, not a crash (genir's states stay on the host, see `optim`)
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| optim.load(p)));
            optim =
                match loaded {
                    Ok(r) => r.map_err(|e| TrainError::Checkpoint {
                        path: p.clone(),
                        message: format!("cannot read optimizer state: {e:?}"),
                    })?,
                    Err(_) => return Err(TrainError::Checkpoint {
                        path: p.clone(),
                        message:
                            "burn could not pick its default device to read the optimizer state \
                                  into (is BURN_DEVICE set to a backend this build lacks?)"
                                .into(),
                    }),
                };
        }
        let start = Instant::now();
        let start_step = state.step;
        let base_seconds = state.seconds;
        let mut model = bundle.model;
        let mut epoch_cache: Option<(usize, Vec<&Example>)> = None;
        while state.step < total {
            if self
                .stop_after
                .is_some_and(|n| state.step - start_step >= n)
            {
                let secs = start.elapsed().as_secs_f64();
                return Ok(TrainSummary {
                    examples_per_sec: ((state.step - start_step) * cfg.batch_size) as f64
                        / secs.max(1e-9),
                    state,
                    resumed,
                    finished: false,
                });
            }
            let step = state.step;
            let epoch = step / steps_per_epoch;
            if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epoch_cache = Some((epoch, set.epoch(cfg.seed, epoch, cfg.examples.index_ratio)));
            }
            let examples = &epoch_cache
                .as_ref()
                .map(|(_, v)| v)
                .ok_or_else(|| TrainError::Config("no epoch".into()))?;
            let b = step % steps_per_epoch;
            let batch: Vec<&Example> = examples
                [b * cfg.batch_size..((b + 1) * cfg.batch_size).min(examples.len())]
                .to_vec();
            let lr = learning_rate(cfg, step, total);
            let (next, loss, grad_norm) =
                self.step(model, &mut optim, &batch, &bundle.scheme, lr)?;
            model = next;
            if !loss.is_finite() {
                return Err(TrainError::Config(format!(
                    "the loss diverged (NaN or infinite) at step {}: lower the learning rate",
                    step + 1
                )));
            }
            state.step += 1;
            state.epoch_loss.0 += f64::from(loss);
            state.epoch_loss.1 += 1;
            let secs = start.elapsed().as_secs_f64();
            progress.step(&StepInfo {
                step: state.step,
                total_steps: total,
                epoch,
                loss,
                lr,
                grad_norm,
                examples_per_sec: ((state.step - start_step) * cfg.batch_size) as f64
                    / secs.max(1e-9),
            });
            let epoch_done = state.step % steps_per_epoch == 0 || state.step == total;
            if epoch_done {
                let (sum, n) = std::mem::take(&mut state.epoch_loss);
                state.losses.push((epoch, (sum / n.max(1) as f64) as f32));
            }
            let last = state.step == total;
            if cfg.eval_every > 0 && (state.step % cfg.eval_every == 0) || last {
                if let Some(v) =
                    self.validate(&model, &bundle.tok, &bundle.scheme, collection, state.step)?
                {
                    progress.event(&format!(
                        "step {}: validation Hits@1 {:.4} Hits@10 {:.4}",
                        v.step, v.hits_at_1, v.hits_at_10
                    ));
                    state.validation.push(v);
                }
            }
            if state.step % cfg.checkpoint_every == 0 || last {
                state.seconds = base_seconds + start.elapsed().as_secs_f64();
                let dir = self.checkpoint(out, &model, &optim, &state)?;
                progress.event(&format!("checkpoint {}", dir.display()));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let examples_per_sec = ((state.step - start_step) * cfg.batch_size) as f64 / secs.max(1e-9);
        bundle.model = model.valid();
        bundle.max_source_len = cfg.examples.max_source_len;
        bundle.save(out)?;
        write_json(&out.join("train_state.json"), &state)?;
        Ok(TrainSummary {
            state,
            examples_per_sec,
            resumed,
            finished: true,
        })
    }

    /// The AdamW optimizer of this configuration.
    pub fn optimizer(&self) -> ModuleOptimizer {
        crate::optim::FusedAdamW::new(self.config.weight_decay, 1e-8).init()
    }

    /// One optimisation step on a batch: forward, backward (over `shards` data-parallel parts), global
    /// gradient-norm clipping, AdamW update. Returns the updated model, the loss and the gradient norm
    /// before clipping. `model` must live on an autodiff device.
    pub fn step(
        &self,
        model: T5Model,
        optim: &mut ModuleOptimizer,
        batch: &[&Example],
        scheme: &DocidScheme,
        lr: f64,
    ) -> Result<(T5Model, f32, f32)> {
        let pad = model.config.pad_token_id as u32;
        let start = model.config.decoder_start() as u32;
        let (loss, mut grads) = self.gradients(&model, batch, scheme, start, pad)?;
        let mut norm = GradNorm {
            grads: &grads,
            sum: None,
        };
        model.visit(&mut norm);
        let grad_norm = norm.sum.map_or(0.0, |s| s.into_scalar::<f32>().sqrt());
        if let Some(max) = self.config.clip_norm {
            if grad_norm > max && grad_norm.is_finite() {
                model.visit(&mut ScaleGrads {
                    grads: &mut grads,
                    factor: max / grad_norm,
                });
            }
        }
        Ok((optim.step(lr, model, grads), loss, grad_norm))
    }

    /// Loss and gradients of one batch, split into `shards` data-parallel parts on the trainer's devices
    /// (each part's gradients are computed by burn's autodiff on its device, in its own thread, then summed
    /// on the first device).
    fn gradients(
        &self,
        model: &T5Model,
        batch: &[&Example],
        scheme: &DocidScheme,
        start: u32,
        pad: u32,
    ) -> Result<(f32, GradientsParams)> {
        let shards = self.config.shards;
        let n_tokens: usize = batch.iter().map(|e| scheme.target(e.doc).len()).sum();
        if shards == 1 {
            let device = self.devices[0].clone().autodiff();
            let b = Batch::new(batch, scheme, start, pad, &device)?;
            let logits = model.forward(&b.input, &mut Hooks::none())?;
            let loss = cross_entropy(logits, &b, n_tokens);
            let grads = GradientsParams::from_grads(loss.backward(), model);
            let value = loss.into_scalar::<f32>();
            return Ok((value, grads));
        }
        let per = batch.len().div_ceil(shards);
        let parts: Vec<&[&Example]> = batch.chunks(per).collect();
        let results: Vec<Result<(f32, GradientsParams)>> = std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .iter()
                .enumerate()
                .map(|(i, part)| {
                    let device = self.devices[i % self.devices.len()].clone().autodiff();
                    let replica = model.clone().fork(&device);
                    s.spawn(move || -> Result<(f32, GradientsParams)> {
                        let b = Batch::new(part, scheme, start, pad, &device)?;
                        let logits = replica.forward(&b.input, &mut Hooks::none())?;
                        let loss = cross_entropy(logits, &b, n_tokens);
                        let grads = GradientsParams::from_grads(loss.backward(), &replica);
                        Ok((loss.into_scalar::<f32>(), grads))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(TrainError::Tensor("a shard's thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut loss = 0f32;
        let mut grads = Vec::new();
        for r in results {
            let (l, g) = r?;
            loss += l;
            grads.push(g);
        }
        let mut reduce = Reduce {
            shards: &mut grads,
            out: GradientsParams::new(),
            device: self.devices[0].clone().autodiff(),
        };
        model.visit(&mut reduce);
        Ok((loss, reduce.out))
    }

    fn validate(
        &self,
        model: &T5Model,
        tok: &TextTokenizer,
        scheme: &DocidScheme,
        collection: &Collection,
        step: usize,
    ) -> Result<Option<ValidationPoint>> {
        let Some(split) = collection.split(&self.config.validation_split) else {
            return Ok(None);
        };
        let inference = model.valid();
        let mut searcher = crate::search::Searcher::new(&inference, tok, scheme)?;
        searcher.max_source_len = self.config.examples.max_source_len;
        let run = searcher.run(&split.queries, 10, 64, "validation")?;
        let qids: Vec<String> = split.queries.iter().map(|q| q.qid.clone()).collect();
        let ev = evaluate(&run, &split.qrels, Some(&qids));
        Ok(Some(ValidationPoint {
            step,
            hits_at_1: ev.hits_at_1,
            hits_at_10: ev.hits_at_10,
        }))
    }

    fn checkpoint(
        &self,
        out: &Path,
        model: &T5Model,
        optim: &ModuleOptimizer,
        state: &TrainState,
    ) -> Result<PathBuf> {
        let dir = checkpoints_dir(out);
        std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
        let name = format!("step-{:08}", state.step);
        let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
        model.save_pretrained(&tmp)?;
        optim
            .save(tmp.join(OPTIMIZER))
            .map_err(|e| TrainError::Checkpoint {
                path: tmp.clone(),
                message: format!("cannot write optimizer state: {e:?}"),
            })?;
        write_json(&tmp.join(STATE), state)?;
        let final_dir = dir.join(&name);
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(TrainError::io(&final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(TrainError::io(&final_dir))?;
        genir_io::write_atomic(&dir.join(LATEST), name.as_bytes())?;
        // Keep the newest `keep_checkpoints` complete checkpoints.
        let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(TrainError::io(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.contains(".tmp-"))
            })
            .collect();
        all.sort();
        let keep = self.config.keep_checkpoints.max(1);
        if all.len() > keep {
            for old in &all[..all.len() - keep] {
                std::fs::remove_dir_all(old).map_err(TrainError::io(old))?;
            }
        }
        Ok(final_dir)
    }
}
