//! Hugging Face `tokenizer.json` loading, checked against the model it is used with.

use std::path::{Path, PathBuf};

use crate::error::ModelError;

/// A tokenizer from a `tokenizer.json`, known to fit a model's vocabulary.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `path` and checks that every id it can produce is below `vocab_size`.
    pub fn from_file(path: &Path, vocab_size: usize) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.into(),
            message: format!("cannot read tokenizer: {e}"),
        })?;
        let t = Self::from_tokenizer(inner, path.into());
        t.check_vocab(vocab_size)?;
        Ok(t)
    }

    /// Wraps an in-memory tokenizer (`path` is only used in messages).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: PathBuf) -> Self {
        Self { inner, path }
    }

    /// Errors if the tokenizer has ids the embedding table does not cover.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), ModelError> {
        let n = self.inner.get_vocab_size(true);
        let max_id = self
            .inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .unwrap_or(0) as usize;
        if n > vocab_size || max_id >= vocab_size {
            return Err(ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "tokenizer has {n} tokens (largest id {max_id}) but the model's vocabulary has {vocab_size} rows: \
                     the tokenizer does not belong to this model"
                ),
            });
        }
        Ok(())
    }

    /// Token ids of `text`, with the tokenizer's special tokens (T5 appends `</s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })
    }

    /// The text of token ids.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode {ids:?}: {e}"),
            })
    }

    /// The string of one id, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string, if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` value.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
