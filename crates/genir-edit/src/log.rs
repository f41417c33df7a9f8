//! The edit log kept beside a model: `edits/log.json` lists every edit (what, which documents, how, how long,
//! and the exact weight patches it made); `edits/NNNNNN.safetensors` holds each edit's tensors, and
//! `edits/base.safetensors` the original value of every matrix that a low-rank edit touched.
//!
//! A patch stores its result, not a recipe, so replaying the log on another copy of the base model gives
//! bit-identical weights, and undoing restores the original bits: row patches keep the rows they overwrote;
//! a low-rank patch on a matrix is undone by restoring the matrix's base value and re-applying the earlier
//! low-rank patches on it (in the same order, with the same host arithmetic).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use genir_io::write_atomic;
use genir_model::weights::{write_safetensors, HostTensor, WeightFile};
use serde::{Deserialize, Serialize};

use crate::editor::NewDocument;
use crate::error::{EditError, Result};

/// Folder of the edit log inside a model folder.
pub const EDITS_DIR: &str = "edits";
/// The log's index file inside [`EDITS_DIR`].
pub const LOG_FILE: &str = "log.json";
/// Base values of matrices touched by low-rank patches, inside [`EDITS_DIR`].
pub const BASE_FILE: &str = "base.safetensors";
const FORMAT: &str = "genir-edit-log";
const VERSION: u32 = 1;

/// What an edit did to the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOp {
    /// New documents with new docids.
    Add,
    /// Documents removed from the index.
    Delete,
    /// Documents whose content changed (same docids).
    Change,
}

impl std::fmt::Display for EditOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EditOp::Add => "add",
            EditOp::Delete => "delete",
            EditOp::Change => "change",
        })
    }
}

/// One change to the model, scheme or tokenizer. Tensor payloads live in the record's safetensors file
/// under the keys named here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "patch", rename_all = "snake_case")]
pub enum Patch {
    /// New atomic docids appended to the scheme (tokens `<docid_{index}>` added to the tokenizer) and as
    /// many zero rows appended to the vocabulary tables.
    AppendDocids {
        /// The new docids, in order.
        docids: Vec<String>,
        /// Vocabulary size before.
        vocab_before: usize,
    },
    /// Documents marked deleted in the scheme (never returned by the searcher).
    MarkDeleted {
        /// The docids.
        docids: Vec<String>,
    },
    /// Rows of a tensor overwritten: payload `{key}.before` and `{key}.after`, both `[rows.len(), cols]`.
    Rows {
        /// Tensor name (see [`crate::tensors`]).
        tensor: String,
        /// Row indices.
        rows: Vec<usize>,
        /// Payload key prefix.
        key: String,
    },
    /// A matrix updated by `w += u @ v`: payload `{key}.u` `[r, k]` and `{key}.v` `[k, c]`.
    LowRank {
        /// Tensor name (see [`crate::tensors`]).
        tensor: String,
        /// Payload key prefix.
        key: String,
    },
}

/// One entry of the edit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditRecord {
    /// Sequence number, from 1.
    pub id: u64,
    /// Add, delete or change.
    pub op: EditOp,
    /// The method (`incdsi`, `rank_one`, `row_suppress`, ...).
    pub method: String,
    /// The documents edited.
    pub docids: Vec<String>,
    /// Wall-clock seconds the edit took (computing it, not saving).
    pub seconds: f64,
    /// Free-form details (constraint satisfaction, iterations, ...).
    #[serde(default)]
    pub details: BTreeMap<String, f64>,
    /// The patches, applied in order (undone in reverse).
    pub patches: Vec<Patch>,
    /// Payload file name inside [`EDITS_DIR`].
    pub payload: String,
    /// The content the edit gave its documents (additions and changes: title, text, example queries), so
    /// that a later session knows the documents the model now holds (absent in older logs and for
    /// deletions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<NewDocument>,
}

