//! Shared pieces: probes (a query and its document), the lens (final norm + scale + head), ranks, tables.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use genir_data::QuerySet;
use genir_data::{Column, Table};
use genir_model::hooks::{HookFilter, HookPoint, Hooks};
use genir_model::t5::{Seq2SeqInput, T5Model};
use genir_train::bundle::GenirModel;

use crate::error::{InterpError, Result};

/// A query and the document it should retrieve: the unit every per-query analysis works on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Query id (carried into the tables).
    pub qid: String,
    /// Query text.
    pub text: String,
    /// External id of the relevant document.
    pub docid: String,
}

impl Probe {
    /// A probe from its parts.
    pub fn new(qid: impl Into<String>, text: impl Into<String>, docid: impl Into<String>) -> Self {
        Self {
            qid: qid.into(),
            text: text.into(),
            docid: docid.into(),
        }
    }

    /// One probe per query of `set` that has a relevant document (the first relevant one in qrels order);
    /// queries without one are skipped.
    pub fn from_query_set(set: &QuerySet) -> Vec<Probe> {
        set.queries
            .iter()
            .filter_map(|q| {
                let doc = set.qrels.relevant(&q.qid).next()?;
                Some(Probe::new(&q.qid, &q.text, doc))
            })
            .collect()
    }
}

/// The queries of `set` that `gm` retrieves at rank 1 (at most `max`, in set order), each with the judgment of
/// the relevant document it retrieves: the set the paper analyses ("correct queries"). An empty result is an
/// error.
pub fn correctly_retrieved(gm: &GenirModel, set: &QuerySet, max: usize) -> Result<QuerySet> {
    let run = gm.searcher()?.run(&set.queries, 1, 64, "probe")?;
    correctly_retrieved_in(&run, set, max)
}

/// [`correctly_retrieved`] from a run already made on `set` (its rank-1 entries are read), so that a caller
/// that also needs the run's metrics searches once.
pub fn correctly_retrieved_in(
    run: &genir_data::Run,
    set: &QuerySet,
    max: usize,
) -> Result<QuerySet> {
    let e = genir_train::metrics::evaluate(run, &set.qrels, None);
    let ok: std::collections::BTreeSet<&str> = e
        .per_query
        .iter()
        .filter(|q| q.hits_at_1 >= 1.0)
        .map(|q| q.qid.as_str())
        .collect();
    let queries: Vec<_> = set
        .queries
        .iter()
        .filter(|q| ok.contains(q.qid.as_str()))
        .take(max)
        .cloned()
        .collect();
    if queries.is_empty() {
        return Err(InterpError::Input(
            "the model retrieves none of these queries at rank 1: nothing to analyse".into(),
        ));
    }
    // keep only the judgment of the document retrieved at rank 1, so that a probe built from this set
    // ([`Probe::from_query_set`]) names the document the model actually retrieves (queries may have several)
    let top: std::collections::BTreeSet<(&str, &str)> = run
        .entries
        .iter()
        .filter(|r| r.rank == 1)
        .map(|r| (r.qid.as_str(), r.docid.as_str()))
        .collect();
    let keep: std::collections::BTreeSet<&str> = queries.iter().map(|q| q.qid.as_str()).collect();
    let qrels = set.qrels.filter(|r| {
        keep.contains(r.qid.as_str()) && top.contains(&(r.qid.as_str(), r.docid.as_str()))
    });
    Ok(QuerySet {
        queries: genir_data::Queries::new(queries),
        qrels,
    })
}

/// A probe tokenized and resolved against the model's docid scheme.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub qid: String,
    pub docid: String,
    pub ids: Vec<u32>,
    /// Decoder target of the document (model token ids).
    pub target: Vec<u32>,
}

