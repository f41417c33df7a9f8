//! Integration tests of genir-data (one binary, to keep link time down).

mod archive;
mod bm25;
mod download;
mod formats;
mod loaders;
mod perturb;
mod server;
mod shipped;
mod splits;
#[cfg(feature = "parquet")]
mod table;
mod validate;

use std::path::PathBuf;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
