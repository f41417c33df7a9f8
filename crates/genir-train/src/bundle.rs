//! A trained GenIR model folder: a Hugging Face T5 folder (`config.json`, `model.safetensors`,
//! `tokenizer.json`) plus `docids.json`, the docid scheme.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::prelude::*;
use genir_model::t5::T5Model;
use genir_model::tokenizer::TextTokenizer;

use crate::docid::DocidScheme;
use crate::error::{Result, TrainError};
use crate::search::Searcher;

/// File name of the docid scheme inside a model folder.
pub const DOCIDS_FILE: &str = "docids.json";
/// genir's settings of a model folder beside the Hugging Face files: `{"max_source_len": 64}`.
pub const SETTINGS_FILE: &str = "genir.json";
/// The query length searchers use when a folder does not say ([`GenirModel::max_source_len`]).
pub const DEFAULT_MAX_SOURCE_LEN: usize = 64;

/// The contents of [`SETTINGS_FILE`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct FolderSettings {
    max_source_len: usize,
}

/// How a checkpoint trained by other code names its atomic docid tokens: fixed text around one `{}` where the
/// docid goes, e.g. `@DOC_ID_{}@` (the paper's code, technion-cs-nlp/re-gen-ir).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocidTokenPattern {
    prefix: String,
    suffix: String,
}

impl FromStr for DocidTokenPattern {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s.split_once("{}") {
            Some((prefix, suffix))
                if !suffix.contains("{}") && (!prefix.is_empty() || !suffix.is_empty()) =>
            {
                Ok(Self {
                    prefix: prefix.into(),
                    suffix: suffix.into(),
                })
            }
            _ => Err(TrainError::Config(format!(
                "docid token pattern {s:?}: needs fixed text around exactly one {{}} where the docid goes (e.g. @DOC_ID_{{}}@)"
            ))),
        }
    }
}

impl std::fmt::Display for DocidTokenPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{{}}{}", self.prefix, self.suffix)
    }
}

impl DocidTokenPattern {
    /// The docid a token names, if the token matches (the docid is not empty).
    pub fn docid_of<'t>(&self, token: &'t str) -> Option<&'t str> {
        let docid = token
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        (!docid.is_empty()).then_some(docid)
    }

    /// The token that names `docid`.
    pub fn token(&self, docid: &str) -> String {
        format!("{}{docid}{}", self.prefix, self.suffix)
    }

    /// The pattern every docid token of an atomic scheme follows (the same text before and after each
    /// token's docid, e.g. `@DOC_ID_{}@` for an imported checkpoint), if there is one.
    pub fn of_scheme(scheme: &DocidScheme) -> Option<Self> {
        if !scheme.is_atomic() {
            return None;
        }
        let named = |doc: usize| -> Option<&str> {
            let j = *scheme.codes.get(doc)?.first()? as usize;
            scheme.token_names.get(j).map(String::as_str)
        };
        let (d, n) = (scheme.docids.first()?, named(0)?);
        n.match_indices(d.as_str())
            .map(|(at, _)| Self {
                prefix: n[..at].to_string(),
                suffix: n[at + d.len()..].to_string(),
            })
            .filter(|p| !p.prefix.is_empty() || !p.suffix.is_empty())
            .find(|p| {
                scheme
                    .docids
                    .iter()
                    .enumerate()
                    .all(|(i, d)| named(i) == Some(p.token(d).as_str()))
            })
    }
}

/// A model, its tokenizer and its docid scheme, checked to fit each other.
#[derive(Debug)]
pub struct GenirModel {
    /// The network.
    pub model: T5Model,
    /// Its tokenizer (docid tokens included).
    pub tok: TextTokenizer,
    /// Its docid scheme.
    pub scheme: DocidScheme,
    /// Source length (tokens, `</s>` included) the model was trained with: its searchers cut queries there,
    /// as training and validation did. Saved in [`SETTINGS_FILE`]; a folder written by `genir train`
    /// before it existed gives its `train_config.json`'s; otherwise [`DEFAULT_MAX_SOURCE_LEN`].
    pub max_source_len: usize,
}

impl GenirModel {
    /// Checks that the parts fit: the vocabulary covers tokenizer and docid tokens.
    pub fn new(model: T5Model, tok: TextTokenizer, scheme: DocidScheme) -> Result<Self> {
        tok.check_vocab(model.config.vocab_size)?;
        if scheme.vocab_size() > model.config.vocab_size {
            return Err(TrainError::Config(format!(
                "docid tokens go up to id {} but the model's vocabulary has {} rows",
                scheme.vocab_size() - 1,
                model.config.vocab_size
            )));
        }
        if scheme.eos as usize >= (scheme.token_offset as usize).min(model.config.vocab_size) {
            return Err(TrainError::Config(format!(
                "the docid scheme's end-of-docid token {} is not a text token of the model (text tokens end at \
                 id {}, the vocabulary at {})",
                scheme.eos, scheme.token_offset, model.config.vocab_size
            )));
        }
        Ok(Self {
            model,
            tok,
            scheme,
            max_source_len: DEFAULT_MAX_SOURCE_LEN,
        })
    }

