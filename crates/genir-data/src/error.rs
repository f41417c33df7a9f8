//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, writing, downloading or checking data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read at a line: an I/O error, or bytes that are not UTF-8.
    #[error("{path} line {line}: {source}")]
    ReadLine {
        /// The file (or the label of an in-memory source).
        path: PathBuf,
        /// 1-based number of the line being read.
        line: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record is malformed.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Parse {
        /// The file (or the label of an in-memory source).
        path: PathBuf,
        /// 1-based line number (record number for formats without lines).
        line: u64,
        /// The field that is missing or malformed.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value cannot be written in the requested format (e.g. a tab inside a TSV field).
    #[error("cannot write {what}: {message}")]
    Unwritable {
        /// What was being written.
        what: String,
        /// Why it cannot be written.
        message: String,
    },
    /// A caller-supplied argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A query split the collection does not have.
    #[error("collection `{collection}` has no query split `{split}`; {available}")]
    UnknownSplit {
        /// The collection's name.
        collection: String,
        /// The split asked for.
        split: String,
        /// The splits it has (or that it has none).
        available: String,
    },
    /// No dataset of this name is registered.
    #[error("unknown dataset `{name}`; registered: {known}")]
    UnknownDataset {
        /// The requested name.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The server answered with an HTTP error status.
    #[error("HTTP status {status} for {url}")]
    HttpStatus {
        /// The requested URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server stopped sending data for longer than the configured timeout.
    #[error("timed out downloading {url}")]
    Timeout {
        /// The requested URL.
        url: String,
    },
    /// Any other transport failure, after the configured retries.
    #[error("download of {url} failed: {message}")]
    Download {
        /// The requested URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The downloaded (or cached) bytes do not have the expected size or checksum.
    #[error("{url}: expected {expected}, got {actual}; {}", kept_note(.kept))]
    Integrity {
        /// The URL the file came from.
        url: String,
        /// The expected size or checksum, e.g. `md5 1730f7...`.
        expected: String,
        /// What was found.
        actual: String,
        /// Where the file was left (e.g. a cached file in offline mode); `None` when it was removed.
        kept: Option<PathBuf>,
    },
    /// Offline mode was requested and the file is not in the cache.
    #[error("offline: {path} is not in the cache (would be downloaded from {url})")]
    NotCached {
        /// Where the file would be.
        path: PathBuf,
        /// Where it would come from.
        url: String,
    },
    /// An archive does not contain an expected member.
    #[error("{archive}: no member `{member}`")]
    MissingMember {
        /// The archive (or its extraction folder).
        archive: PathBuf,
        /// The missing member.
        member: String,
    },
    /// A Parquet file could not be read or written (corrupt, truncated, or not Parquet).
    #[cfg(feature = "parquet")]
    #[error("{path}: parquet: {source}")]
    Parquet {
        /// The file involved.
        path: PathBuf,
        /// The error of the `parquet` crate.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A table is malformed or lacks a column (the message names the column).
    #[error("table: {0}")]
    Table(String),
}

fn kept_note(kept: &Option<PathBuf>) -> String {
    match kept {
        Some(path) => format!("the file is left at {}", path.display()),
        None => "the file was not kept".into(),
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<genir_io::Error> for Error {
    fn from(e: genir_io::Error) -> Self {
        Error::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn read_line(path: impl Into<PathBuf>, line: u64, source: std::io::Error) -> Self {
        Error::ReadLine {
            path: path.into(),
            line,
            source,
        }
    }

    pub(crate) fn parse(
        path: impl Into<PathBuf>,
        line: u64,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }
}