/// Tokenizes probes and looks their documents up; an empty list or an unknown docid is an error.
pub(crate) fn prepare(gm: &GenirModel, probes: &[Probe]) -> Result<Vec<Prepared>> {
    if probes.is_empty() {
        return Err(InterpError::Input("no queries to analyse".into()));
    }
    let searcher = gm.searcher()?;
    probes
        .iter()
        .map(|p| {
            let doc = gm.scheme.require(
                &p.docid,
                &format!(" (relevant document of query {})", p.qid),
            )?;
            let ids = searcher
                .encode_queries(std::slice::from_ref(&p.text))?
                .pop()
                .ok_or_else(|| InterpError::Input(format!("query {} did not tokenize", p.qid)))?;
            Ok(Prepared {
                qid: p.qid.clone(),
                docid: p.docid.clone(),
                ids,
                target: gm.scheme.target(doc),
            })
        })
        .collect()
}

/// The logit lens: decoder final RMS norm, the LM head's input scaling and the unembedding, applied to any
/// residual-stream-shaped tensor `[batch, pos, d_model] -> [batch, pos, vocab]`. On the last decoder layer's
/// `hook_resid_post` this is exactly the model's logits.
pub fn lens_logits(model: &T5Model, resid: Tensor<3>) -> Tensor<3> {
    model.lm_logits(model.decoder.final_norm.forward(resid))
}

