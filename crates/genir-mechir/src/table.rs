//! Writing result tables as Parquet and CSV.

use std::path::{Path, PathBuf};

use genir_data::Table;

use crate::error::Result;

/// Writes `df` to `{stem}.parquet` and `{stem}.csv` in `dir` (each atomically), returning both paths.
pub fn write_table(df: &Table, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
    let pq = dir.join(format!("{stem}.parquet"));
    let csv = dir.join(format!("{stem}.csv"));
    df.write_parquet(&pq)?;
    df.write_csv(&csv)?;
    Ok((pq, csv))
}
