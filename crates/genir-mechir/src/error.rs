//! Errors of genir-mechir.

use std::path::PathBuf;

/// Everything that can go wrong while building pairs, patching, or writing results.
#[derive(Debug, thiserror::Error)]
pub enum MechirError {
    /// The model failed (bad input, hook shape, tokenizer, ...).
    #[error(transparent)]
    Model(#[from] genir_model::ModelError),
    /// Reading a collection failed.
    #[error(transparent)]
    Data(#[from] genir_data::Error),
    /// Building or writing a table failed.
    #[error("table: {0}")]
    Table(#[from] polars::error::PolarsError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Drawing a figure failed.
    #[error("figure {path}: {message}")]
    Plot {
        /// The figure file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Inputs that cannot be patched (no pairs, unequal lengths after padding, ...).
    #[error("{0}")]
    Input(String),
}

impl MechirError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`MechirError`].
pub type Result<T, E = MechirError> = std::result::Result<T, E>;
