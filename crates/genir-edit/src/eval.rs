//! Editing measured against retraining.
//!
//! [`evaluate_methods`] splits `n_new` documents off a collection (documents that are the only relevant
//! document of at least one query), trains a base model on the rest (atomic docids; the held-out documents'
//! queries are never trained on), then adds the held-out documents one at a time by each method:
//!
//! - `incdsi`, `rank_one`: [`Editor::add`] with anchors calibrated on the base collection;
//! - `continued_training`: the vocabulary grows by one row, then AdamW steps on the new document's inputs
//!   only (its text chunks and pseudo queries), stopping once they all retrieve it;
//! - `full_retraining`: a model trained from scratch on the whole corpus (same configuration).
//!
//! and measures:
//! - **success** Hits@1 / Hits@10 on the held-out queries of the added documents (queries whose only relevant
//!   document is one of them; never shown to any method);
//! - **retention**: Hits@1 on every other query (relevant documents all in the base set), before (base model)
//!   and after;
//! - **locality**: the share of those queries whose top docid is unchanged;
//! - **time** per added document (for full retraining: the training time, once for all documents);
//! - **decay**: retention after the first 1, 10, 100, ... sequential additions (as far as `n_new` goes).
//!
//! Beside the methods, [`EvalReport::references`] says what can be expected of the success queries at all: the
//! base model's Hits@1/@10 on the held-out (not `train` split) queries of its *own* documents (how far the model
//! generalises to unseen queries of documents it was trained on: the yardstick for the success of an edit
//! on documents it never saw, though not a bound), and BM25 ([`genir_data::bm25`]) on the added documents'
//! success queries (full corpus) and on those held-out queries (base corpus), and, with
//! [`EvalConfig::dense`], a bi-encoder's dense retrieval on the same two query sets ([`genir_train::dense`]).
//! The held-out queries are the collection's own (on the shipped collections mostly inverse-cloze sentences,
//! a few title queries).
//!
//! Models are trained in `work_dir/base` and `work_dir/full`; a finished one found there is reused when it was
//! trained with the same configuration (an error otherwise). Training times are the training loop's, as
//! recorded in `train_state.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use genir_data::bm25::Bm25;
use genir_data::{Collection, Corpus, Qrels, Queries, QuerySet};
use genir_data::{Column, Table};
use genir_model::t5::T5Model;
use genir_model::weights::WeightFile;
use genir_train::bundle::GenirModel;
use genir_train::dense::DenseIndex;
use genir_train::examples::{Example, ExampleKind};
use genir_train::metrics::evaluate;
use genir_train::train::{LogProgress, TrainConfig, TrainState, Trainer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::editor::{AddMethod, EditConfig, Editor, NewDocument};
use crate::error::{EditError, Result};
use crate::reps;

/// A way of adding documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// [`AddMethod::IncDsi`].
    IncDsi,
    /// [`AddMethod::RankOne`].
    RankOne,
    /// AdamW steps on the new document only.
    ContinuedTraining,
    /// Training from scratch on everything.
    FullRetraining,
}

impl Method {
    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::IncDsi => "incdsi",
            Method::RankOne => "rank_one",
            Method::ContinuedTraining => "continued_training",
            Method::FullRetraining => "full_retraining",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Documents split off and added back.
    pub n_new: usize,
    /// Seed of the split.
    pub seed: u64,
    /// Training of the base model and of full retraining.
    pub train: TrainConfig,
    /// Methods to compare.
    pub methods: Vec<Method>,
    /// Edit settings.
    pub edit: EditConfig,
    /// Anchors calibrated on the base collection.
    pub max_anchors: usize,
    /// Sequential-edit counts at which retention is measured.
    pub decay_points: Vec<usize>,
    /// Continued training: most AdamW steps per document (it stops earlier once the document's inputs all
    /// retrieve it).
    pub finetune_steps: usize,
    /// Continued training: learning rate; `None`: the base model's (`train.lr`).
    pub finetune_lr: Option<f64>,
    /// Folder for the base and retrained models.
    pub work_dir: PathBuf,
    /// A bi-encoder folder (e.g. all-MiniLM-L6-v2) whose dense retrieval ([`genir_train::dense`]) is added
    /// to the references beside BM25; `None` for none.
    pub dense: Option<PathBuf>,
}

