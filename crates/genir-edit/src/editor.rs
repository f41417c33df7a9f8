//! The [`Editor`]: a GenIR model, its edit log, and the cached representations ("anchors") of existing
//! queries and documents that edits must not disturb.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use genir_data::Collection;
use genir_model::tokenizer::TextTokenizer;
use genir_model::weights::HostTensor;
use genir_train::bundle::{DocidTokenPattern, GenirModel};
use genir_train::docid::DocidScheme;
use genir_train::search::Searcher;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use tokenizers::AddedToken;

use crate::error::{EditError, Result};
use crate::linalg::{self, Hinges};
use crate::log::{payload_name, EditLog, EditOp, EditRecord, Patch};
use crate::reps::{self, Reps};
use crate::tensors;

/// A document to add: a new docid, its text, and optionally example queries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewDocument {
    /// The new docid (must not exist in the model).
    pub docid: String,
    /// Title (may be empty); indexed with the text as `title text`, as training does.
    #[serde(default)]
    pub title: String,
    /// The text.
    pub text: String,
    /// Example queries (optional; pseudo queries are made from the text's sentences).
    #[serde(default)]
    pub queries: Vec<String>,
}

impl NewDocument {
    /// A document from its docid and text.
    pub fn new(docid: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            docid: docid.into(),
            text: text.into(),
            ..Default::default()
        }
    }

    /// From a corpus document.
    pub fn from_document(d: &genir_data::Document) -> Self {
        Self {
            docid: d.docid.clone(),
            title: d.title.clone(),
            text: d.text.clone(),
            queries: Vec::new(),
        }
    }

    fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}

/// A document whose content changes (same docid).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangedDocument {
    /// The docid (must exist and not be deleted).
    pub docid: String,
    /// New title.
    #[serde(default)]
    pub title: String,
    /// New text.
    pub text: String,
    /// The old text, when known: its sentences that the new text drops must stop retrieving the document, as
    /// must the anchors calibrated for this document (its old indexed text and queries) that are closer to
    /// those sentences than to the new content; the others are left free. Without it, every anchor of the
    /// document that is not content of the new version must stop retrieving it.
    #[serde(default)]
    pub old_text: Option<String>,
    /// Example queries about the new content.
    #[serde(default)]
    pub queries: Vec<String>,
}

/// How new documents are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddMethod {
    /// IncDSI (Kishore et al., ICML 2023): the new docid's output row is solved by L-BFGS so that the new
    /// document's inputs beat the best existing docid by a margin and the anchors keep their docids.
    IncDsi,
    /// Locate-then-edit (ROME/MEMIT, DOME for generative retrieval): the new docid gets a fresh row, and the
    /// last decoder block's feed-forward output matrix gets a low-rank update that writes, for the new
    /// document's keys, a residual shift that makes the decoder emit the new docid, while preserving the
    /// outputs on the anchors' keys (weighted by their second-moment matrix).
    RankOne,
}

impl std::str::FromStr for AddMethod {
    type Err = EditError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "incdsi" => Ok(Self::IncDsi),
            "rank_one" | "rank-one" | "memit" => Ok(Self::RankOne),
            _ => Err(EditError::Invalid(format!(
                "unknown add method {s:?}: expected incdsi or rank-one"
            ))),
        }
    }
}

impl AddMethod {
    /// Name used in the edit log and tables.
    pub fn name(self) -> &'static str {
        match self {
            AddMethod::IncDsi => "incdsi",
            AddMethod::RankOne => "rank_one",
        }
    }
}

/// Settings of the edit methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditConfig {
    /// Longest encoder input in tokens; `None`: the model's ([`GenirModel::max_source_len`], as in
    /// training).
    pub max_source_len: Option<usize>,
    /// Chunks of a document's text used as inputs (training indexes the first one by default).
    pub max_chunks: usize,
    /// Use the text's sentences as pseudo queries.
    pub pseudo_queries: bool,
    /// Shortest pseudo-query sentence, in words.
    pub min_sentence_words: usize,
    /// IncDSI: margin (in logits) by which the new document's inputs must beat the best other docid.
    pub margin_new: f64,
    /// IncDSI: margin by which anchors' current docids must stay ahead of the new one.
    pub margin_old: f64,
    /// IncDSI: weight of the L2 term on the row.
    pub l2: f64,
    /// IncDSI: weight of the anchors' hinge terms relative to the new document's.
    pub old_weight: f64,
    /// L-BFGS iterations.
    pub max_iter: usize,
    /// Deletion: margin by which a deleted docid's logit is pushed below the best other docid.
    pub delete_margin: f64,
    /// Rank-one: weight of the anchors' key second moment (`lambda` in `(lambda K0 K0^T + K K^T)^-1`).
    pub anchor_weight: f64,
    /// Rank-one: L2 weight on the residual shift per input.
    pub shift_l2: f64,
    /// Rank-one: rounds of (find shift, update matrix).
    pub rounds: usize,
    /// Batch size of forward passes.
    pub batch: usize,
    /// Seed of fresh rows (rank-one).
    pub seed: u64,
}

impl Default for EditConfig {
    fn default() -> Self {
        Self {
            max_source_len: None,
            max_chunks: 2,
            pseudo_queries: true,
            min_sentence_words: 4,
            margin_new: 1.0,
            margin_old: 1.0,
            l2: 1e-3,
            old_weight: 1.0,
            max_iter: 100,
            delete_margin: 5.0,
            anchor_weight: 1.0,
            shift_l2: 1e-2,
            rounds: 2,
            batch: 64,
            seed: 0,
        }
    }
}

/// Cached representations of existing queries and documents.
#[derive(Clone, Debug, Default)]
struct Anchors {
    sources: Vec<Vec<u32>>,
    reps: Reps,
    /// The document an anchor is about, when known.
    own: Vec<Option<usize>>,
    /// Best docid logit (over live documents) and its document.
    top: Vec<f32>,
    arg: Vec<usize>,
}

/// A GenIR model being edited, with its edit log.
pub struct Editor {
    /// The model, tokenizer and docid scheme.
    pub model: GenirModel,
    /// Method settings.
    pub config: EditConfig,
    log: EditLog,
    anchors: Anchors,
    anchors_stale: bool,
    /// `[n_docs, d]` output rows of the docid tokens (atomic schemes), kept in sync with the model.
    rows: Vec<f32>,
    /// Documents appended by the edit in progress whose rows are not solved yet (zero rows): no competitor
    /// of anything until their row is written.
    unsolved: BTreeSet<usize>,
    /// Cholesky factor of `lambda K0 K0^T + eps I` (rank-one edits).
    a0: Option<Vec<f64>>,
    /// Final-norm gain and epsilon of the decoder.
    final_norm: (Vec<f32>, f64),
}

const NONE: usize = usize::MAX;

