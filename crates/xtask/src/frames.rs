//! Reading table columns into plain vectors and grouping them (the report's summaries).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use genir_data::Table;

/// A column as `f64` (nulls as NaN).
pub fn f64s(df: &Table, name: &str) -> Result<Vec<f64>> {
    df.f64s(name)
        .with_context(|| format!("column {name} as f64"))
}

/// A column as strings (nulls as "").
pub fn strs(df: &Table, name: &str) -> Result<Vec<String>> {
    df.strs(name)
        .with_context(|| format!("column {name} as string"))
}

/// A column as integers (nulls as -1).
pub fn i64s(df: &Table, name: &str) -> Result<Vec<i64>> {
    df.i64s(name)
        .with_context(|| format!("column {name} as i64"))
}

/// Values grouped by a key, in key order.
pub fn group<K: Ord + Clone>(keys: &[K], values: &[f64]) -> BTreeMap<K, Vec<f64>> {
    let mut m: BTreeMap<K, Vec<f64>> = BTreeMap::new();
    for (k, v) in keys.iter().zip(values) {
        m.entry(k.clone()).or_default().push(*v);
    }
    m
}

/// Mean of the finite values (NaN when none).
pub fn mean(v: &[f64]) -> f64 {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        f64::NAN
    } else {
        f.iter().sum::<f64>() / f.len() as f64
    }
}

/// Median of the finite values (NaN when none).
pub fn median(v: &[f64]) -> f64 {
    let mut f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return f64::NAN;
    }
    f.sort_by(f64::total_cmp);
    let n = f.len();
    if n % 2 == 1 {
        f[n / 2]
    } else {
        (f[n / 2 - 1] + f[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genir_data::Column;

    #[test]
    fn grouping_and_statistics() {
        let g = group(&["b", "a", "b"], &[1.0, 2.0, 3.0]);
        assert_eq!(g.keys().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(mean(&g["b"]), 2.0);
        assert_eq!(median(&[3.0, 1.0, f64::NAN, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert!(mean(&[]).is_nan());
        let df = Table::new(vec![
            Column::new("x", vec![1i64, 2]),
            Column::new("s", vec!["a", "b"]),
        ])
        .unwrap();
        assert_eq!(f64s(&df, "x").unwrap(), [1.0, 2.0]);
        assert_eq!(i64s(&df, "x").unwrap(), [1, 2]);
        assert_eq!(strs(&df, "s").unwrap(), ["a", "b"]);
        assert!(f64s(&df, "nope").is_err());
    }
}

/// Deserialises an `f64` written by serde_json, where NaN became `null`.
pub fn nan_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod nan_tests {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct R {
        #[serde(deserialize_with = "super::nan_f64")]
        x: f64,
    }

    #[test]
    fn nan_round_trips_through_json() {
        let s = serde_json::to_string(&R { x: f64::NAN }).unwrap();
        assert!(serde_json::from_str::<R>(&s).unwrap().x.is_nan());
        assert_eq!(serde_json::from_str::<R>(r#"{"x":1.5}"#).unwrap().x, 1.5);
    }
}