impl EvalConfig {
    /// Defaults for a collection, working in `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>, train: TrainConfig) -> Self {
        Self {
            n_new: 20,
            seed: 7,
            train,
            methods: vec![
                Method::IncDsi,
                Method::RankOne,
                Method::ContinuedTraining,
                Method::FullRetraining,
            ],
            edit: EditConfig::default(),
            max_anchors: 2000,
            decay_points: vec![1, 10, 25, 50, 100, 1000],
            finetune_steps: 200,
            finetune_lr: None,
            work_dir: work_dir.into(),
            dense: None,
        }
    }
}

/// How continued training went ([`MethodResult::finetuned`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finetuned {
    /// Documents learned (each of their inputs retrieves them) before the step limit.
    pub learned: usize,
    /// Mean AdamW steps per document.
    pub mean_steps: f64,
    /// The step limit.
    pub max_steps: usize,
    /// The learning rate.
    pub lr: f64,
}

/// One method's measures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodResult {
    /// The method.
    pub method: String,
    /// Documents added.
    pub docs: usize,
    /// Held-out queries of the added documents.
    pub success_queries: usize,
    /// Hits@1 on them.
    pub success_hits_at_1: f64,
    /// Hits@10 on them.
    pub success_hits_at_10: f64,
    /// Share of the added documents' own edit inputs (chunks, pseudo queries) that retrieve them first.
    pub edit_inputs_hits_at_1: f64,
    /// Queries of the other documents.
    pub retention_queries: usize,
    /// Their Hits@1 with the base model.
    pub retention_before: f64,
    /// Their Hits@1 after the edits.
    pub retention_after: f64,
    /// Share of them whose top docid did not change.
    pub locality: f64,
    /// Milliseconds per added document.
    pub ms_per_doc: f64,
    /// Continued training: how it went ([`Finetuned`]); `None` for the other methods.
    #[serde(default)]
    pub finetuned: Option<Finetuned>,
    /// Total seconds.
    pub seconds: f64,
    /// `(edits done, retention Hits@1)` after sequential edits.
    pub decay: Vec<(usize, f64)>,
}

/// A reference measure beside the methods (what a system that is not an edit gets on a query set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// What was measured, e.g. `bm25: success queries (full corpus)`.
    pub name: String,
    /// Queries.
    pub queries: usize,
    /// Hits@1 on them.
    pub hits_at_1: f64,
    /// Hits@10 on them.
    pub hits_at_10: f64,
}

/// The comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// Collection name.
    pub collection: String,
    /// Documents in the base model.
    pub base_docs: usize,
    /// Seconds to train the base model.
    pub base_train_seconds: f64,
    /// One row per method.
    pub rows: Vec<MethodResult>,
    /// Reference measures (see the module documentation); empty in reports written before they existed.
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// The split: base collection, new documents, held-out success queries, retention queries.
struct Split {
    base: Collection,
    full: Collection,
    new_docs: Vec<NewDocument>,
    success: QuerySet,
    retention: QuerySet,
    /// The retention queries that are not in the `train` split (never trained on).
    heldout: QuerySet,
}

