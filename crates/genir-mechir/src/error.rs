//! Errors of genir-mechir.

use std::path::PathBuf;

/// Everything that can go wrong while building pairs, patching, or writing results.
#[derive(Debug, thiserror::Error)]
pub enum MechirError {
    /// The model failed (bad input, hook shape, tokenizer, ...).
    #[error(transparent)]
    Model(#[from] genir_model::ModelError),
    /// Reading a collection, or building or writing a table, failed.
    #[error(transparent)]
    Data(#[from] genir_data::Error),
    /// Writing a file failed.
    #[error(transparent)]
    Io(#[from] genir_io::Error),
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

/// Result with [`MechirError`].
pub type Result<T, E = MechirError> = std::result::Result<T, E>;
