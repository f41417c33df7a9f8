//! Errors of document editing.

use std::path::PathBuf;

use genir_model::ModelError;
use genir_train::TrainError;

/// Everything that can go wrong while editing a GenIR model.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// Loading, saving, searching or training failed in `genir-train`.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The model layer failed (weights, shapes, hooks, tokenizer).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A docid the model does not know.
    #[error("unknown docid {0:?}: the model has no such document")]
    UnknownDocid(String),
    /// A docid to add that the model already has (deleted documents keep their docid).
    #[error("docid {0:?} already exists in the model (deleted documents keep their docid; add it under a new one)")]
    DuplicateDocid(String),
    /// A document that is already deleted.
    #[error("docid {0:?} is already deleted")]
    AlreadyDeleted(String),
    /// The operation needs atomic docids (one token per document).
    #[error("{0} needs atomic docids (one token per document); this model's docids are {1}")]
    NeedsAtomic(&'static str, String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An edit log (or its payload) is malformed, or does not belong to the model it is applied to.
    #[error("edit log {path}: {message}")]
    Log {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting or input is invalid (named in the message).
    #[error("invalid edit: {0}")]
    Invalid(String),
    /// A tensor could not be read back from the device.
    #[error("tensor: {0}")]
    Tensor(String),
}

impl From<genir_io::Error> for EditError {
    fn from(e: genir_io::Error) -> Self {
        EditError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl EditError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| EditError::Io { path, source }
    }

    pub(crate) fn log(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EditError::Log {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = EditError> = std::result::Result<T, E>;