    /// The same parts with another [`GenirModel::max_source_len`].
    pub fn with_max_source_len(mut self, max_source_len: usize) -> Self {
        self.max_source_len = max_source_len.max(1);
        self
    }

    /// The source length a folder's model was trained with ([`GenirModel::max_source_len`]), if it says.
    fn folder_max_source_len(dir: &Path) -> Result<Option<usize>> {
        let settings = dir.join(SETTINGS_FILE);
        if settings.exists() {
            let s: FolderSettings = crate::train::read_json(&settings)?;
            if s.max_source_len == 0 {
                return Err(TrainError::Json {
                    path: settings,
                    message: "max_source_len is 0".into(),
                });
            }
            return Ok(Some(s.max_source_len));
        }
        let cfg = dir.join("train_config.json");
        if cfg.exists() {
            // only the field needed; an unreadable file is reported by the commands that read it whole
            // (resuming a run), not by every command that opens the model
            return Ok(match crate::train::read_json::<serde_json::Value>(&cfg) {
                Ok(v) => v
                    .pointer("/examples/max_source_len")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n > 0),
                Err(e) => {
                    tracing::warn!(
                        "{e}: the default source length {DEFAULT_MAX_SOURCE_LEN} is used"
                    );
                    None
                }
            });
        }
        Ok(None)
    }

    /// Loads a model folder written by [`GenirModel::save`] (or by `genir train`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let docids = dir.join(DOCIDS_FILE);
        if !docids.exists() {
            return Err(TrainError::Checkpoint {
                path: dir.into(),
                message: format!(
                    "no {DOCIDS_FILE}: not a genir model folder (train one with `genir train`)"
                ),
            });
        }
        let scheme = DocidScheme::load(&docids)?;
        let (model, tok, _) = open_folder(dir, device)?;
        let len = Self::folder_max_source_len(dir)?.unwrap_or(DEFAULT_MAX_SOURCE_LEN);
        if let Some(saved) = tok.saved_max_length().filter(|&n| n < len) {
            tracing::warn!(
                dir = %dir.display(),
                "tokenizer.json saves a truncation to {saved} tokens, which genir no longer applies (nor does \
                 Hugging Face's tokenizer(text)): inputs are cut at {len}; a model trained with genir before \
                 2026-12-06 from this tokenizer saw at most {saved} tokens of each input (saving the folder \
                 again drops the setting)"
            );
        }
        Ok(Self::new(model, tok, scheme)?.with_max_source_len(len))
    }

    /// Opens a Hugging Face T5 checkpoint whose atomic docids were made by other code: each docid is one
    /// token of its `tokenizer.json` named by `pattern`, added to the tokenizer with the model's tables
    /// resized to match (`tokenizer.add_tokens` + `resize_token_embeddings`, as the paper's code and most
    /// Python DSI code do). The matching tokens may name the docids in any order but must be one contiguous
    /// block of ids; the scheme lists the docids in token-id order. [`GenirModel::save`] (or the scheme's
    /// [`DocidScheme::save`] beside the weights) then makes a folder every genir command opens.
    pub fn import_atomic(dir: &Path, pattern: &DocidTokenPattern, device: &Device) -> Result<Self> {
        let (model, tok, tok_path) = open_folder(dir, device)?;
        let mut found: Vec<(u32, String, String)> = tok
            .inner()
            .get_vocab(true)
            .into_iter()
            .filter_map(|(token, id)| {
                let docid = pattern.docid_of(&token)?.to_string();
                Some((id, docid, token))
            })
            .collect();
        found.sort();
        let bad = |message: String| TrainError::Checkpoint {
            path: tok_path.clone(),
            message,
        };
        let (Some(first), Some(last)) = (found.first().map(|f| f.0), found.last().map(|f| f.0))
        else {
            return Err(bad(format!(
                "no token matches the docid token pattern {pattern} (is it the pattern the model was trained with?)"
            )));
        };
        if (last - first) as usize + 1 != found.len() {
            let gap = found
                .windows(2)
                .find(|w| w[1].0 != w[0].0 + 1)
                .map_or(first, |w| w[0].0 + 1);
            return Err(bad(format!(
                "the {} tokens matching {pattern} are not one block of ids: they span {first}..={last}, but id {gap} is {:?}; genir's atomic docids are consecutive rows",
                found.len(),
                tok.id_to_token(gap).unwrap_or_default()
            )));
        }
        let (docids, names): (Vec<String>, Vec<String>) =
            found.into_iter().map(|(_, d, t)| (d, t)).unzip();
        let eos = model.config.eos_token_id as u32;
        let scheme = DocidScheme::atomic_over_tokens(docids, names, first, eos)?;
        tracing::info!(
            "{}: {} atomic docids, tokens {first}..={last}",
            dir.display(),
            scheme.len()
        );
        Self::new(model, tok, scheme)
    }

    /// Opens a Hugging Face T5 checkpoint trained by other code with docids written as text in its own
    /// vocabulary (naive string docids of Python DSI code: the target of a document is its docid's tokens,
    /// then `</s>`, as `tokenizer(text_target=docid)` gives them). `docids` are the documents' ids (a
    /// collection's); `written[i]` is the text the model writes for `docids[i]`: the docid itself for naive
    /// docids, or e.g. a semantic id's cluster numbers as words (`"1 4 2"` for the paper's `1_4_2`, which its
    /// code tokenizes as the words 1, 4, 2). Every distinct text token of those targets gets a docid row past the model's table
    /// that copies the token's input-embedding and output rows, so the network computes exactly what it
    /// computes on the text tokens, and the docid tokens form the block every genir search and analysis
    /// expects ([`DocidKind::Tokenized`](crate::docid::DocidKind::Tokenized); the tokenizer is padded with
    /// `<unused_N>` tokens up to the table's size). Search scores stay the original model's: each step is
    /// normalised over the original rows and read at the text tokens ([`DocidScheme::sources`]).
    pub fn import_text(
        dir: &Path,
        docids: &[String],
        written: &[String],
        device: &Device,
    ) -> Result<Self> {
        if docids.len() != written.len() {
            return Err(TrainError::Config(format!(
                "{} docids but {} written forms",
                docids.len(),
                written.len()
            )));
        }
        let (base, tok, tok_path) = open_folder(dir, device)?;
        let eos = base.config.eos_token_id as u32;
        let unk = tok.inner().token_to_id("<unk>");
        let mut texts: Vec<Vec<u32>> = Vec::with_capacity(docids.len());
        for (d, w) in docids.iter().zip(written) {
            let mut ids = tok.encode(w)?;
            if ids.last() == Some(&eos) {
                ids.pop();
            }
            if ids.is_empty() || ids.iter().any(|&i| Some(i) == unk || i == eos) {
                return Err(TrainError::Checkpoint {
                    path: tok_path.clone(),
                    message: format!(
                        "docid {d:?}, written {w:?}, tokenizes to {ids:?}: empty, or with <unk> or </s> inside"
                    ),
                });
            }
            texts.push(ids);
        }
        // the distinct text tokens, in id order, are the docid tokens 0..n
        let sources: Vec<u32> = texts
            .iter()
            .flatten()
            .copied()
            .collect::<std::collections::BTreeSet<u32>>()
            .into_iter()
            .collect();
        let local: std::collections::HashMap<u32, u32> = sources
            .iter()
            .enumerate()
            .map(|(j, &t)| (t, j as u32))
            .collect();
        let codes: Vec<Vec<u32>> = texts
            .iter()
            .map(|ids| ids.iter().map(|t| local[t]).collect())
            .collect();
        let names: Vec<String> = sources
            .iter()
            .map(|&t| {
                format!(
                    "<docid:{}>",
                    tok.id_to_token(t).unwrap_or_else(|| t.to_string())
                )
            })
            .collect();
        // the docid rows come after every row of the table, so the original rows (text tokens and unused
        // ones) are exactly the original model's normaliser
        let offset = base.config.vocab_size as u32;
        let scheme = DocidScheme::from_parts(
            crate::docid::DocidKind::Tokenized,
            docids.to_vec(),
            codes,
            (names, sources.clone()),
            offset,
            eos,
        )?;
        let rows = scheme.vocab_size();
        let mut tensors = base.to_hf_tensors()?;
        for name in ["shared.weight", "lm_head.weight"] {
            let Some(t) = tensors.get_mut(name) else {
                continue;
            };
            let d = t.shape[1];
            t.values.resize(rows * d, 0.0);
            t.shape[0] = rows;
            for (j, &src) in sources.iter().enumerate() {
                let (from, to) = (src as usize * d, (offset as usize + j) * d);
                t.values.copy_within(from..from + d, to);
            }
        }
        let mut config = base.config.clone();
        config.vocab_size = rows;
        let mut w = genir_model::weights::WeightFile::from_tensors(
            "<imported model with docid rows>",
            tensors.into_iter().collect(),
        );
        let model = T5Model::from_weights(config, &mut w, device)?;
        let mut inner = tok.inner().clone();
        let fillers: Vec<tokenizers::AddedToken> = (tok.vocab_size()..offset as usize)
            .map(|i| tokenizers::AddedToken::from(format!("<unused_{i}>"), true))
            .collect();
        inner.add_special_tokens(&fillers);
        crate::vocab::add_docid_tokens(&mut inner, &scheme)?;
        let tok = TextTokenizer::from_tokenizer(inner, tok_path);
        tracing::info!(
            "{}: {} docids over {} text tokens, copied to rows {offset}..{rows}",
            dir.display(),
            scheme.len(),
            sources.len(),
        );
        Self::new(model, tok, scheme)
    }

    /// Writes the folder (atomic file writes): model, tokenizer, docids.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        self.model.save_pretrained(dir)?;
        crate::vocab::save_tokenizer(self.tok.inner(), &dir.join("tokenizer.json"))?;
        crate::train::write_json(
            &dir.join(SETTINGS_FILE),
            &FolderSettings {
                max_source_len: self.max_source_len,
            },
        )?;
        self.scheme.save(&dir.join(DOCIDS_FILE))
    }

    /// The same model with its atomic docid tokens renamed by `pattern`, in the tokenizer and the scheme;
    /// weights unchanged. With the paper's `@DOC_ID_{}@` the saved folder is what its Python code
    /// (technion-cs-nlp/re-gen-ir) loads: `tokenizer.convert_tokens_to_ids("@DOC_ID_<docid>@")` is that
    /// docid's output row. Naive and semantic docids are sequences of shared tokens and have no per-document
    /// token to rename; a name that is already a text token is refused.
    pub fn rename_docid_tokens(mut self, pattern: &DocidTokenPattern) -> Result<Self> {
        if !self.scheme.is_atomic() {
            return Err(TrainError::Config(format!(
                "only atomic docids have one token per document to name by {pattern}; this model's docids \
                 are {}",
                self.scheme.kind
            )));
        }
        let off = self.scheme.token_offset;
        let mut names = self.scheme.token_names.clone();
        for (d, code) in self.scheme.docids.iter().zip(&self.scheme.codes) {
            let j = code[0] as usize; // atomic: one token per document (checked by the scheme)
            names[j] = pattern.token(d);
        }
        let inner = self.tok.inner();
        if let Some((n, id)) = names.iter().find_map(|n| {
            inner
                .token_to_id(n)
                .filter(|&id| id < off)
                .map(|id| (n, id))
        }) {
            return Err(TrainError::Config(format!(
                "docid token name {n:?} (pattern {pattern}) is already text token {id} of the tokenizer"
            )));
        }
        let text = inner
            .to_string(false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        let mut json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        let mut renamed = 0;
        if let Some(added) = json
            .get_mut("added_tokens")
            .and_then(serde_json::Value::as_array_mut)
        {
            for t in added {
                let j = t
                    .get("id")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|id| id.checked_sub(u64::from(off)))
                    .and_then(|j| usize::try_from(j).ok())
                    .filter(|&j| j < names.len());
                if let Some(j) = j {
                    t["content"] = serde_json::Value::String(names[j].clone());
                    renamed += 1;
                }
            }
        }
        let inner = tokenizers::Tokenizer::from_str(&json.to_string())
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        let placed = names
            .iter()
            .enumerate()
            .all(|(j, n)| inner.token_to_id(n) == Some(off + j as u32));
        if renamed != names.len() || !placed {
            return Err(TrainError::Tokenizer(format!(
                "the tokenizer's added tokens are not the {} docid tokens from id {off}: cannot rename them",
                names.len()
            )));
        }
        self.tok = TextTokenizer::from_tokenizer(inner, self.tok.path().to_path_buf());
        self.scheme.token_names = names;
        Ok(self)
    }

    /// A searcher over every docid, cutting queries at [`GenirModel::max_source_len`].
    pub fn searcher(&self) -> Result<Searcher<'_>> {
        let mut s = Searcher::new(&self.model, &self.tok, &self.scheme)?;
        s.max_source_len = self.max_source_len;
        Ok(s)
    }
}

/// A Hugging Face T5 folder's model and its `tokenizer.json` (checked against the model's vocabulary), with
/// the tokenizer's path for error messages.
fn open_folder(dir: &Path, device: &Device) -> Result<(T5Model, TextTokenizer, PathBuf)> {
    let model = T5Model::from_pretrained(dir, device)?;
    let tok_path = dir.join("tokenizer.json");
    let tok = TextTokenizer::from_file(&tok_path, model.config.vocab_size)?;
    Ok((model, tok, tok_path))
}
