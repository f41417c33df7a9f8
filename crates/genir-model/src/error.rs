//! Errors of the model crate: every one names the file, tensor or hook point at fault.

use std::path::PathBuf;

/// Anything that can go wrong loading, saving or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `config.json` is malformed or inconsistent.
    #[error("{path}: invalid config: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A weights file is not valid safetensors / PyTorch data.
    #[error("{path}: corrupt or unreadable weights: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is not in the weights file.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor `{name}` has shape {found:?}, the config implies {expected:?}")]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape from the config.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// The tokenizer does not fit the model.
    #[error("{path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A hook name that does not exist in this model.
    #[error("unknown hook point `{name}`; did you mean {}?", suggestions.join(", "))]
    UnknownHook {
        /// The name asked for.
        name: String,
        /// Nearest valid names.
        suggestions: Vec<String>,
    },
    /// An activation or patch of the wrong shape at a hook point.
    #[error("hook `{point}`: expected {expected}, found {found}")]
    HookShape {
        /// The hook point.
        point: String,
        /// What was expected.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A patch asked for a point that the source cache does not hold.
    #[error("hook `{0}` is not in the activation cache (was it included in the cache filter?)")]
    NotCached(String),
    /// Bad inputs to a forward pass.
    #[error("invalid input: {0}")]
    Input(String),
    /// A backend that is not compiled in, or an unknown backend name.
    #[error("backend `{name}`: {message}")]
    Backend {
        /// The name asked for.
        name: String,
        /// Why it cannot be used.
        message: String,
    },
    /// Reading tensor data back from a device failed.
    #[error("tensor read failed: {0}")]
    Tensor(String),
}

impl From<genir_io::Error> for ModelError {
    fn from(e: genir_io::Error) -> Self {
        ModelError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