fn split(c: &Collection, n_new: usize, seed: u64) -> Result<Split> {
    let mut all_queries: Vec<genir_data::Query> = Vec::new();
    let mut all_qrels: Vec<genir_data::Qrel> = Vec::new();
    for s in c.splits.values() {
        all_queries.extend(s.queries.iter().cloned());
        all_qrels.extend(s.qrels.iter().cloned());
    }
    let qrels = Qrels::new(all_qrels);
    // documents that are the only relevant document of some query
    let mut sole: BTreeSet<String> = BTreeSet::new();
    for q in &all_queries {
        let rel: Vec<&str> = qrels.relevant(&q.qid).collect();
        if rel.len() == 1 {
            sole.insert(rel[0].to_string());
        }
    }
    let mut cand: Vec<String> = c
        .corpus
        .iter()
        .map(|d| d.docid.clone())
        .filter(|d| sole.contains(d))
        .collect();
    if cand.len() < n_new || n_new == 0 || n_new >= c.corpus.len() {
        return Err(EditError::Invalid(format!(
            "cannot split off {n_new} documents: {} have a query of their own",
            cand.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    cand.shuffle(&mut rng);
    let new: BTreeSet<String> = cand[..n_new].iter().cloned().collect();
    let new_docs: Vec<NewDocument> = c
        .corpus
        .iter()
        .filter(|d| new.contains(&d.docid))
        .map(NewDocument::from_document)
        .collect();
    let mut base_splits = BTreeMap::new();
    for (name, s) in &c.splits {
        let qr = s.qrels.filter(|r| !new.contains(&r.docid));
        let keep: BTreeSet<String> = qr.iter().map(|r| r.qid.clone()).collect();
        base_splits.insert(
            name.clone(),
            QuerySet {
                queries: s.queries.filter(|q| keep.contains(&q.qid)),
                qrels: qr,
            },
        );
    }
    let base = Collection {
        name: format!("{}-base", c.name),
        corpus: Corpus::new(
            c.corpus
                .iter()
                .filter(|d| !new.contains(&d.docid))
                .cloned()
                .collect(),
        ),
        splits: base_splits.clone(),
    };
    let full = Collection {
        name: format!("{}-full", c.name),
        corpus: c.corpus.clone(),
        splits: base_splits,
    };
    // success: queries whose only relevant document is a new one
    let sq: Vec<genir_data::Query> = all_queries
        .iter()
        .filter(|q| {
            let rel: Vec<&str> = qrels.relevant(&q.qid).collect();
            rel.len() == 1 && new.contains(rel[0])
        })
        .cloned()
        .collect();
    let sids: BTreeSet<&str> = sq.iter().map(|q| q.qid.as_str()).collect();
    let success = QuerySet {
        qrels: qrels.filter(|r| sids.contains(r.qid.as_str())),
        queries: Queries::new(sq.clone()),
    };
    // retention: queries whose relevant documents are all base documents
    let rq: Vec<genir_data::Query> = all_queries
        .iter()
        .filter(|q| {
            let rel: Vec<&str> = qrels.relevant(&q.qid).collect();
            !rel.is_empty() && rel.iter().all(|d| !new.contains(*d))
        })
        .cloned()
        .collect();
    let rids: BTreeSet<&str> = rq.iter().map(|q| q.qid.as_str()).collect();
    let retention = QuerySet {
        qrels: qrels.filter(|r| rids.contains(r.qid.as_str())),
        queries: Queries::new(rq.clone()),
    };
    let trained: BTreeSet<&str> = c
        .splits
        .get("train")
        .map(|s| s.queries.iter().map(|q| q.qid.as_str()).collect())
        .unwrap_or_default();
    let hq: Vec<genir_data::Query> = rq
        .into_iter()
        .filter(|q| !trained.contains(q.qid.as_str()))
        .collect();
    let hids: BTreeSet<&str> = hq.iter().map(|q| q.qid.as_str()).collect();
    let heldout = QuerySet {
        qrels: qrels.filter(|r| hids.contains(r.qid.as_str())),
        queries: Queries::new(hq.clone()),
    };
    Ok(Split {
        base,
        full,
        new_docs,
        success,
        retention,
        heldout,
    })
}

/// Whether `dir` holds a finished training run (`train_state.json` is written last; `docids.json` is written
/// when a run starts, so a killed run has it too). An unfinished run is resumed from its last checkpoint.
fn finished(dir: &std::path::Path) -> bool {
    dir.join("train_state.json").exists()
}

/// The training-loop seconds the finished run in `dir` recorded (also when an earlier evaluation trained it),
/// after checking that it was trained with `train` on `data` (its training examples' digest, when the run
/// recorded one): a model of another configuration, or trained on another split of the documents (another
/// seed or `n_new`), is an error, never silently reused.
fn trained_seconds(dir: &Path, train: &TrainConfig, data: Option<&Collection>) -> Result<f64> {
    let state = TrainState::read_finished(dir)?;
    let reuse = "remove it or give another work directory";
    if state.config != *train {
        return Err(EditError::Invalid(format!(
            "{} holds a finished model trained with another configuration than this evaluation's: {reuse}",
            dir.display()
        )));
    }
    if let (Some(was), Some(c)) = (&state.examples_digest, data) {
        // the examples need the tokenizer and the docids, not the weights (loaded again by the caller)
        let scheme =
            genir_train::docid::DocidScheme::load(&dir.join(genir_train::bundle::DOCIDS_FILE))?;
        // (the vocabulary check is the model load's)
        let tok = genir_model::tokenizer::TextTokenizer::from_file(
            &dir.join("tokenizer.json"),
            usize::MAX,
        )?;
        let now = genir_train::examples::TrainingSet::build(
            &c.corpus,
            c.split("train"),
            &scheme,
            &tok,
            &train.examples,
        )
        .map(|set| set.digest())
        .ok();
        if now.as_ref() != Some(was) {
            return Err(EditError::Invalid(format!(
                "{} holds a finished model trained on other training inputs than this evaluation's \
                 (another split: seed, number of added documents or collection; or inputs tokenized \
                 otherwise, e.g. cut at a pretrained tokenizer.json's saved truncation before 2026-12-06): \
                 {reuse}",
                dir.display()
            )));
        }
    }
    Ok(state.seconds)
}

/// Hits@1, Hits@10 and each query's top docid.
fn measure(model: &GenirModel, set: &QuerySet, max_len: usize) -> Result<(f64, f64, Vec<String>)> {
    if set.queries.is_empty() {
        return Ok((0.0, 0.0, Vec::new()));
    }
    let mut s = model.searcher()?;
    s.max_source_len = max_len;
    let run = s.run(&set.queries, 10, 64, "edit")?;
    let ev = evaluate(&run, &set.qrels, None);
    let mut top: BTreeMap<&str, (f64, &str)> = BTreeMap::new();
    for e in &run.entries {
        if e.rank == 1 {
            top.insert(e.qid.as_str(), (e.score, e.docid.as_str()));
        }
    }
    let tops = set
        .queries
        .iter()
        .map(|q| {
            top.get(q.qid.as_str())
                .map(|t| t.1.to_string())
                .unwrap_or_default()
        })
        .collect();
    Ok((ev.hits_at_1, ev.hits_at_10, tops))
}

fn locality(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() {
        return 1.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// A document's edit inputs as the editor makes them (its text chunks, then its sentences as pseudo
/// queries, then its example queries), as token ids cut to `max_len`.
fn edit_sources(
    model: &GenirModel,
    doc: &NewDocument,
    cfg: &EditConfig,
    max_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let full = if doc.title.is_empty() {
        doc.text.clone()
    } else {
        format!("{} {}", doc.title, doc.text)
    };
    let eos = model.scheme.eos;
    let mut out = reps::text_chunks(&model.tok, &full, max_len, eos, cfg.max_chunks)?;
    let mut texts = Vec::new();
    if cfg.pseudo_queries {
        texts.extend(reps::sentences(&doc.text, cfg.min_sentence_words));
    }
    texts.extend(doc.queries.iter().cloned());
    out.extend(reps::encode_texts(&model.tok, &texts, max_len, eos)?);
    Ok(out)
}

/// Share of the documents' edit inputs ([`edit_sources`]: the token ids the edits were given) that
/// retrieve them first.
fn input_hits(
    model: &GenirModel,
    docs: &[NewDocument],
    cfg: &EditConfig,
    max_len: usize,
) -> Result<f64> {
    let mut sources = Vec::new();
    let mut want = Vec::new();
    for d in docs {
        let idx = model
            .scheme
            .index_of(&d.docid)
            .ok_or_else(|| EditError::UnknownDocid(d.docid.clone()))?;
        for src in edit_sources(model, d, cfg, max_len)? {
            sources.push(src);
            want.push(idx);
        }
    }
    if sources.is_empty() {
        return Ok(0.0);
    }
    let mut s = model.searcher()?;
    s.max_source_len = max_len;
    let mut ok = 0;
    for (chunk, w) in sources.chunks(64).zip(want.chunks(64)) {
        let hits = s.search_ids(chunk, 1)?;
        ok += hits
            .iter()
            .zip(w)
            .filter(|(h, w)| h.first().is_some_and(|h| h.doc == **w))
            .count();
    }
    Ok(ok as f64 / sources.len() as f64)
}

/// Runs the comparison (see the module documentation).
pub fn evaluate_methods(c: &Collection, cfg: &EvalConfig, device: &Device) -> Result<EvalReport> {
    let sp = split(c, cfg.n_new, cfg.seed)?;
    std::fs::create_dir_all(&cfg.work_dir).map_err(EditError::io(&cfg.work_dir))?;
    let base_dir = cfg.work_dir.join("base");
    if !finished(&base_dir) {
        Trainer::new(cfg.train.clone(), device.clone()).train(
            &sp.base,
            &base_dir,
            genir_train::train::latest_checkpoint(&base_dir)?.is_some(),
            &mut LogProgress,
        )?;
    }
    let base_train_seconds = trained_seconds(&base_dir, &cfg.train, Some(&sp.base))?;
    let base = GenirModel::load(&base_dir, device)?;
    let max_len = cfg.train.examples.max_source_len;
    let (ret_before, _, base_tops) = measure(&base, &sp.retention, max_len)?;
    tracing::info!(retention = ret_before, "base model");
    let references = references(&sp, &base, max_len, cfg.dense.as_deref(), device)?;
    let mut rows = Vec::new();
    let decay_points: Vec<usize> = cfg
        .decay_points
        .iter()
        .copied()
        .filter(|&p| p <= sp.new_docs.len())
        .collect();
    for &m in &cfg.methods {
        let t = Instant::now();
        let mut decay = Vec::new();
        let mut finetuned = None;
        let (model, edit_seconds) = match m {
            Method::IncDsi | Method::RankOne => {
                let method = if m == Method::IncDsi {
                    AddMethod::IncDsi
                } else {
                    AddMethod::RankOne
                };
                let mut ed = Editor::new(GenirModel::load(&base_dir, device)?, cfg.edit.clone())?;
                ed.config.max_source_len = Some(max_len);
                ed.calibrate_from_collection(&sp.base, cfg.max_anchors)?;
                let mut secs = 0.0;
                for (i, d) in sp.new_docs.iter().enumerate() {
                    let r = ed.add(std::slice::from_ref(d), method)?;
                    secs += r.seconds;
                    if decay_points.contains(&(i + 1)) {
                        let (h1, _, _) = measure(&ed.model, &sp.retention, max_len)?;
                        decay.push((i + 1, h1));
                    }
                }
                (ed.model, secs)
            }
            Method::ContinuedTraining => {
                let mut model = GenirModel::load(&base_dir, device)?;
                let mut secs = 0.0;
                let mut ft = Finetuned {
                    learned: 0,
                    mean_steps: 0.0,
                    max_steps: cfg.finetune_steps,
                    lr: cfg.finetune_lr.unwrap_or(cfg.train.lr),
                };
                for (i, d) in sp.new_docs.iter().enumerate() {
                    let t = Instant::now();
                    let (m, steps, learned) = continued_training(model, d, cfg, device)?;
                    model = m;
                    secs += t.elapsed().as_secs_f64();
                    ft.learned += usize::from(learned);
                    ft.mean_steps += steps as f64 / sp.new_docs.len() as f64;
                    if decay_points.contains(&(i + 1)) {
                        let (h1, _, _) = measure(&model, &sp.retention, max_len)?;
                        decay.push((i + 1, h1));
                    }
                }
                finetuned = Some(ft);
                (model, secs)
            }
            Method::FullRetraining => {
                let dir = cfg.work_dir.join("full");
                if !finished(&dir) {
                    Trainer::new(cfg.train.clone(), device.clone()).train(
                        &sp.full,
                        &dir,
                        genir_train::train::latest_checkpoint(&dir)?.is_some(),
                        &mut LogProgress,
                    )?;
                }
                let secs = trained_seconds(&dir, &cfg.train, Some(&sp.full))?;
                (GenirModel::load(&dir, device)?, secs)
            }
        };
        let (s1, s10, _) = measure(&model, &sp.success, max_len)?;
        let (r1, _, tops) = measure(&model, &sp.retention, max_len)?;
        let inputs = input_hits(&model, &sp.new_docs, &cfg.edit, max_len)?;
        let row = MethodResult {
            method: m.name().into(),
            docs: sp.new_docs.len(),
            success_queries: sp.success.queries.len(),
            success_hits_at_1: s1,
            success_hits_at_10: s10,
            edit_inputs_hits_at_1: inputs,
            retention_queries: sp.retention.queries.len(),
            retention_before: ret_before,
            retention_after: r1,
            locality: locality(&base_tops, &tops),
            ms_per_doc: edit_seconds * 1000.0 / sp.new_docs.len().max(1) as f64,
            finetuned,
            seconds: t.elapsed().as_secs_f64(),
            decay,
        };
        tracing::info!(?row, "method done");
        rows.push(row);
    }
    Ok(EvalReport {
        collection: c.name.clone(),
        base_docs: sp.base.corpus.len(),
        base_train_seconds,
        rows,
        references,
    })
}

/// The reference measures of [`EvalReport::references`].
fn references(
    sp: &Split,
    base: &GenirModel,
    max_len: usize,
    dense: Option<&Path>,
    device: &Device,
) -> Result<Vec<Reference>> {
    let row = |name: &str, set: &QuerySet, h1: f64, h10: f64| Reference {
        name: name.into(),
        queries: set.queries.len(),
        hits_at_1: h1,
        hits_at_10: h10,
    };
    let bm25 = |corpus: &Corpus, set: &QuerySet| {
        let ev = evaluate(
            &Bm25::new(corpus).run(&set.queries, 10, "bm25"),
            &set.qrels,
            None,
        );
        (ev.hits_at_1, ev.hits_at_10)
    };
    let (m1, m10, _) = measure(base, &sp.heldout, max_len)?;
    let (b1, b10) = bm25(&sp.base.corpus, &sp.heldout);
    let (s1, s10) = bm25(&sp.full.corpus, &sp.success);
    let mut rows = vec![
        row(
            "base model: held-out queries of its own documents",
            &sp.heldout,
            m1,
            m10,
        ),
        row(
            "bm25: the same held-out queries (base corpus)",
            &sp.heldout,
            b1,
            b10,
        ),
        row(
            "bm25: success queries of the added documents (full corpus)",
            &sp.success,
            s1,
            s10,
        ),
    ];
    if let Some(dir) = dense {
        rows.extend(dense_rows(sp, dir, device)?);
    }
    Ok(rows)
}

/// The two dense reference rows of [`EvalConfig::dense`]: the bi-encoder in `dir` on the base model's
/// held-out queries (base corpus) and on the success queries (full corpus). The corpus is embedded once.
fn dense_rows(sp: &Split, dir: &Path, device: &Device) -> Result<Vec<Reference>> {
    let name = dir
        .file_name()
        .map_or_else(|| "dense".into(), |n| n.to_string_lossy().to_string());
    let mut index = DenseIndex::from_pretrained(dir, &sp.full.corpus, device)?;
    let hits = |index: &DenseIndex, set: &QuerySet| -> Result<Reference> {
        let ev = evaluate(&index.run(&set.queries, 10, "dense")?, &set.qrels, None);
        Ok(Reference {
            name: String::new(),
            queries: set.queries.len(),
            hits_at_1: ev.hits_at_1,
            hits_at_10: ev.hits_at_10,
        })
    };
    let success = hits(&index, &sp.success)?;
    index.retain(|d| sp.base.corpus.contains(d))?;
    let heldout = hits(&index, &sp.heldout)?;
    Ok(vec![
        Reference {
            name: format!("dense {name}: the same held-out queries (base corpus)"),
            ..heldout
        },
        Reference {
            name: format!("dense {name}: success queries of the added documents (full corpus)"),
            ..success
        },
    ])
}

/// The dense reference rows alone (what [`evaluate_methods`] adds with [`EvalConfig::dense`]), for the same
/// split as `evaluate_methods(c, cfg, ..)` (`cfg.n_new`, `cfg.seed`) and the bi-encoder folder `dir`, without
/// training or editing anything: for callers that cache the method rows apart.
pub fn dense_references(
    c: &Collection,
    cfg: &EvalConfig,
    dir: &Path,
    device: &Device,
) -> Result<Vec<Reference>> {
    dense_rows(&split(c, cfg.n_new, cfg.seed)?, dir, device)
}

/// Reference rows as a markdown table (empty when there are none).
pub fn references_markdown(r: &[Reference]) -> String {
    if r.is_empty() {
        return String::new();
    }
    let mut s = String::from("| reference | queries | Hits@1 | Hits@10 |\n|---|---|---|---|\n");
    for r in r {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} |\n",
            r.name, r.queries, r.hits_at_1, r.hits_at_10
        ));
    }
    s
}

/// Reference rows as a table: `reference`, `queries`, `hits_at_1`, `hits_at_10`.
pub fn references_table(r: &[Reference]) -> Result<Table> {
    Ok(Table::new(vec![
        Column::new(
            "reference",
            r.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "queries",
            r.iter().map(|r| r.queries as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "hits_at_1",
            r.iter().map(|r| r.hits_at_1).collect::<Vec<_>>(),
        ),
        Column::new(
            "hits_at_10",
            r.iter().map(|r| r.hits_at_10).collect::<Vec<_>>(),
        ),
    ])?)
}

/// Continued training on one new document: the vocabulary grows by one row (the live rows' mean), then
/// AdamW steps (whole model, a fresh optimizer, `finetune_lr` or else the base model's learning rate) on the
/// document's edit inputs only (those IncDSI is given), until they all retrieve it (checked every five
/// steps) or `finetune_steps` are done. Returns the model, the steps taken and whether it was learned.
pub fn continued_training(
    mut model: GenirModel,
    doc: &NewDocument,
    cfg: &EvalConfig,
    device: &Device,
) -> Result<(GenirModel, usize, bool)> {
    // grow through the editor (tokenizer, scheme, row), with the mean row instead of a solved one
    let max_len = cfg.train.examples.max_source_len;
    let mut ed = Editor::new(model, cfg.edit.clone())?;
    ed.config.max_source_len = Some(max_len);
    let sources = edit_sources(&ed.model, doc, &ed.config, max_len)?;
    ed.append_mean_row(doc)?;
    model = ed.model;
    let idx = model
        .scheme
        .index_of(&doc.docid)
        .ok_or_else(|| EditError::UnknownDocid(doc.docid.clone()))?;
    let ad = device.clone().autodiff();
    let tensors = model.model.to_hf_tensors()?;
    let mut w = WeightFile::from_tensors("<continued training>", tensors.into_iter().collect());
    let mut net = T5Model::from_weights(model.model.config.clone(), &mut w, &ad)?;
    let trainer = Trainer::new(cfg.train.clone(), device.clone());
    let mut optim = trainer.optimizer();
    let examples: Vec<Example> = sources
        .iter()
        .map(|s| Example {
            source: s.clone(),
            doc: idx,
            kind: ExampleKind::Indexing,
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let lr = cfg.finetune_lr.unwrap_or(cfg.train.lr);
    let (mut steps, mut learned) = (0, false);
    for step in 0..cfg.finetune_steps {
        let (next, loss, _) = trainer.step(net, &mut optim, &refs, &model.scheme, lr)?;
        net = next;
        steps = step + 1;
        if step % 5 == 4 || step + 1 == cfg.finetune_steps {
            let probe = GenirModel {
                model: net.valid(),
                tok: model.tok.clone(),
                scheme: model.scheme.clone(),
                max_source_len: max_len,
            };
            let mut s = probe.searcher()?;
            s.max_source_len = max_len;
            let hits = s.search_ids(&sources, 1)?;
            learned = hits.iter().all(|h| h.first().is_some_and(|h| h.doc == idx));
            tracing::debug!(step, loss, learned, "continued training");
            if learned {
                break;
            }
        }
    }
    model.model = net.valid();
    Ok((model, steps, learned))
}

impl EvalReport {
    /// The results as a table (one row per method; decay as `retention_after_N` columns).
    pub fn dataframe(&self) -> Result<Table> {
        let col =
            |f: &dyn Fn(&MethodResult) -> f64| -> Vec<f64> { self.rows.iter().map(f).collect() };
        let mut cols: Vec<Column> = vec![
            Column::new(
                "method",
                self.rows
                    .iter()
                    .map(|r| r.method.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "docs",
                self.rows.iter().map(|r| r.docs as i64).collect::<Vec<_>>(),
            ),
            Column::new("success_hits_at_1", col(&|r| r.success_hits_at_1)),
            Column::new("success_hits_at_10", col(&|r| r.success_hits_at_10)),
            Column::new("edit_inputs_hits_at_1", col(&|r| r.edit_inputs_hits_at_1)),
            Column::new("retention_before", col(&|r| r.retention_before)),
            Column::new("retention_after", col(&|r| r.retention_after)),
            Column::new(
                "retention_delta",
                col(&|r| r.retention_after - r.retention_before),
            ),
            Column::new("locality", col(&|r| r.locality)),
            Column::new("ms_per_doc", col(&|r| r.ms_per_doc)),
        ];
        let points: BTreeSet<usize> = self
            .rows
            .iter()
            .flat_map(|r| r.decay.iter().map(|d| d.0))
            .collect();
        for p in points {
            let v: Vec<Option<f64>> = self
                .rows
                .iter()
                .map(|r| r.decay.iter().find(|d| d.0 == p).map(|d| d.1))
                .collect();
            cols.push(Column::from_options(format!("retention_after_{p}"), v));
        }
        Ok(Table::new(cols)?)
    }

    /// The table in markdown.
    pub fn markdown(&self) -> String {
        let points: BTreeSet<usize> = self
            .rows
            .iter()
            .flat_map(|r| r.decay.iter().map(|d| d.0))
            .collect();
        let mut s = String::from(
            "| method | docs | success H@1 | success H@10 | edit inputs H@1 | retention H@1 before | after | delta | locality | ms / doc |",
        );
        for p in &points {
            s.push_str(&format!(" retention after {p} |"));
        }
        s.push_str("\n|---|---|---|---|---|---|---|---|---|---|");
        for _ in &points {
            s.push_str("---|");
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.1} |",
                r.method,
                r.docs,
                r.success_hits_at_1,
                r.success_hits_at_10,
                r.edit_inputs_hits_at_1,
                r.retention_before,
                r.retention_after,
                r.retention_after - r.retention_before,
                r.locality,
                r.ms_per_doc
            ));
            for p in &points {
                match r.decay.iter().find(|d| d.0 == *p) {
                    Some(d) => s.push_str(&format!(" {:.3} |", d.1)),
                    None => s.push_str(" |"),
                }
            }
            s.push('\n');
        }
        for note in self.notes() {
            s.push_str(&format!("\n{note}\n"));
        }
        s
    }

    /// Sentences that go with the table: how continued training went.
    pub fn notes(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|r| {
                r.finetuned.as_ref().map(|f| {
                    format!(
                        "{}: a fresh AdamW at learning rate {} on each document's edit inputs, at most {} steps, \
                         stopping once they all retrieve it: {} of {} documents learned, {:.1} steps per document \
                         on average.",
                        r.method, f.lr, f.max_steps, f.learned, r.docs, f.mean_steps
                    )
                })
            })
            .collect()
    }

    /// The reference measures as a markdown table ([`references_markdown`]).
    pub fn references_markdown(&self) -> String {
        references_markdown(&self.references)
    }

    /// The reference measures as a table ([`references_table`]).
    pub fn references_dataframe(&self) -> Result<Table> {
        references_table(&self.references)
    }

    /// Writes the table as Parquet (atomically).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        Ok(self.dataframe()?.write_parquet(path)?)
    }
}

#[cfg(test)]
mod tests {
    use super::trained_seconds;
    use genir_train::train::{TrainConfig, TrainState};

    #[test]
    fn a_finished_model_is_reused_only_with_the_same_training_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig::default();
        let state = TrainState {
            config: cfg.clone(),
            step: 10,
            total_steps: 10,
            losses: vec![],
            validation: vec![],
            seconds: 12.5,
            examples_digest: None,
            epoch_loss: (0.0, 0),
        };
        std::fs::write(
            dir.path().join("train_state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        assert_eq!(trained_seconds(dir.path(), &cfg, None).unwrap(), 12.5);
        let mut other = cfg;
        other.examples.index_sentences = !other.examples.index_sentences;
        let e = trained_seconds(dir.path(), &other, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another configuration"), "{e}");
        // no finished run at all: an error naming the file
        let empty = tempfile::tempdir().unwrap();
        let e = trained_seconds(empty.path(), &other, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("train_state.json"), "{e}");
    }
}
