//! Writing result tables as Parquet and CSV.

use std::io::Write;
use std::path::Path;

use polars::prelude::*;

use crate::error::{MechirError, Result};

/// Writes `df` as Parquet to `path`.
pub fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| MechirError::io(path, e))?;
    ParquetWriter::new(file).finish(df)?;
    Ok(())
}

fn csv_field(v: &AnyValue<'_>) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => quote(s),
        AnyValue::StringOwned(s) => quote(s.as_str()),
        AnyValue::Float32(x) => format!("{x}"),
        AnyValue::Float64(x) => format!("{x}"),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `df` as CSV (RFC 4180 quoting, header row, empty fields for nulls) to `path`.
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| MechirError::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let io = |e| MechirError::io(path, e);
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| quote(n.as_str()))
        .collect();
    writeln!(w, "{}", names.join(",")).map_err(io)?;
    let cols = df.columns();
    for i in 0..df.height() {
        let mut fields = Vec::with_capacity(cols.len());
        for c in cols {
            fields.push(csv_field(&c.get(i)?));
        }
        writeln!(w, "{}", fields.join(",")).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(())
}

/// Writes `df` to `{stem}.parquet` and `{stem}.csv` in `dir`, returning both paths.
pub fn write_table(
    df: &mut DataFrame,
    dir: &Path,
    stem: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| MechirError::io(dir, e))?;
    let pq = dir.join(format!("{stem}.parquet"));
    let csv = dir.join(format!("{stem}.csv"));
    write_parquet(df, &pq)?;
    write_csv(df, &csv)?;
    Ok((pq, csv))
}