/// Decoding step `step` of a batch of probes, teacher-forced: the decoder input is the start token and the
/// first `step` tokens of each probe's docid target (0: the first decoding step), recording the points that
/// `filter` selects. Returns logits `[batch, step + 1, vocab]` and the cache; readings belong at position
/// `step`, where the model predicts target token `step`. A target with no token `step` is an error.
pub(crate) fn first_step(
    gm: &GenirModel,
    batch: &[Prepared],
    step: usize,
    filter: HookFilter,
) -> Result<(Tensor<3>, genir_model::hooks::ActivationCache)> {
    let model = &gm.model;
    let device = model.shared.val().device();
    let start = model.config.decoder_start() as u32;
    let sources: Vec<Vec<u32>> = batch.iter().map(|p| p.ids.clone()).collect();
    let dec = batch
        .iter()
        .map(|p| {
            if p.target.len() <= step {
                return Err(InterpError::Input(format!(
                    "decoding step {step}: the docid target of {} (query {}) has {} tokens",
                    p.docid,
                    p.qid,
                    p.target.len()
                )));
            }
            let mut d = vec![start];
            d.extend_from_slice(&p.target[..step]);
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    let input = Seq2SeqInput::from_ids(&sources, &dec, model.config.pad_token_id as u32, &device)?;
    let mut hooks = Hooks::caching(filter);
    let logits = model.forward(&input, &mut hooks)?;
    Ok((logits, hooks.take_cache()))
}

/// Position `pos` of a cached rank-3 activation, `[batch, 1, d]`.
pub(crate) fn cached3_at(
    cache: &genir_model::hooks::ActivationCache,
    point: HookPoint,
    pos: usize,
) -> Result<Tensor<3>> {
    let t = cached3(cache, point)?;
    let [b, _, d] = t.dims();
    Ok(t.slice([0..b, pos..pos + 1, 0..d]))
}

/// A cached rank-3 activation.
pub(crate) fn cached3(
    cache: &genir_model::hooks::ActivationCache,
    point: HookPoint,
) -> Result<Tensor<3>> {
    Ok(cache.require(&point)?.rank3(&point)?)
}

/// Values of a tensor as f32, row-major.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| InterpError::Tensor(format!("{e:?}")))
}

/// Ranks of one row of logits (1 = highest).
pub(crate) struct RowRanks {
    /// Rank of the target among all tokens (1 + number of tokens scoring strictly higher).
    pub rank: usize,
    /// Rank of the target among the docid tokens.
    pub rank_in_docids: usize,
    /// Mean rank of the docid tokens (a full ordering, ties by id).
    pub mean_docid: f64,
    /// Mean rank of all other tokens.
    pub mean_non_docid: f64,
    /// Median rank of all other tokens (the lower middle value for an even count, as `torch.median`): what
    /// the paper's `eval_residual_rank.py` plots as "Mean Non-Doc-IDs".
    pub median_non_docid: f64,
}

/// Ranks in a row of logits; `docids` is the docid-token id block.
pub(crate) fn row_ranks(
    row: &[f32],
    target: usize,
    docids: std::ops::Range<usize>,
    full: bool,
) -> RowRanks {
    let t = row[target];
    let rank = 1 + row.iter().filter(|&&v| v > t).count();
    let rank_in_docids = 1 + row[docids.clone()].iter().filter(|&&v| v > t).count();
    let (mut mean_docid, mut mean_non_docid, mut median_non_docid) = (f64::NAN, f64::NAN, f64::NAN);
    if full {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let (mut sd, mut nd, mut so) = (0f64, 0usize, 0f64);
        // ascending, as `order` is
        let mut others: Vec<usize> = Vec::with_capacity(row.len());
        for (pos, &id) in order.iter().enumerate() {
            if docids.contains(&id) {
                sd += (pos + 1) as f64;
                nd += 1;
            } else {
                so += (pos + 1) as f64;
                others.push(pos + 1);
            }
        }
        mean_docid = sd / nd.max(1) as f64;
        mean_non_docid = so / others.len().max(1) as f64;
        if !others.is_empty() {
            median_non_docid = others[(others.len() - 1) / 2] as f64;
        }
    }
    RowRanks {
        rank,
        rank_in_docids,
        mean_docid,
        mean_non_docid,
        median_non_docid,
    }
}

/// The id block of the docid tokens in the model's vocabulary.
pub(crate) fn docid_block(gm: &GenirModel) -> std::ops::Range<usize> {
    let off = gm.scheme.token_offset as usize;
    off..off + gm.scheme.n_tokens()
}

/// Softmax probability of `target` in a row of logits.
pub(crate) fn prob(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    (row[target] as f64 - max).exp() / z
}

/// Writes a table as `{stem}.parquet` and `{stem}.csv` (creating the folder; each file atomically); returns both
/// paths.
pub fn write_table(df: &Table, stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let parquet = stem.with_extension("parquet");
    let csv = stem.with_extension("csv");
    df.write_parquet(&parquet)?;
    df.write_csv(&csv)?;
    tracing::info!(parquet = %parquet.display(), csv = %csv.display(), rows = df.height(), "wrote table");
    Ok((parquet, csv))
}

/// A column of a table as f64 values (nulls as NaN), or an error naming it.
pub(crate) fn f64_col(df: &Table, name: &str) -> Result<Vec<f64>> {
    Ok(df.f64s(name)?)
}

/// A column of a table as strings (nulls as empty).
pub(crate) fn str_col(df: &Table, name: &str) -> Result<Vec<String>> {
    Ok(df.strs(name)?)
}

/// A column of a table as integers (nulls as -1).
pub(crate) fn i64_col(df: &Table, name: &str) -> Result<Vec<i64>> {
    Ok(df.i64s(name)?)
}

/// Builds a column from values.
pub(crate) fn col<T>(name: &str, values: Vec<T>) -> Column
where
    Vec<T>: Into<genir_data::Values>,
{
    Column::new(name, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ranks_give_means_and_the_lower_median() {
        // ids 0..6 ranked in id order; docid tokens are ids 4 and 5
        let row = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0];
        let r = row_ranks(&row, 4, 4..6, true);
        assert_eq!((r.rank, r.rank_in_docids), (5, 1));
        assert_eq!((r.mean_docid, r.mean_non_docid), (5.5, 2.5));
        // ranks 1, 2, 3, 4: torch.median gives the lower middle value
        assert_eq!(r.median_non_docid, 2.0);
        let odd = row_ranks(&row[..5], 4, 3..5, true);
        assert_eq!(odd.median_non_docid, 2.0);
        assert!(row_ranks(&row, 4, 4..6, false).median_non_docid.is_nan());
    }
}