/// The log as stored in `log.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LogFile {
    format: String,
    version: u32,
    /// Vocabulary size of the base model.
    base_vocab: usize,
    /// Documents of the base model.
    base_docs: usize,
    records: Vec<EditRecord>,
    /// The id the next edit gets (ids are never reused, also after an undo; absent in older logs).
    #[serde(default)]
    next_id: u64,
}

/// An edit log with its payloads in memory.
#[derive(Clone, Debug, Default)]
pub struct EditLog {
    /// Vocabulary size of the unedited model.
    pub base_vocab: usize,
    /// Number of documents of the unedited model.
    pub base_docs: usize,
    /// The edits, oldest first.
    pub records: Vec<EditRecord>,
    /// Per record id: its tensors.
    pub payloads: BTreeMap<u64, BTreeMap<String, HostTensor>>,
    /// Base values of matrices touched by low-rank patches.
    pub base: BTreeMap<String, HostTensor>,
    /// The lowest id a new record may take: above every id the log ever held, so an undone edit's id is
    /// never given to another edit (a replay compares ids to know what a copy already has).
    pub id_floor: u64,
}

impl EditLog {
    /// An empty log for a model of `vocab` rows and `docs` documents.
    pub fn new(vocab: usize, docs: usize) -> Self {
        Self {
            base_vocab: vocab,
            base_docs: docs,
            ..Default::default()
        }
    }

    /// The next record id.
    pub fn next_id(&self) -> u64 {
        self.records
            .last()
            .map_or(1, |r| r.id + 1)
            .max(self.id_floor)
            .max(1)
    }

    /// A tensor of a record's payload, or an error naming the payload file.
    pub fn tensor(
        &self,
        record: &EditRecord,
        key: &str,
        dir: Option<&Path>,
    ) -> Result<&HostTensor> {
        self.payloads
            .get(&record.id)
            .and_then(|p| p.get(key))
            .ok_or_else(|| {
                let path = dir
                    .map(|d| d.join(EDITS_DIR).join(&record.payload))
                    .unwrap_or_else(|| PathBuf::from(&record.payload));
                EditError::log(path, format!("edit {} has no tensor {key:?}", record.id))
            })
    }

    /// Whether a model folder has an edit log.
    pub fn exists(model_dir: &Path) -> bool {
        model_dir.join(EDITS_DIR).join(LOG_FILE).exists()
    }