fn dotf(a: &[f32], b: &[f32]) -> f32 {
    linalg::dot_f32(a, b)
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

impl Editor {
    /// Starts editing an in-memory model (empty log).
    pub fn new(model: GenirModel, config: EditConfig) -> Result<Self> {
        let log = EditLog::new(model.model.config.vocab_size, model.scheme.len());
        Self::with_log(model, config, log)
    }

    fn with_log(model: GenirModel, config: EditConfig, log: EditLog) -> Result<Self> {
        let g = model
            .model
            .decoder
            .final_norm
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| EditError::Tensor(format!("{e:?}")))?;
        let eps = model.model.decoder.final_norm.eps;
        let mut e = Self {
            model,
            config,
            log,
            anchors: Anchors::default(),
            anchors_stale: false,
            rows: Vec::new(),
            unsolved: BTreeSet::new(),
            a0: None,
            final_norm: (g, eps),
        };
        e.sync_rows()?;
        Ok(e)
    }

    /// Opens a model folder (a `genir train` output) and its edit log, if any.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let model = GenirModel::load(dir, device)?;
        let log = if EditLog::exists(dir) {
            let log = EditLog::load(dir)?;
            let path = dir.join(crate::log::EDITS_DIR).join(crate::log::LOG_FILE);
            if log.records.is_empty()
                && (log.base_vocab != model.model.config.vocab_size
                    || log.base_docs != model.scheme.len())
            {
                return Err(EditError::log(
                    path,
                    "the log's base model does not match the model folder",
                ));
            }
            log
        } else {
            EditLog::new(model.model.config.vocab_size, model.scheme.len())
        };
        Self::with_log(model, EditConfig::default(), log)
    }

    /// Saves the model folder (weights, tokenizer, docids) and the edit log beside it (`edits/`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)?;
        self.log.save(dir)?;
        tracing::info!(dir = %dir.display(), edits = self.log.records.len(), "saved edited model");
        Ok(())
    }

    /// The edits made so far, oldest first.
    pub fn history(&self) -> &[EditRecord] {
        &self.log.records
    }

    /// The edit log.
    pub fn log(&self) -> &EditLog {
        &self.log
    }

    /// A searcher over the live (not deleted) documents.
    pub fn searcher(&self) -> Result<Searcher<'_>> {
        let mut s = self.model.searcher()?;
        s.max_source_len = self.max_len();
        Ok(s)
    }

    /// The longest encoder input the edits use ([`EditConfig::max_source_len`], else the model's).
    fn max_len(&self) -> usize {
        self.config
            .max_source_len
            .unwrap_or(self.model.max_source_len)
            .max(1)
    }

    /// Number of anchors (cached existing queries and documents).
    pub fn anchor_count(&self) -> usize {
        self.anchors.reps.n
    }

    fn require_atomic(&self, what: &'static str) -> Result<()> {
        if !self.model.scheme.is_atomic() {
            return Err(EditError::NeedsAtomic(
                what,
                self.model.scheme.kind.to_string(),
            ));
        }
        if self.model.scheme.vocab_size() != self.model.model.config.vocab_size {
            return Err(EditError::Invalid(format!(
                "{what}: the model has {} vocabulary rows but its text and docid tokens take {}; docid tokens must be the last rows",
                self.model.model.config.vocab_size,
                self.model.scheme.vocab_size()
            )));
        }
        Ok(())
    }

    // ----- rows and anchors -------------------------------------------------------------------

    fn d(&self) -> usize {
        self.model.model.config.d_model
    }

    fn sync_rows(&mut self) -> Result<()> {
        if !self.model.scheme.is_atomic() {
            self.rows.clear();
            return Ok(());
        }
        let name = tensors::unembed_name(&self.model.model);
        let off = self.model.scheme.token_offset as usize;
        let n = self.model.scheme.n_tokens();
        let [v, _] = tensors::shape(&self.model.model, name)?;
        if off + n > v {
            return Err(EditError::Invalid(format!(
                "docid tokens go up to {} but the model has {v} rows",
                off + n
            )));
        }
        self.rows = tensors::read_rows(&self.model.model, name, off, n)?;
        Ok(())
    }

    fn row(&self, doc: usize) -> &[f32] {
        let d = self.d();
        &self.rows[doc * d..(doc + 1) * d]
    }

    /// Best live docid logit for `rep`, skipping `skip` documents (and rows not solved yet): (score, doc).
    fn best(&self, rep: &[f32], skip: &BTreeSet<usize>) -> (f32, usize) {
        let mut best = (f32::NEG_INFINITY, NONE);
        for doc in 0..self.model.scheme.len() {
            if skip.contains(&doc)
                || self.model.scheme.is_deleted(doc)
                || self.unsolved.contains(&doc)
            {
                continue;
            }
            let s = dotf(rep, self.row(doc));
            if s > best.0 {
                best = (s, doc);
            }
        }
        best
    }

    fn refresh_tops(&mut self) {
        let none = BTreeSet::new();
        let (top, arg): (Vec<f32>, Vec<usize>) = (0..self.anchors.reps.n)
            .map(|i| self.best(self.anchors.reps.rep(i), &none))
            .unzip();
        self.anchors.top = top;
        self.anchors.arg = arg;
    }

    /// After row `doc` changed: update the anchors' best docids incrementally.
    fn row_changed(&mut self, doc: usize) {
        let none = BTreeSet::new();
        let deleted = self.model.scheme.is_deleted(doc) || self.unsolved.contains(&doc);
        for i in 0..self.anchors.reps.n {
            let s = dotf(self.anchors.reps.rep(i), self.row(doc));
            if self.anchors.arg[i] == doc && (deleted || s < self.anchors.top[i]) {
                let (t, a) = self.best(self.anchors.reps.rep(i), &none);
                self.anchors.top[i] = t;
                self.anchors.arg[i] = a;
            } else if !deleted && s > self.anchors.top[i] {
                self.anchors.top[i] = s;
                self.anchors.arg[i] = doc;
            }
        }
    }

    /// Caches the representations of existing queries and documents (`(text, owning docid)`), which edits
    /// must leave with their current best docid. Replaces earlier anchors.
    pub fn calibrate(&mut self, anchors: &[(String, Option<String>)]) -> Result<usize> {
        let texts: Vec<String> = anchors.iter().map(|(t, _)| t.clone()).collect();
        let sources = reps::encode_texts(
            &self.model.tok,
            &texts,
            self.max_len(),
            self.model.scheme.eos,
        )?;
        let own = anchors
            .iter()
            .map(|(_, d)| d.as_deref().and_then(|d| self.model.scheme.index_of(d)))
            .collect();
        self.set_anchors(sources, own)?;
        Ok(self.anchors.reps.n)
    }

    fn set_anchors(&mut self, sources: Vec<Vec<u32>>, own: Vec<Option<usize>>) -> Result<()> {
        if !self.model.scheme.is_atomic() {
            // only row solves (atomic docids) use anchors; multi-token docids have no rows to compare
            self.anchors = Anchors::default();
            self.anchors_stale = false;
            tracing::info!("multi-token docids: no edit anchors (only atomic edits use them)");
            return Ok(());
        }
        let t = Instant::now();
        let reps = if sources.is_empty() {
            Reps::default()
        } else {
            reps::compute(&self.model.model, &sources, true, self.config.batch)?
        };
        self.anchors = Anchors {
            sources,
            reps,
            own,
            top: Vec::new(),
            arg: Vec::new(),
        };
        self.anchors_stale = false;
        self.a0 = None;
        self.refresh_tops();
        tracing::info!(
            anchors = self.anchors.reps.n,
            seconds = t.elapsed().as_secs_f64(),
            "calibrated edit anchors"
        );
        Ok(())
    }

    /// Anchors from a collection and the edit log: the first indexed chunk and the sentences (pseudo
    /// queries) of every live document of the model and the training queries (owned by their relevant
    /// document), evenly subsampled to at most `max` inputs, then the edit inputs of every addition and
    /// change the log kept (all of them), as the editor that made those edits holds them: the latest
    /// version of a document owned by it, earlier versions, a changed document's collection text and the
    /// training queries of documents the log added or changed owned by no document; the collection's text
    /// of a document the log added is left out (the model never held it), and so are deleted documents.
    pub fn calibrate_from_collection(&mut self, c: &Collection, max: usize) -> Result<usize> {
        if !self.model.scheme.is_atomic() {
            // no anchors for multi-token docids (see `set_anchors`): nothing to encode
            self.set_anchors(Vec::new(), Vec::new())?;
            return Ok(0);
        }
        let (versions, latest) = self.logged_documents();
        let scheme = &self.model.scheme;
        let live = |docid: &str| scheme.index_of(docid).filter(|&i| !scheme.is_deleted(i));
        // the collection's texts and training queries, evenly subsampled to `max`
        let mut items: Vec<(String, Option<usize>)> = Vec::new();
        for d in c.corpus.iter() {
            let Some(i) = live(&d.docid) else { continue };
            let owner = match latest.get(d.docid.as_str()) {
                // added by the log: the collection's text never was the model's
                Some((_, true)) => continue,
                // changed: the old content no longer describes the document (as after `change`)
                Some((_, false)) => None,
                None => Some(i),
            };
            items.push((d.full_text(), owner));
            for s in reps::sentences(&d.text, self.config.min_sentence_words) {
                items.push((s, owner));
            }
        }
        if let Some(train) = c.split("train") {
            for q in train.queries.iter() {
                let rel: Vec<&str> = train.qrels.relevant(&q.qid).collect();
                // queries of a document the log added or changed: owned by none, as in the session that
                // calibrated before the edit
                let own = match rel.as_slice() {
                    [d] if !latest.contains_key(*d) => scheme.index_of(d),
                    _ => None,
                };
                items.push((q.text.clone(), own));
            }
        }
        if items.len() > max && max > 0 {
            let n = items.len();
            items = (0..max).map(|i| items[i * n / max].clone()).collect();
        }
        let texts: Vec<String> = items.iter().map(|(t, _)| t.clone()).collect();
        let mut sources = reps::encode_texts(&self.model.tok, &texts, self.max_len(), scheme.eos)?;
        let mut own: Vec<Option<usize>> = items.into_iter().map(|(_, o)| o).collect();
        // then every logged version's edit inputs, unsampled, in the order the edits added them: the latest
        // version of a live document owned by it, earlier versions by none (as `change` leaves them)
        for (k, doc) in versions.iter().enumerate() {
            let Some(i) = live(&doc.docid) else { continue };
            let owner = (latest[doc.docid.as_str()].0 == k).then_some(i);
            for src in self.inputs(&doc.full_text(), &doc.text, &doc.queries)? {
                sources.push(src);
                own.push(owner);
            }
        }
        self.set_anchors(sources, own)?;
        Ok(self.anchors.reps.n)
    }

    /// Every content the edit log gave a document (additions and changes, in order), and per docid the
    /// position of its latest one there and whether the log added the document (rather than changed one of
    /// the base model's).
    fn logged_documents(&self) -> (Vec<NewDocument>, BTreeMap<String, (usize, bool)>) {
        let mut versions = Vec::new();
        let mut latest: BTreeMap<String, (usize, bool)> = BTreeMap::new();
        for r in &self.log.records {
            for d in &r.documents {
                let added = r.op == EditOp::Add || latest.get(&d.docid).is_some_and(|x| x.1);
                latest.insert(d.docid.clone(), (versions.len(), added));
                versions.push(d.clone());
            }
        }
        (versions, latest)
    }

    /// A document's current text (without its title) as far as this model folder knows it: the text of
    /// its latest logged addition or change, else the collection's. `None` when neither has it, or when
    /// its latest addition or change was logged without its content (logs written before contents were
    /// kept).
    pub fn current_text(&self, docid: &str, c: &Collection) -> Option<String> {
        let mut text = c.corpus.get(docid).map(|d| d.text.clone());
        for r in &self.log.records {
            if r.op != EditOp::Delete && r.docids.iter().any(|d| d == docid) {
                text = r
                    .documents
                    .iter()
                    .find(|d| d.docid == docid)
                    .map(|d| d.text.clone());
            }
        }
        text
    }

    fn fresh_anchors(&mut self) -> Result<()> {
        if self.anchors_stale {
            let sources = std::mem::take(&mut self.anchors.sources);
            let own = std::mem::take(&mut self.anchors.own);
            self.set_anchors(sources, own)?;
        }
        Ok(())
    }

    fn add_anchors(&mut self, sources: Vec<Vec<u32>>, reps: &Reps, owner: usize) {
        let none = BTreeSet::new();
        for i in 0..reps.n {
            let (t, a) = self.best(reps.rep(i), &none);
            self.anchors.top.push(t);
            self.anchors.arg.push(a);
            self.anchors.own.push(Some(owner));
        }
        self.anchors.sources.extend(sources);
        self.anchors.reps.extend(reps);
    }

    /// Inputs of a document: text chunks, then pseudo queries (sentences), then example queries.
    fn inputs(&self, full_text: &str, text: &str, queries: &[String]) -> Result<Vec<Vec<u32>>> {
        let c = &self.config;
        let eos = self.model.scheme.eos;
        let mut out = reps::text_chunks(
            &self.model.tok,
            full_text,
            self.max_len(),
            eos,
            c.max_chunks,
        )?;
        let mut texts: Vec<String> = Vec::new();
        if c.pseudo_queries {
            texts.extend(reps::sentences(text, c.min_sentence_words));
        }
        texts.extend(queries.iter().cloned());
        out.extend(reps::encode_texts(
            &self.model.tok,
            &texts,
            self.max_len(),
            eos,
        )?);
        Ok(out)
    }

    // ----- patches ----------------------------------------------------------------------------

    fn apply(
        &mut self,
        patch: &Patch,
        payload: &BTreeMap<String, HostTensor>,
        base: &BTreeMap<String, HostTensor>,
    ) -> Result<()> {
        match patch {
            Patch::AppendDocids {
                docids,
                vocab_before,
            } => {
                self.require_atomic("adding documents")?;
                if *vocab_before != self.model.model.config.vocab_size {
                    return Err(EditError::Invalid(format!(
                        "the edit adds documents to a model of {vocab_before} vocabulary rows, this one has {}",
                        self.model.model.config.vocab_size
                    )));
                }
                for d in docids {
                    if self.model.scheme.index_of(d).is_some() {
                        return Err(EditError::DuplicateDocid(d.clone()));
                    }
                }
                let mut all = self.model.scheme.docids.clone();
                all.extend(docids.iter().cloned());
                let scheme = rebuild_scheme(&self.model.scheme, all)?;
                let names: Vec<String> =
                    scheme.token_names[self.model.scheme.n_tokens()..].to_vec();
                let tok = add_tokens(&self.model.tok, &names, *vocab_before as u32)?;
                tensors::grow_vocab(&mut self.model.model, docids.len())?;
                self.model.scheme = scheme;
                self.model.tok = tok;
                self.rows
                    .extend(std::iter::repeat_n(0.0, docids.len() * self.d()));
            }
            Patch::MarkDeleted { docids } => {
                for d in docids {
                    let i = self
                        .model
                        .scheme
                        .index_of(d)
                        .ok_or_else(|| EditError::UnknownDocid(d.clone()))?;
                    if self.model.scheme.is_deleted(i) {
                        return Err(EditError::AlreadyDeleted(d.clone()));
                    }
                }
                self.model.scheme.deleted.extend(docids.iter().cloned());
            }
            Patch::Rows { tensor, rows, key } => {
                let before = get(payload, &format!("{key}.before"))?;
                let after = get(payload, &format!("{key}.after"))?;
                self.write_rows(tensor, rows, before, after)?;
            }
            Patch::LowRank { tensor, key } => {
                let current = tensors::read(&self.model.model, tensor)?;
                match (self.log.base.get(tensor), base.get(tensor)) {
                    (None, Some(b)) => {
                        if *b != current {
                            return Err(EditError::Invalid(format!(
                                "{tensor} differs from the edit log's base value: the log was made on another model"
                            )));
                        }
                        self.log.base.insert(tensor.clone(), current.clone());
                    }
                    (None, None) => {
                        self.log.base.insert(tensor.clone(), current.clone());
                    }
                    _ => {}
                }
                let u = get(payload, &format!("{key}.u"))?;
                let v = get(payload, &format!("{key}.v"))?;
                let new = tensors::add_low_rank(&current, u, v)?;
                tensors::write(&mut self.model.model, tensor, &new)?;
                self.anchors_stale = true;
            }
        }
        Ok(())
    }

    fn write_rows(
        &mut self,
        tensor: &str,
        rows: &[usize],
        expect: &HostTensor,
        values: &HostTensor,
    ) -> Result<()> {
        let [_, c] = tensors::shape(&self.model.model, tensor)?;
        if expect.values.len() != rows.len() * c || values.values.len() != rows.len() * c {
            return Err(EditError::Invalid(format!(
                "row patch of {tensor} has the wrong width"
            )));
        }
        for (i, &r) in rows.iter().enumerate() {
            let cur = tensors::read_rows(&self.model.model, tensor, r, 1)?;
            if cur != expect.values[i * c..(i + 1) * c] {
                return Err(EditError::Invalid(format!(
                    "row {r} of {tensor} is not what the edit log expects: the log was made on another model (or state)"
                )));
            }
            tensors::write_rows(
                &mut self.model.model,
                tensor,
                r,
                &values.values[i * c..(i + 1) * c],
            )?;
            let off = self.model.scheme.token_offset as usize;
            if tensor == tensors::unembed_name(&self.model.model)
                && r >= off
                && r < off + self.model.scheme.n_tokens()
                && !self.rows.is_empty()
            {
                let d = self.d();
                let doc = r - off;
                self.rows[doc * d..(doc + 1) * d]
                    .copy_from_slice(&values.values[i * c..(i + 1) * c]);
            }
        }
        Ok(())
    }

    fn unapply(&mut self, record_index: usize, patch_index: usize) -> Result<()> {
        let record = self.log.records[record_index].clone();
        let payload = self
            .log
            .payloads
            .get(&record.id)
            .cloned()
            .unwrap_or_default();
        match &record.patches[patch_index] {
            Patch::AppendDocids {
                docids,
                vocab_before,
            } => {
                let n = self.model.scheme.len();
                let keep = n.checked_sub(docids.len()).ok_or_else(|| {
                    EditError::Invalid("undo: fewer documents than the edit added".into())
                })?;
                if self.model.scheme.docids[keep..] != docids[..] {
                    return Err(EditError::Invalid(
                        "undo: the added documents are not the last ones".into(),
                    ));
                }
                let mut scheme = rebuild_scheme(
                    &self.model.scheme,
                    self.model.scheme.docids[..keep].to_vec(),
                )?;
                for d in docids {
                    scheme.deleted.remove(d);
                }
                tensors::truncate_vocab(&mut self.model.model, *vocab_before)?;
                self.model.tok = remove_tokens(&self.model.tok, *vocab_before as u32)?;
                self.model.scheme = scheme;
                self.rows.truncate(keep * self.d());
            }
            Patch::MarkDeleted { docids } => {
                for d in docids {
                    self.model.scheme.deleted.remove(d);
                }
            }
            Patch::Rows { tensor, rows, key } => {
                let before = get(&payload, &format!("{key}.before"))?.clone();
                let after = get(&payload, &format!("{key}.after"))?.clone();
                self.write_rows(tensor, rows, &after, &before)?;
            }
            Patch::LowRank { tensor, .. } => {
                let base = self.log.base.get(tensor).cloned().ok_or_else(|| {
                    EditError::Invalid(format!("undo: no base value of {tensor}"))
                })?;
                let mut m = base;
                for (ri, r) in self.log.records[..=record_index].iter().enumerate() {
                    let upto = if ri == record_index {
                        patch_index
                    } else {
                        r.patches.len()
                    };
                    for p in &r.patches[..upto] {
                        if let Patch::LowRank { tensor: t, key } = p {
                            if t == tensor {
                                let pl = self.log.payloads.get(&r.id).ok_or_else(|| {
                                    EditError::Invalid(format!(
                                        "undo: edit {} has no payload",
                                        r.id
                                    ))
                                })?;
                                m = tensors::add_low_rank(
                                    &m,
                                    get(pl, &format!("{key}.u"))?,
                                    get(pl, &format!("{key}.v"))?,
                                )?;
                            }
                        }
                    }
                }
                tensors::write(&mut self.model.model, tensor, &m)?;
                let still_patched = self.log.records[..record_index].iter().any(|r| {
                    r.patches
                        .iter()
                        .any(|p| matches!(p, Patch::LowRank { tensor: t, .. } if t == tensor))
                }) || record.patches[..patch_index]
                    .iter()
                    .any(|p| matches!(p, Patch::LowRank { tensor: t, .. } if t == tensor));
                if !still_patched {
                    self.log.base.remove(tensor);
                }
                self.anchors_stale = true;
            }
        }
        Ok(())
    }

    /// Undoes the last `n` edits (newest first), restoring the weights, tokenizer and docids bit for bit.
    /// Returns the records undone.
    pub fn undo(&mut self, n: usize) -> Result<Vec<EditRecord>> {
        if n > self.log.records.len() {
            return Err(EditError::Invalid(format!(
                "cannot undo {n} edits: the log has {}",
                self.log.records.len()
            )));
        }
        let mut undone = Vec::new();
        for _ in 0..n {
            let ri = self.log.records.len() - 1;
            for pi in (0..self.log.records[ri].patches.len()).rev() {
                self.unapply(ri, pi)?;
            }
            let r = self.log.records.remove(ri);
            self.log.payloads.remove(&r.id);
            self.log.id_floor = self.log.id_floor.max(r.id + 1);
            tracing::info!(id = r.id, op = %r.op, docids = ?r.docids, "undid edit");
            undone.push(r);
        }
        self.after_bulk_change()?;
        Ok(undone)
    }

    fn after_bulk_change(&mut self) -> Result<()> {
        self.unsolved.clear();
        self.sync_rows()?;
        if self.anchors.reps.n > 0 {
            // documents may have disappeared (an undone or rolled-back addition): their inputs are no
            // anchors any more (kept, they would hold another document's bound against a re-addition)
            let n = self.model.scheme.len();
            let keep: Vec<bool> = self
                .anchors
                .own
                .iter()
                .map(|o| !o.is_some_and(|d| d >= n))
                .collect();
            if keep.contains(&false) {
                fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
                    let mut k = keep.iter();
                    v.retain(|_| k.next().copied().unwrap_or(true));
                }
                let a = &mut self.anchors;
                retain(&mut a.sources, &keep);
                retain(&mut a.own, &keep);
                retain(&mut a.top, &keep);
                retain(&mut a.arg, &keep);
                a.reps.retain(&keep);
            }
            if self.anchors_stale {
                self.fresh_anchors()?;
            } else {
                self.refresh_tops();
            }
        }
        Ok(())
    }

    /// Replays the edit log of another model folder onto this model. This model's own edits must be a
    /// prefix of that log (typically: none, on a fresh copy of the same base model); the remaining edits are
    /// applied patch by patch, checking that every overwritten value is what the log expects, so the result
    /// is bit-identical to the other folder's model. Returns the number of edits applied.
    pub fn replay_from(&mut self, other_dir: &Path) -> Result<usize> {
        let other = EditLog::load(other_dir)?;
        let path = other_dir
            .join(crate::log::EDITS_DIR)
            .join(crate::log::LOG_FILE);
        let mine = self.log.records.len();
        if other.records.len() < mine
            || other.records[..mine]
                .iter()
                .zip(&self.log.records)
                // what an edit is (its `seconds` and `details` are measurements, which a float's round
                // trip through log.json may change by one bit)
                .any(|(a, b)| {
                    (a.id, &a.op, &a.method, &a.docids, &a.patches, &a.payload)
                        != (b.id, &b.op, &b.method, &b.docids, &b.patches, &b.payload)
                })
        {
            return Err(EditError::log(
                path,
                "this model's edits are not a prefix of the log: cannot replay",
            ));
        }
        if mine == 0
            && (other.base_vocab != self.model.model.config.vocab_size
                || other.base_docs != self.model.scheme.len())
        {
            return Err(EditError::log(
                path,
                format!(
                    "the log starts from a model of {} vocabulary rows and {} documents, this one has {} and {}",
                    other.base_vocab,
                    other.base_docs,
                    self.model.model.config.vocab_size,
                    self.model.scheme.len()
                ),
            ));
        }
        let todo: Vec<EditRecord> = other.records[mine..].to_vec();
        for r in &todo {
            let payload = other.payloads.get(&r.id).cloned().unwrap_or_default();
            for p in &r.patches {
                self.apply(p, &payload, &other.base)
                    .map_err(|e| EditError::log(&path, format!("edit {}: {e}", r.id)))?;
            }
            self.log.records.push(r.clone());
            self.log.payloads.insert(r.id, payload);
        }
        self.log.id_floor = self.log.id_floor.max(other.id_floor);
        self.after_bulk_change()?;
        Ok(todo.len())
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        op: EditOp,
        method: &str,
        docids: Vec<String>,
        patches: Vec<Patch>,
        payload: BTreeMap<String, HostTensor>,
        seconds: f64,
        details: BTreeMap<String, f64>,
        documents: Vec<NewDocument>,
    ) -> EditRecord {
        let id = self.log.next_id();
        let record = EditRecord {
            id,
            op,
            method: method.to_string(),
            docids,
            seconds,
            details,
            patches,
            payload: payload_name(id),
            documents,
        };
        self.log.records.push(record.clone());
        self.log.payloads.insert(id, payload);
        tracing::info!(id, op = %record.op, method, docs = record.docids.len(), ms = seconds * 1000.0, "edit");
        record
    }

    /// Applies a patch made now (its payload is being built) and records it.
    fn push_patch(
        &mut self,
        patch: Patch,
        patches: &mut Vec<Patch>,
        payload: &BTreeMap<String, HostTensor>,
    ) -> Result<()> {
        let empty = BTreeMap::new();
        self.apply(&patch, payload, &empty)?;
        patches.push(patch);
        Ok(())
    }

    /// Records an edit's patches so far as one edit if a later step fails, so nothing is left half-done
    /// without a log entry: on error the applied patches are undone.
    fn rollback(&mut self, patches: Vec<Patch>, payload: BTreeMap<String, HostTensor>) {
        if patches.is_empty() {
            return;
        }
        let r = self.commit(
            EditOp::Add,
            "failed",
            Vec::new(),
            patches,
            payload,
            0.0,
            BTreeMap::new(),
            Vec::new(),
        );
        if let Err(e) = self.undo(1) {
            tracing::error!(id = r.id, "could not roll back a failed edit: {e}");
        }
    }

    fn row_patch(
        &mut self,
        doc: usize,
        w: &[f32],
        key: String,
        patches: &mut Vec<Patch>,
        payload: &mut BTreeMap<String, HostTensor>,
    ) -> Result<()> {
        let name = tensors::unembed_name(&self.model.model);
        let r = self.model.scheme.token_offset as usize + doc;
        let before = tensors::read_rows(&self.model.model, name, r, 1)?;
        let d = self.d();
        payload.insert(format!("{key}.before"), HostTensor::new(vec![1, d], before));
        payload.insert(
            format!("{key}.after"),
            HostTensor::new(vec![1, d], w.to_vec()),
        );
        self.push_patch(
            Patch::Rows {
                tensor: name.to_string(),
                rows: vec![r],
                key,
            },
            patches,
            payload,
        )?;
        self.unsolved.remove(&doc);
        Ok(())
    }

    // ----- add --------------------------------------------------------------------------------

    /// Adds documents with new docids (one edit in the log). Atomic docids only.
    pub fn add(&mut self, docs: &[NewDocument], method: AddMethod) -> Result<EditRecord> {
        self.require_atomic("adding documents")?;
        if docs.is_empty() {
            return Err(EditError::Invalid("no documents to add".into()));
        }
        let mut seen = BTreeSet::new();
        for d in docs {
            if d.docid.trim().is_empty() {
                return Err(EditError::Invalid(
                    "a new document has an empty docid".into(),
                ));
            }
            if self.model.scheme.index_of(&d.docid).is_some() || !seen.insert(d.docid.as_str()) {
                return Err(EditError::DuplicateDocid(d.docid.clone()));
            }
            if d.text.trim().is_empty() && d.title.trim().is_empty() && d.queries.is_empty() {
                return Err(EditError::Invalid(format!(
                    "document {:?} has no text and no queries",
                    d.docid
                )));
            }
        }
        self.fresh_anchors()?;
        let t = Instant::now();
        let mut patches = Vec::new();
        let mut payload = BTreeMap::new();
        let mut details = BTreeMap::new();
        let result = match method {
            AddMethod::IncDsi => self.add_incdsi(docs, &mut patches, &mut payload, &mut details),
            AddMethod::RankOne => self.add_rank_one(docs, &mut patches, &mut payload, &mut details),
        };
        if let Err(e) = result {
            self.rollback(patches, payload);
            return Err(e);
        }
        let seconds = t.elapsed().as_secs_f64();
        Ok(self.commit(
            EditOp::Add,
            method.name(),
            docs.iter().map(|d| d.docid.clone()).collect(),
            patches,
            payload,
            seconds,
            details,
            docs.to_vec(),
        ))
    }

    /// Appends a document whose row is the live rows' mean (the starting point of the continued-training
    /// baseline), as one logged edit.
    pub(crate) fn append_mean_row(&mut self, doc: &NewDocument) -> Result<()> {
        self.require_atomic("adding documents")?;
        if self.model.scheme.index_of(&doc.docid).is_some() {
            return Err(EditError::DuplicateDocid(doc.docid.clone()));
        }
        let d = self.d();
        let n = self.model.scheme.len();
        let live: Vec<usize> = (0..n)
            .filter(|&i| !self.model.scheme.is_deleted(i))
            .collect();
        let mut w = vec![0f32; d];
        for &i in &live {
            for (a, &b) in w.iter_mut().zip(self.row(i)) {
                *a += b / live.len().max(1) as f32;
            }
        }
        let mut patches = Vec::new();
        let mut payload = BTreeMap::new();
        let first = self.append(std::slice::from_ref(doc), &mut patches, &payload)?;
        self.row_patch(
            first,
            &w,
            format!("row.{first}"),
            &mut patches,
            &mut payload,
        )?;
        self.row_changed(first);
        self.commit(
            EditOp::Add,
            "mean_row",
            vec![doc.docid.clone()],
            patches,
            payload,
            0.0,
            BTreeMap::new(),
            vec![doc.clone()],
        );
        Ok(())
    }

    fn append(
        &mut self,
        docs: &[NewDocument],
        patches: &mut Vec<Patch>,
        payload: &BTreeMap<String, HostTensor>,
    ) -> Result<usize> {
        let first = self.model.scheme.len();
        let patch = Patch::AppendDocids {
            docids: docs.iter().map(|d| d.docid.clone()).collect(),
            vocab_before: self.model.model.config.vocab_size,
        };
        self.push_patch(patch, patches, payload)?;
        // the new rows are zero until solved: no anchor's best docid, no competitor of a bound (a zero
        // logit would beat every negative one)
        self.unsolved.extend(first..self.model.scheme.len());
        Ok(first)
    }

    fn add_incdsi(
        &mut self,
        docs: &[NewDocument],
        patches: &mut Vec<Patch>,
        payload: &mut BTreeMap<String, HostTensor>,
        details: &mut BTreeMap<String, f64>,
    ) -> Result<()> {
        let mut all_inputs = Vec::new();
        for d in docs {
            all_inputs.push(self.inputs(&d.full_text(), &d.text, &d.queries)?);
        }
        let first = self.append(docs, patches, payload)?;
        let mut stats = SolveStats::default();
        for (i, inputs) in all_inputs.into_iter().enumerate() {
            let doc = first + i;
            let r = reps::compute(&self.model.model, &inputs, true, self.config.batch)?;
            let skip: BTreeSet<usize> = [doc].into();
            let mut positives = Hinges::new(self.d());
            for k in 0..r.n {
                let p = r.rep(k);
                positives.push(p, f64::from(self.best(p, &skip).0) + self.config.margin_new);
            }
            let negatives = self.anchor_bounds(doc, &Hinges::new(self.d()));
            let (w, s) = self.solve_row(&positives, &negatives, negatives.len(), None)?;
            stats.merge(&s);
            let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
            self.row_patch(doc, &w32, format!("row.{doc}"), patches, payload)?;
            self.row_changed(doc);
            self.add_anchors(inputs, &r, doc);
        }
        stats.write(details);
        Ok(())
    }

    /// Upper bounds for the anchors when row `doc` is solved: every anchor whose best docid is another
    /// document must keep it by `margin_old`; anchors about `doc` itself (or currently won by it) are left
    /// out, except `extra` (rep, bound) pairs.
    fn anchor_bounds(&self, doc: usize, extra: &Hinges) -> Hinges {
        let a = &self.anchors;
        let mut out = Hinges::new(self.d());
        for i in 0..a.reps.n {
            if a.arg[i] != doc && a.own[i] != Some(doc) && a.arg[i] != NONE {
                out.push(a.reps.rep(i), f64::from(a.top[i]) - self.config.margin_old);
            }
        }
        for (o, b) in extra.iter() {
            out.push(o, b);
        }
        out
    }

    /// IncDSI's problem ([`linalg::HingeObjective`]): minimise `l2/2 |w - w_ref|^2 + 1/2 sum_pos max(0, t -
    /// w.p)^2 + old_weight/2 sum_neg max(0, w.o - b)^2` by L-BFGS.
    /// The first `kept` negatives are anchors that must keep their docid (bound `top - margin_old`), the
    /// others content that must fall below its best other docid (bound `best - delete_margin`); a bound
    /// counts as violated when its input ends up won by the row.
    fn solve_row(
        &self,
        positives: &Hinges,
        negatives: &Hinges,
        kept: usize,
        reference: Option<Vec<f64>>,
    ) -> Result<(Vec<f64>, SolveStats)> {
        let d = self.d();
        let mean_norm = self.mean_row_norm();
        let w0 = match &reference {
            Some(r) => r.clone(),
            None => {
                let mut m = vec![0.0; d];
                for (p, _) in positives.iter() {
                    let n = p
                        .iter()
                        .map(|&v| f64::from(v) * f64::from(v))
                        .sum::<f64>()
                        .sqrt()
                        .max(1e-12);
                    for (a, b) in m.iter_mut().zip(p) {
                        *a += f64::from(*b) / n;
                    }
                }
                let n = linalg::norm(&m).max(1e-12);
                m.iter().map(|v| v / n * mean_norm).collect()
            }
        };
        let wref = reference.unwrap_or_else(|| vec![0.0; d]);
        let objective = linalg::HingeObjective {
            positives,
            negatives,
            l2: self.config.l2,
            old_weight: self.config.old_weight,
            reference: &wref,
        };
        let min = linalg::lbfgs(
            |w, g| objective.value_grad(w, g),
            w0,
            self.config.max_iter,
            10,
            1e-6,
        );
        let w = min.x;
        let stats = SolveStats {
            positives: positives.len(),
            satisfied: positives
                .iter()
                .filter(|(p, t)| linalg::dot_mixed(p, &w) >= t - self.config.margin_new)
                .count(),
            negatives: negatives.len(),
            violated: negatives
                .iter()
                .enumerate()
                .filter(|(i, (o, b))| {
                    let margin = if *i < kept {
                        self.config.margin_old
                    } else {
                        self.config.delete_margin
                    };
                    linalg::dot_mixed(o, &w) > b + margin
                })
                .count(),
            iterations: min.iterations,
            solves: 1,
        };
        if !w.iter().all(|v| v.is_finite()) {
            return Err(EditError::Invalid("the row solve diverged".into()));
        }
        Ok((w, stats))
    }

    fn mean_row_norm(&self) -> f64 {
        let n = self.model.scheme.len();
        let live: Vec<usize> = (0..n)
            .filter(|&i| !self.model.scheme.is_deleted(i))
            .filter(|&i| self.row(i).iter().any(|&v| v != 0.0))
            .collect();
        if live.is_empty() {
            return 1.0;
        }
        live.iter()
            .map(|&i| f64::from(dotf(self.row(i), self.row(i))).sqrt())
            .sum::<f64>()
            / live.len() as f64
    }

    fn add_rank_one(
        &mut self,
        docs: &[NewDocument],
        patches: &mut Vec<Patch>,
        payload: &mut BTreeMap<String, HostTensor>,
        details: &mut BTreeMap<String, f64>,
    ) -> Result<()> {
        let d = self.d();
        let mut all_inputs = Vec::new();
        for doc in docs {
            all_inputs.push(self.inputs(&doc.full_text(), &doc.text, &doc.queries)?);
        }
        let first = self.append(docs, patches, payload)?;
        // fresh rows: the live rows' centroid plus a seeded random deviation of typical length
        let n = self.model.scheme.len();
        let live: Vec<usize> = (0..first)
            .filter(|&i| !self.model.scheme.is_deleted(i))
            .collect();
        let mut mu = vec![0f64; d];
        for &i in &live {
            for (m, &v) in mu.iter_mut().zip(self.row(i)) {
                *m += f64::from(v) / live.len().max(1) as f64;
            }
        }
        let spread = live
            .iter()
            .map(|&i| {
                self.row(i)
                    .iter()
                    .zip(&mu)
                    .map(|(&v, m)| (f64::from(v) - m).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>()
            / live.len().max(1) as f64;
        for doc in first..n {
            let mut rng = ChaCha8Rng::seed_from_u64(
                self.config.seed ^ (doc as u64).wrapping_mul(0x9E37_79B9),
            );
            let z: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            let zn = linalg::norm(&z).max(1e-12);
            let w: Vec<f32> = (0..d)
                .map(|j| (mu[j] + spread * z[j] / zn) as f32)
                .collect();
            self.row_patch(doc, &w, format!("row.{doc}"), patches, payload)?;
            self.row_changed(doc);
        }
        let layer = self.model.model.decoder.blocks.len() - 1;
        let tensor = tensors::wo_name(layer);
        let rounds = self.config.rounds.max(1);
        let mut last_reps = Vec::new();
        for round in 0..rounds {
            // keys, residuals and the residual shift each new document needs
            let mut keys: Vec<Vec<f64>> = Vec::new();
            let mut shifts: Vec<Vec<f64>> = Vec::new();
            last_reps.clear();
            let mut satisfied = 0;
            let mut total = 0;
            for (i, inputs) in all_inputs.iter().enumerate() {
                let doc = first + i;
                let r = reps::compute(&self.model.model, inputs, true, self.config.batch)?;
                let (delta, ok) = self.find_shift(&r, doc);
                satisfied += ok;
                total += r.n;
                for k in 0..r.n {
                    keys.push(to_f64(r.key(k)));
                    shifts.push(delta.clone());
                }
                last_reps.push(r);
            }
            details.insert(format!("round{round}_satisfied_before"), satisfied as f64);
            details.insert("inputs".into(), total as f64);
            if satisfied == total && round > 0 {
                break;
            }
            let (u, v) = self.memit_update(&keys, &shifts)?;
            let key = format!("wo.{round}");
            payload.insert(format!("{key}.u"), u);
            payload.insert(format!("{key}.v"), v);
            let empty = BTreeMap::new();
            let patch = Patch::LowRank {
                tensor: tensor.clone(),
                key,
            };
            self.apply(&patch, payload, &empty)?;
            patches.push(patch);
            let (uu, vv) = (
                get(payload, &format!("wo.{round}.u"))?.clone(),
                get(payload, &format!("wo.{round}.v"))?.clone(),
            );
            self.shift_anchors(&uu, &vv);
        }
        // the new documents' inputs become anchors for later edits
        for (i, inputs) in all_inputs.into_iter().enumerate() {
            let r = reps::compute(&self.model.model, &inputs, true, self.config.batch)?;
            self.add_anchors(inputs, &r, first + i);
        }
        self.anchors_stale = false;
        Ok(())
    }

    /// Host version of the decoder's final norm and output scale.
    fn final_rep(&self, z: &[f64]) -> Vec<f64> {
        let (g, eps) = (&self.final_norm.0, self.final_norm.1);
        let d = z.len() as f64;
        let r = (z.iter().map(|v| v * v).sum::<f64>() / d + eps).sqrt();
        let s = f64::from(self.model.model.output_scale());
        z.iter()
            .zip(g)
            .map(|(v, &gi)| s * f64::from(gi) * v / r)
            .collect()
    }

    /// After `wo += u @ v`: the anchors' residuals shift by `key @ u @ v`; their reps and best docids follow.
    fn shift_anchors(&mut self, u: &HostTensor, v: &HostTensor) {
        let a = &mut self.anchors;
        if a.reps.n == 0 || a.reps.d_ff == 0 {
            return;
        }
        let (d, dff, k) = (a.reps.d, a.reps.d_ff, u.shape[1]);
        let g = self.final_norm.0.clone();
        let eps = self.final_norm.1;
        let s = f64::from(self.model.model.output_scale());
        for i in 0..a.reps.n {
            let key = &a.reps.key[i * dff..(i + 1) * dff];
            let mut coef = vec![0f32; k];
            for (j, &kv) in key.iter().enumerate() {
                if kv != 0.0 {
                    for (c, &uv) in coef.iter_mut().zip(&u.values[j * k..(j + 1) * k]) {
                        *c += kv * uv;
                    }
                }
            }
            let resid = &mut a.reps.resid[i * d..(i + 1) * d];
            for (c, row) in coef.iter().zip(v.values.chunks(d)) {
                for (rv, &x) in resid.iter_mut().zip(row) {
                    *rv += c * x;
                }
            }
            let r =
                (resid.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / d as f64 + eps).sqrt();
            let rep = &mut a.reps.rep[i * d..(i + 1) * d];
            for j in 0..d {
                rep[j] = (s * f64::from(g[j]) * f64::from(resid[j]) / r) as f32;
            }
        }
        self.refresh_tops();
    }

    /// The residual shift (shared by a document's inputs) that makes the decoder emit `doc`: minimises the
    /// mean cross-entropy of `doc` over live docids plus `shift_l2 |delta|^2`. Returns it and how many
    /// inputs already rank `doc` first with it.
    fn find_shift(&self, r: &Reps, doc: usize) -> (Vec<f64>, usize) {
        let d = self.d();
        let live: Vec<usize> = (0..self.model.scheme.len())
            .filter(|&i| !self.model.scheme.is_deleted(i))
            .collect();
        let rows: Vec<Vec<f64>> = live.iter().map(|&i| to_f64(self.row(i))).collect();
        let target = live.iter().position(|&i| i == doc).unwrap_or(0);
        let xs: Vec<Vec<f64>> = (0..r.n).map(|i| to_f64(r.resid(i))).collect();
        let g: Vec<f64> = to_f64(&self.final_norm.0);
        let eps = self.final_norm.1;
        let s = f64::from(self.model.model.output_scale());
        let xnorm = xs.iter().map(|x| linalg::norm(x)).sum::<f64>() / xs.len().max(1) as f64;
        let l2 = self.config.shift_l2 / (xnorm * xnorm).max(1e-12);
        let n = xs.len().max(1) as f64;
        let min = linalg::lbfgs(
            |delta, grad| {
                let mut f = 0.5 * l2 * linalg::dot(delta, delta);
                for j in 0..d {
                    grad[j] = l2 * delta[j];
                }
                for x in &xs {
                    let z: Vec<f64> = (0..d).map(|j| x[j] + delta[j]).collect();
                    let rr = (z.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
                    let y: Vec<f64> = (0..d).map(|j| s * g[j] * z[j] / rr).collect();
                    let logits: Vec<f64> = rows.iter().map(|row| linalg::dot(row, &y)).collect();
                    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let se: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                    f += (m + se.ln() - logits[target]) / n;
                    // dL/dy = sum_k (p_k - 1[k = t]) row_k
                    let mut dy = vec![0f64; d];
                    for (k, row) in rows.iter().enumerate() {
                        let p = (logits[k] - m).exp() / se - if k == target { 1.0 } else { 0.0 };
                        if p.abs() > 1e-12 {
                            for j in 0..d {
                                dy[j] += p * row[j];
                            }
                        }
                    }
                    // back through y = s g z / rr
                    let gdy: Vec<f64> = (0..d).map(|j| g[j] * dy[j]).collect();
                    let zg = linalg::dot(&z, &gdy);
                    for j in 0..d {
                        grad[j] += (s * gdy[j] / rr - s * z[j] * zg / (d as f64 * rr.powi(3))) / n;
                    }
                }
                f
            },
            vec![0.0; d],
            self.config.max_iter,
            10,
            1e-7,
        );
        let delta = min.x;
        let ok = xs
            .iter()
            .filter(|x| {
                let z: Vec<f64> = (0..d).map(|j| x[j] + delta[j]).collect();
                let y = self.final_rep(&z);
                let lt = linalg::dot(&rows[target], &y);
                rows.iter()
                    .enumerate()
                    .all(|(k, row)| k == target || linalg::dot(row, &y) < lt)
            })
            .count();
        (delta, ok)
    }

    /// MEMIT's closed form for one layer: `delta_W = (lambda K0 K0^T + K K^T)^-1 K R`, as `u @ v` with
    /// `u = (...)^-1 K` (`[d_ff, n]`) and `v = R` (`[n, d]`), by Woodbury on the anchors' Cholesky factor.
    fn memit_update(
        &mut self,
        keys: &[Vec<f64>],
        shifts: &[Vec<f64>],
    ) -> Result<(HostTensor, HostTensor)> {
        let dff = keys.first().map_or(0, Vec::len);
        let n = keys.len();
        let d = self.d();
        if self.a0.is_none() {
            self.a0 = Some(self.anchor_factor(dff)?);
        }
        let l = self
            .a0
            .as_ref()
            .ok_or_else(|| EditError::Invalid("no factor".into()))?;
        // b = A0^-1 K  ([dff, n], column j = A0^-1 k_j)
        let mut b = vec![0f64; dff * n];
        let mut cols: Vec<Vec<f64>> = Vec::with_capacity(n);
        for k in keys {
            let mut x = k.clone();
            linalg::cholesky_solve(l, dff, &mut x);
            cols.push(x);
        }
        // m = I + K^T A0^-1 K  ([n, n])
        let mut m = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = linalg::dot(&keys[i], &cols[j]) + if i == j { 1.0 } else { 0.0 };
            }
        }
        // u = b m^-1: solve m^T x = row of b, row by row (m is symmetric)
        for (j, c) in cols.iter().enumerate() {
            for i in 0..dff {
                b[i * n + j] = c[i];
            }
        }
        let lm = linalg::cholesky(&m, n)
            .ok_or_else(|| EditError::Invalid("singular key system in the rank-one edit".into()))?;
        let mut u = vec![0f32; dff * n];
        for i in 0..dff {
            let mut x = b[i * n..(i + 1) * n].to_vec();
            linalg::cholesky_solve(&lm, n, &mut x);
            for j in 0..n {
                u[i * n + j] = x[j] as f32;
            }
        }
        let v: Vec<f32> = shifts.iter().flatten().map(|&x| x as f32).collect();
        debug_assert_eq!(v.len(), n * d);
        Ok((
            HostTensor::new(vec![dff, n], u),
            HostTensor::new(vec![n, d], v),
        ))
    }

    /// Cholesky factor of `lambda K0 K0^T + eps I` over the anchors' keys (`eps I` alone without anchors).
    fn anchor_factor(&self, dff: usize) -> Result<Vec<f64>> {
        let a = &self.anchors;
        let mut c = vec![0f64; dff * dff];
        if a.reps.n > 0 && a.reps.d_ff == dff {
            for i in 0..a.reps.n {
                let k = to_f64(a.reps.key(i));
                for (p, &kp) in k.iter().enumerate() {
                    if kp != 0.0 {
                        let row = &mut c[p * dff..(p + 1) * dff];
                        for (q, &kq) in k.iter().enumerate() {
                            row[q] += self.config.anchor_weight * kp * kq;
                        }
                    }
                }
            }
        } else {
            tracing::warn!("rank-one edit without anchors: nothing protects existing documents (call calibrate)");
        }
        let trace: f64 = (0..dff).map(|i| c[i * dff + i]).sum::<f64>() / dff as f64;
        let eps = (trace * 1e-3).max(1e-6);
        for i in 0..dff {
            c[i * dff + i] += eps;
        }
        linalg::cholesky(&c, dff).ok_or_else(|| {
            EditError::Invalid("the anchors' key matrix is not positive definite".into())
        })
    }

    // ----- delete and change ------------------------------------------------------------------

    /// Deletes documents (one edit): they are marked deleted in the docid scheme, so the constrained
    /// decoder can never return them, and (atomic docids) their output rows are replaced by a row whose
    /// logit stays `delete_margin` below the best other docid on every anchor and on `texts` (the deleted
    /// documents' own texts or queries, optional), so the exported model no longer retrieves them either.
    /// Multi-token docids: only the scheme (decoder) guarantee.
    pub fn delete(&mut self, docids: &[String], texts: &[String]) -> Result<EditRecord> {
        if docids.is_empty() {
            return Err(EditError::Invalid("no documents to delete".into()));
        }
        let mut docs = Vec::new();
        let mut seen = BTreeSet::new();
        for d in docids {
            let i = self
                .model
                .scheme
                .index_of(d)
                .ok_or_else(|| EditError::UnknownDocid(d.clone()))?;
            if self.model.scheme.is_deleted(i) || !seen.insert(i) {
                return Err(EditError::AlreadyDeleted(d.clone()));
            }
            docs.push(i);
        }
        self.fresh_anchors()?;
        let t = Instant::now();
        let mut patches = Vec::new();
        let mut payload = BTreeMap::new();
        let mut details = BTreeMap::new();
        let r = self.delete_inner(
            docids,
            &docs,
            texts,
            &mut patches,
            &mut payload,
            &mut details,
        );
        if let Err(e) = r {
            self.rollback(patches, payload);
            return Err(e);
        }
        Ok(self.commit(
            EditOp::Delete,
            if self.model.scheme.is_atomic() {
                "trie+row_suppress"
            } else {
                "trie"
            },
            docids.to_vec(),
            patches,
            payload,
            t.elapsed().as_secs_f64(),
            details,
            Vec::new(),
        ))
    }

    fn delete_inner(
        &mut self,
        docids: &[String],
        docs: &[usize],
        texts: &[String],
        patches: &mut Vec<Patch>,
        payload: &mut BTreeMap<String, HostTensor>,
        details: &mut BTreeMap<String, f64>,
    ) -> Result<()> {
        let atomic = self.model.scheme.is_atomic()
            && self.model.scheme.vocab_size() == self.model.model.config.vocab_size;
        self.push_patch(
            Patch::MarkDeleted {
                docids: docids.to_vec(),
            },
            patches,
            payload,
        )?;
        if !atomic {
            return Ok(());
        }
        let extra = if texts.is_empty() {
            Reps::default()
        } else {
            let src = reps::encode_texts(
                &self.model.tok,
                texts,
                self.max_len(),
                self.model.scheme.eos,
            )?;
            reps::compute(&self.model.model, &src, false, self.config.batch)?
        };
        let skip: BTreeSet<usize> = docs.iter().copied().collect();
        // every anchor (and the given texts): the deleted row must stay below its best live docid
        let mut cons = Hinges::new(self.d());
        for i in 0..self.anchors.reps.n {
            let rep = self.anchors.reps.rep(i);
            cons.push(rep, f64::from(self.best(rep, &skip).0));
        }
        for i in 0..extra.n {
            let rep = extra.rep(i);
            cons.push(rep, f64::from(self.best(rep, &skip).0));
        }
        let d = self.d();
        let mut dir = vec![0f64; d];
        if cons.is_empty() {
            for i in 0..self.model.scheme.len() {
                if !skip.contains(&i) && !self.model.scheme.is_deleted(i) {
                    for (a, &b) in dir.iter_mut().zip(self.row(i)) {
                        *a += f64::from(b);
                    }
                }
            }
        } else {
            for (o, _) in cons.iter() {
                let o = to_f64(o);
                let n = linalg::norm(&o).max(1e-12);
                for (a, b) in dir.iter_mut().zip(&o) {
                    *a += b / n;
                }
            }
        }
        let n = linalg::norm(&dir).max(1e-12);
        dir.iter_mut().for_each(|v| *v /= n);
        let m = self.config.delete_margin;
        let mut c = self.mean_row_norm();
        let mut all_positive = true;
        for (o, best) in cons.iter() {
            let p = linalg::dot_mixed(o, &dir);
            if p > 1e-9 {
                c = c.max((m - best) / p);
            } else {
                all_positive = false;
            }
        }
        let w0: Vec<f64> = dir.iter().map(|v| -c * v).collect();
        let w = if all_positive || cons.is_empty() {
            w0
        } else {
            let mut bounds = Hinges::new(self.d());
            for (o, b) in cons.iter() {
                bounds.push(o, b - m);
            }
            let (w, s) = self.solve_row(&Hinges::new(self.d()), &bounds, 0, Some(w0))?;
            details.insert("violated".into(), s.violated as f64);
            w
        };
        let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        for &doc in docs {
            self.row_patch(doc, &w32, format!("row.{doc}"), patches, payload)?;
            self.row_changed(doc);
        }
        details.insert("constraints".into(), cons.len() as f64);
        details.insert("row_norm".into(), linalg::norm(&w));
        Ok(())
    }

    /// Changes documents' content (one edit): each docid's output row is re-solved (IncDSI's problem) so
    /// that inputs from the new content beat every other docid by `margin_new`, content only in the old
    /// version (the old text's sentences the new text drops, and the document's anchors as
    /// [`ChangedDocument::old_text`] says) falls `delete_margin` below its best other docid, and other anchors
    /// keep their docids. A docid changed twice in one edit is refused. Atomic docids.
    pub fn change(&mut self, changes: &[ChangedDocument]) -> Result<EditRecord> {
        self.require_atomic("changing documents")?;
        if changes.is_empty() {
            return Err(EditError::Invalid("no documents to change".into()));
        }
        let mut docs = Vec::new();
        for c in changes {
            let i = self
                .model
                .scheme
                .index_of(&c.docid)
                .ok_or_else(|| EditError::UnknownDocid(c.docid.clone()))?;
            if self.model.scheme.is_deleted(i) {
                return Err(EditError::AlreadyDeleted(c.docid.clone()));
            }
            if docs.contains(&i) {
                return Err(EditError::Invalid(format!(
                    "document {:?} is changed twice in one edit",
                    c.docid
                )));
            }
            docs.push(i);
        }
        self.fresh_anchors()?;
        let t = Instant::now();
        let mut patches = Vec::new();
        let mut payload = BTreeMap::new();
        let mut details = BTreeMap::new();
        let r = self.change_inner(changes, &docs, &mut patches, &mut payload, &mut details);
        if let Err(e) = r {
            self.rollback(patches, payload);
            return Err(e);
        }
        Ok(self.commit(
            EditOp::Change,
            "incdsi",
            changes.iter().map(|c| c.docid.clone()).collect(),
            patches,
            payload,
            t.elapsed().as_secs_f64(),
            details,
            changes
                .iter()
                .map(|c| NewDocument {
                    docid: c.docid.clone(),
                    title: c.title.clone(),
                    text: c.text.clone(),
                    queries: c.queries.clone(),
                })
                .collect(),
        ))
    }

    fn change_inner(
        &mut self,
        changes: &[ChangedDocument],
        docs: &[usize],
        patches: &mut Vec<Patch>,
        payload: &mut BTreeMap<String, HostTensor>,
        details: &mut BTreeMap<String, f64>,
    ) -> Result<()> {
        let mut stats = SolveStats::default();
        for (c, &doc) in changes.iter().zip(docs) {
            let full = if c.title.is_empty() {
                c.text.clone()
            } else {
                format!("{} {}", c.title, c.text)
            };
            let inputs = self.inputs(&full, &c.text, &c.queries)?;
            let r = reps::compute(&self.model.model, &inputs, true, self.config.batch)?;
            let skip: BTreeSet<usize> = [doc].into();
            let mut positives = Hinges::new(self.d());
            for k in 0..r.n {
                let p = r.rep(k);
                positives.push(p, f64::from(self.best(p, &skip).0) + self.config.margin_new);
            }
            // old-only content: sentences of the old text absent from the new one, and the doc's anchors
            // that are not content of the new version
            let mut old_extra = Hinges::new(self.d());
            let mut old_only_reps = Vec::new();
            if let Some(old) = &c.old_text {
                let new_sents: BTreeSet<String> = reps::sentences(&c.text, 1).into_iter().collect();
                let old_only: Vec<String> = reps::sentences(old, self.config.min_sentence_words)
                    .into_iter()
                    .filter(|s| !new_sents.contains(s))
                    .collect();
                if !old_only.is_empty() {
                    let src = reps::encode_texts(
                        &self.model.tok,
                        &old_only,
                        self.max_len(),
                        self.model.scheme.eos,
                    )?;
                    let or = reps::compute(&self.model.model, &src, false, self.config.batch)?;
                    for k in 0..or.n {
                        let p = or.rep(k);
                        old_extra.push(
                            p,
                            f64::from(self.best(p, &skip).0) - self.config.delete_margin,
                        );
                        old_only_reps.push(p.to_vec());
                    }
                }
            }
            // The new version's content (its inputs and its sentences, as the anchors were encoded): an
            // anchor of the document that is still its content is a positive above and must not also be
            // pushed below the other documents. With the removed content known (`old_text`), an anchor
            // that is neither (e.g. a training query) is pushed down only when it is at least as close to
            // the removed content as to the new one, and otherwise left free.
            let mut new_content: BTreeSet<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
            let new_sents = reps::encode_texts(
                &self.model.tok,
                &reps::sentences(&c.text, self.config.min_sentence_words),
                self.max_len(),
                self.model.scheme.eos,
            )?;
            new_content.extend(new_sents.iter().map(Vec::as_slice));
            let closest = |q: &[f32], set: &mut dyn Iterator<Item = &[f32]>| {
                set.map(|p| linalg::cosine(q, p))
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            for i in 0..self.anchors.reps.n {
                if self.anchors.own[i] != Some(doc)
                    || new_content.contains(self.anchors.sources[i].as_slice())
                {
                    continue;
                }
                let p = self.anchors.reps.rep(i);
                if c.old_text.is_some() {
                    // the removed content is known: nothing removed leaves every such anchor free
                    let to_old = closest(p, &mut old_only_reps.iter().map(Vec::as_slice));
                    let to_new = closest(p, &mut (0..r.n).map(|k| r.rep(k)));
                    if old_only_reps.is_empty() || to_old < to_new {
                        continue;
                    }
                }
                old_extra.push(
                    p,
                    f64::from(self.best(p, &skip).0) - self.config.delete_margin,
                );
            }
            let negatives = self.anchor_bounds(doc, &old_extra);
            let kept = negatives.len() - old_extra.len();
            let (w, s) = self.solve_row(&positives, &negatives, kept, None)?;
            stats.merge(&s);
            let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
            self.row_patch(doc, &w32, format!("row.{doc}"), patches, payload)?;
            // the document's old anchors no longer describe it
            for o in &mut self.anchors.own {
                if *o == Some(doc) {
                    *o = None;
                }
            }
            self.refresh_tops();
            self.add_anchors(inputs, &r, doc);
        }
        stats.write(details);
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
struct SolveStats {
    positives: usize,
    satisfied: usize,
    negatives: usize,
    violated: usize,
    iterations: usize,
    solves: usize,
}

impl SolveStats {
    fn merge(&mut self, o: &SolveStats) {
        self.positives += o.positives;
        self.satisfied += o.satisfied;
        self.negatives += o.negatives;
        self.violated += o.violated;
        self.iterations += o.iterations;
        self.solves += o.solves;
    }

    fn write(&self, details: &mut BTreeMap<String, f64>) {
        details.insert("inputs".into(), self.positives as f64);
        details.insert("inputs_won".into(), self.satisfied as f64);
        details.insert("anchor_constraints".into(), self.negatives as f64);
        details.insert("anchors_violated".into(), self.violated as f64);
        details.insert(
            "lbfgs_iterations_mean".into(),
            self.iterations as f64 / self.solves.max(1) as f64,
        );
    }
}

fn get<'p>(payload: &'p BTreeMap<String, HostTensor>, key: &str) -> Result<&'p HostTensor> {
    payload
        .get(key)
        .ok_or_else(|| EditError::Invalid(format!("edit payload has no tensor {key:?}")))
}

/// An atomic scheme over `docids`, with the token offset, eos and deletions of `old`; its token names extend
/// the old ones the way they are made: genir's `<docid_N>`, or the text every old name puts around its docid
/// (a checkpoint imported from Python DSI code: `@DOC_ID_<docid>@`).
fn rebuild_scheme(old: &DocidScheme, docids: Vec<String>) -> Result<DocidScheme> {
    let genir_names = old
        .token_names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("<docid_{i}>"));
    let names: Vec<String> = if genir_names {
        (0..docids.len()).map(|i| format!("<docid_{i}>")).collect()
    } else {
        let pattern = DocidTokenPattern::of_scheme(old).ok_or_else(|| {
            EditError::Invalid(
                "the model's docid token names are neither genir's <docid_N> nor one text around each docid: cannot name new ones".into(),
            )
        })?;
        docids.iter().map(|d| pattern.token(d)).collect()
    };
    let k = old.n_tokens().min(names.len());
    if names[..k] != old.token_names[..k] {
        return Err(EditError::Invalid(
            "the model's docid tokens do not name its first docids in order: cannot extend them"
                .into(),
        ));
    }
    let mut s = DocidScheme::atomic_over_tokens(docids, names, old.token_offset, old.eos)?;
    s.deleted = old
        .deleted
        .iter()
        .filter(|d| s.index_of(d).is_some())
        .cloned()
        .collect();
    Ok(s)
}

/// The tokenizer with `names` appended as special tokens from id `first`.
fn add_tokens(tok: &TextTokenizer, names: &[String], first: u32) -> Result<TextTokenizer> {
    let mut inner = tok.inner().clone();
    if inner.get_vocab_size(true) != first as usize {
        return Err(EditError::Invalid(format!(
            "the tokenizer has {} tokens but the model's vocabulary {first} rows",
            inner.get_vocab_size(true)
        )));
    }
    for n in names {
        if inner.token_to_id(n).is_some() {
            return Err(EditError::Invalid(format!(
                "token {n} already exists in the tokenizer"
            )));
        }
    }
    let added: Vec<AddedToken> = names
        .iter()
        .map(|n| AddedToken::from(n.as_str(), true))
        .collect();
    inner.add_special_tokens(&added);
    if names.first().and_then(|n| inner.token_to_id(n)) != Some(first) {
        return Err(EditError::Invalid(
            "new docid tokens did not get the next ids".into(),
        ));
    }
    Ok(TextTokenizer::from_tokenizer(
        inner,
        tok.path().to_path_buf(),
    ))
}

/// The tokenizer without the added tokens of id `from` and above.
fn remove_tokens(tok: &TextTokenizer, from: u32) -> Result<TextTokenizer> {
    let text = tok
        .inner()
        .to_string(false)
        .map_err(|e| EditError::Invalid(format!("tokenizer: {e}")))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EditError::Invalid(format!("tokenizer: {e}")))?;
    if let Some(list) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        list.retain(|t| {
            t.get("id")
                .and_then(|i| i.as_u64())
                .is_some_and(|i| i < u64::from(from))
        });
    }
    let inner: tokenizers::Tokenizer = v
        .to_string()
        .parse()
        .map_err(|e| EditError::Invalid(format!("tokenizer: {e}")))?;
    Ok(TextTokenizer::from_tokenizer(
        inner,
        tok.path().to_path_buf(),
    ))
}
