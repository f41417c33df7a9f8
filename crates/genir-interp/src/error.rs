//! The error type of the analyses.

use std::path::PathBuf;

use genir_model::ModelError;
use genir_train::TrainError;

/// Everything that can go wrong in an analysis.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// The model layer failed (shapes, hook points, tokenizer).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training, search or evaluation code failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The data layer failed (building, reading or writing a table).
    #[error(transparent)]
    Data(#[from] genir_data::Error),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Two models cannot be combined (encoder swap).
    #[error("incompatible models: {0}")]
    Incompatible(String),
    /// An argument is invalid (empty query set, unknown docid, bad option, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Drawing a figure failed.
    #[error("figure {path}: {message}")]
    Figure {
        /// The figure file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Reading a tensor back from the device failed.
    #[error("tensor: {0}")]
    Tensor(String),
}

/// Result alias of this crate.
pub type Result<T, E = InterpError> = std::result::Result<T, E>;

impl From<genir_io::Error> for InterpError {
    fn from(e: genir_io::Error) -> Self {
        InterpError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