    /// Reads the log of a model folder (every payload included). Errors name the corrupt file.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let dir = model_dir.join(EDITS_DIR);
        let path = dir.join(LOG_FILE);
        let text = std::fs::read(&path).map_err(EditError::io(&path))?;
        let file: LogFile = serde_json::from_slice(&text)
            .map_err(|e| EditError::log(&path, format!("not a genir edit log: {e}")))?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(EditError::log(
                &path,
                format!(
                    "format {:?} version {} (expected {FORMAT:?} version {VERSION})",
                    file.format, file.version
                ),
            ));
        }
        let mut prev = 0;
        for r in &file.records {
            if r.id <= prev {
                return Err(EditError::log(
                    &path,
                    format!("record ids are not increasing at id {}", r.id),
                ));
            }
            prev = r.id;
        }
        let read = |p: &Path| -> Result<BTreeMap<String, HostTensor>> {
            let w = WeightFile::read_safetensors(p)
                .map_err(|e| EditError::log(p, format!("unreadable payload: {e}")))?;
            let mut out = BTreeMap::new();
            for name in w.names() {
                if let Some(t) = w.get(&name) {
                    out.insert(name.clone(), t.clone());
                }
            }
            Ok(out)
        };
        let mut payloads = BTreeMap::new();
        for r in &file.records {
            let p = dir.join(&r.payload);
            if !p.exists() {
                return Err(EditError::log(
                    &p,
                    format!("payload of edit {} is missing", r.id),
                ));
            }
            payloads.insert(r.id, read(&p)?);
        }
        let base_path = dir.join(BASE_FILE);
        let base = if base_path.exists() {
            read(&base_path)?
        } else {
            BTreeMap::new()
        };
        let log = Self {
            base_vocab: file.base_vocab,
            base_docs: file.base_docs,
            records: file.records,
            payloads,
            base,
            id_floor: file.next_id,
        };
        log.check(&dir)?;
        Ok(log)
    }

    /// Checks that every tensor the patches name is in the payloads.
    fn check(&self, dir: &Path) -> Result<()> {
        for r in &self.records {
            for p in &r.patches {
                let keys: Vec<String> = match p {
                    Patch::Rows { key, .. } => {
                        vec![format!("{key}.before"), format!("{key}.after")]
                    }
                    Patch::LowRank { tensor, key } => {
                        if !self.base.contains_key(tensor) {
                            return Err(EditError::log(
                                dir.join(BASE_FILE),
                                format!("no base value of {tensor}, patched by edit {}", r.id),
                            ));
                        }
                        vec![format!("{key}.u"), format!("{key}.v")]
                    }
                    _ => Vec::new(),
                };
                for k in keys {
                    self.tensor(r, &k, Some(dir.parent().unwrap_or(dir)))?;
                }
            }
        }
        Ok(())
    }

    /// Writes the log into a model folder: `edits/log.json`, one payload per record, `base.safetensors`;
    /// payload files of records no longer in the log are removed.
    pub fn save(&self, model_dir: &Path) -> Result<()> {
        let dir = model_dir.join(EDITS_DIR);
        std::fs::create_dir_all(&dir).map_err(EditError::io(&dir))?;
        for r in &self.records {
            let empty = BTreeMap::new();
            let p = self.payloads.get(&r.id).unwrap_or(&empty);
            write_safetensors(&dir.join(&r.payload), p, None)?;
        }
        if !self.base.is_empty() {
            // base values only grow (a matrix's unedited value): the old log.json stays readable
            write_safetensors(&dir.join(BASE_FILE), &self.base, None)?;
        }
        let file = LogFile {
            format: FORMAT.into(),
            version: VERSION,
            base_vocab: self.base_vocab,
            base_docs: self.base_docs,
            records: self.records.clone(),
            next_id: self.next_id(),
        };
        let text = serde_json::to_vec_pretty(&file)
            .map_err(|e| EditError::log(dir.join(LOG_FILE), e.to_string()))?;
        write_atomic(&dir.join(LOG_FILE), &text)?;
        // only now that log.json no longer names them: files of undone edits (an interrupted save leaves
        // stale files, never a log whose payloads are gone)
        if self.base.is_empty() {
            let p = dir.join(BASE_FILE);
            if p.exists() {
                std::fs::remove_file(&p).map_err(EditError::io(&p))?;
            }
        }
        let keep: Vec<&str> = self.records.iter().map(|r| r.payload.as_str()).collect();
        for e in std::fs::read_dir(&dir).map_err(EditError::io(&dir))? {
            let e = e.map_err(EditError::io(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") && name != BASE_FILE && !keep.contains(&name.as_str())
            {
                std::fs::remove_file(e.path()).map_err(EditError::io(e.path()))?;
            }
        }
        Ok(())
    }
}

/// Payload file name of a record.
pub fn payload_name(id: u64) -> String {
    format!("{id:06}.safetensors")
}

/// One line per edit, for listing: `#id op method docids (seconds)`.
pub fn describe(records: &[EditRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let docs = if r.docids.len() <= 5 {
                r.docids.join(",")
            } else {
                format!(
                    "{},... ({} documents)",
                    r.docids[..5].join(","),
                    r.docids.len()
                )
            };
            format!(
                "#{} {} {} [{}] {:.1} ms",
                r.id,
                r.op,
                r.method,
                docs,
                r.seconds * 1000.0
            )
        })
        .collect()
}
