//! A trained GenIR model folder: a Hugging Face T5 folder (`config.json`, `model.safetensors`,
//! `tokenizer.json`) plus `docids.json`, the docid scheme.

use std::path::Path;

use burn::prelude::*;
use genir_model::t5::T5Model;
use genir_model::tokenizer::TextTokenizer;

use crate::docid::DocidScheme;
use crate::error::{Result, TrainError};
use crate::search::Searcher;

/// File name of the docid scheme inside a model folder.
pub const DOCIDS_FILE: &str = "docids.json";

/// A model, its tokenizer and its docid scheme, checked to fit each other.
#[derive(Debug)]
pub struct GenirModel {
    /// The network.
    pub model: T5Model,
    /// Its tokenizer (docid tokens included).
    pub tok: TextTokenizer,
    /// Its docid scheme.
    pub scheme: DocidScheme,
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
        Ok(Self { model, tok, scheme })
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
        let model = T5Model::from_pretrained(dir, device)?;
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), model.config.vocab_size)?;
        Self::new(model, tok, scheme)
    }

    /// Writes the folder (atomic file writes): model, tokenizer, docids.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        self.model.save_pretrained(dir)?;
        crate::vocab::save_tokenizer(self.tok.inner(), &dir.join("tokenizer.json"))?;
        self.scheme.save(&dir.join(DOCIDS_FILE))
    }

    /// A searcher over every docid.
    pub fn searcher(&self) -> Result<Searcher<'_>> {
        Searcher::new(&self.model, &self.tok, &self.scheme)
    }
}
