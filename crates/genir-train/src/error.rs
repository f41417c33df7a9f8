//! Errors of training, search and evaluation.

use std::path::PathBuf;

use genir_data::Error as DataError;
use genir_model::ModelError;

/// Everything that can go wrong in `genir-train`.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model layer failed (weights, shapes, hooks, tokenizer).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The data layer failed (corpus, queries, qrels files).
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file (docids, training state, config) is malformed.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A document id that the model's docid scheme does not know.
    #[error("unknown docid {docid:?}{context}")]
    UnknownDocid {
        /// The docid.
        docid: String,
        /// Where it came from (e.g. " in qrels of query q3").
        context: String,
    },
    /// A setting is invalid (named in the message).
    #[error("invalid setting: {0}")]
    Config(String),
    /// A checkpoint folder is missing pieces or does not belong to this run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be trained or saved.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed (e.g. reading a result back from the device).
    #[error("tensor: {0}")]
    Tensor(String),
}

impl From<genir_io::Error> for TrainError {
    fn from(e: genir_io::Error) -> Self {
        TrainError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
