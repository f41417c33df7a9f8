//! Retrieval measures with trec_eval's semantics: Hits@k (trec_eval's `success_k`), MRR@10 (reciprocal
//! rank of the first relevant document in the top 10), Recall@k.
//!
//! As in trec_eval, a run is ordered by descending score with ties broken by descending docid (the `rank`
//! column is ignored), and a document is relevant when its grade is at least 1. Queries of the evaluated set
//! that have no results score 0 (trec_eval's `-c`); a judged query without a relevant document (only grade 0
//! or below) scores 0 too, as in trec_eval / pytrec_eval; queries without any judgment are skipped.
//! Duplicates count once: a query listed twice, a document judged twice (its last grade, as in the qrels
//! dictionary pytrec_eval takes), a document a run lists twice for one query (its best rank; a run
//! dictionary would keep the row written last).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use genir_data::{Column, Table};
use genir_data::{Qrels, Run, RunEntry};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The measures of one query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryMetrics {
    /// The query.
    pub qid: String,
    /// 1 if a relevant document is ranked first.
    pub hits_at_1: f64,
    /// 1 if a relevant document is in the top 10.
    pub hits_at_10: f64,
    /// Reciprocal rank of the first relevant document in the top 10, else 0.
    pub mrr_at_10: f64,
    /// Recall at each cut-off of [`RECALL_CUTOFFS`].
    pub recall: Vec<f64>,
    /// Rank of the first relevant document (any depth), if retrieved.
    pub first_relevant_rank: Option<usize>,
}

/// Cut-offs of the recall measures.
pub const RECALL_CUTOFFS: [usize; 4] = [1, 5, 10, 100];

/// Per-query measures and their means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// One row per evaluated query.
    pub per_query: Vec<QueryMetrics>,
    /// Mean Hits@1.
    pub hits_at_1: f64,
    /// Mean Hits@10.
    pub hits_at_10: f64,
    /// Mean MRR@10.
    pub mrr_at_10: f64,
    /// Mean recall at each cut-off of [`RECALL_CUTOFFS`].
    pub recall: Vec<f64>,
}

/// Orders one query's rows as trec_eval does: score descending, then docid descending.
pub fn trec_order(rows: &mut [&RunEntry]) {
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b.docid.cmp(&a.docid))
    });
}

/// Evaluates `run` against `qrels` over `qids` (all judged queries when `None`).
pub fn evaluate(run: &Run, qrels: &Qrels, qids: Option<&[String]>) -> Evaluation {
    let mut by_query: BTreeMap<&str, Vec<&RunEntry>> = BTreeMap::new();
    for e in &run.entries {
        by_query.entry(e.qid.as_str()).or_default().push(e);
    }
    let judged: Vec<String> = match qids {
        Some(q) => q.to_vec(),
        None => qrels.qids().into_iter().map(str::to_string).collect(),
    };
    let mut per_query = Vec::new();
    let mut seen_qids = BTreeSet::new();
    // a query listed twice counts once
    for qid in judged.iter().filter(|q| seen_qids.insert(q.as_str())) {
        // a document judged twice has its last grade (as a qrels map: pytrec_eval's input, Qrels::to_map)
        let mut grades: BTreeMap<&str, i32> = BTreeMap::new();
        for j in qrels.for_query(qid) {
            grades.insert(j.docid.as_str(), j.grade);
        }
        if grades.is_empty() {
            continue;
        }
        let relevant: BTreeSet<&str> = grades
            .into_iter()
            .filter(|&(_, g)| g > 0)
            .map(|(d, _)| d)
            .collect();
        let mut rows = by_query.get(qid.as_str()).cloned().unwrap_or_default();
        trec_order(&mut rows);
        // a document the run lists twice for a query counts at its best rank
        let mut seen_docs = BTreeSet::new();
        rows.retain(|e| seen_docs.insert(e.docid.as_str()));
        let is_rel = |e: &&RunEntry| relevant.contains(&e.docid.as_str());
        let first = rows.iter().position(is_rel).map(|p| p + 1);
        let within = |k: usize| first.is_some_and(|r| r <= k);
        let recall = RECALL_CUTOFFS
            .iter()
            .map(|&k| {
                // 0 without a relevant document (trec_eval's recall then is 0, not NaN)
                rows.iter().take(k).filter(|e| is_rel(e)).count() as f64
                    / relevant.len().max(1) as f64
            })
            .collect();
        per_query.push(QueryMetrics {
            qid: qid.clone(),
            hits_at_1: f64::from(u8::from(within(1))),
            hits_at_10: f64::from(u8::from(within(10))),
            mrr_at_10: match first {
                Some(r) if r <= 10 => 1.0 / r as f64,
                _ => 0.0,
            },
            recall,
            first_relevant_rank: first,
        });
    }
    let n = per_query.len().max(1) as f64;
    let mean = |f: &dyn Fn(&QueryMetrics) -> f64| per_query.iter().map(f).sum::<f64>() / n;
    Evaluation {
        hits_at_1: mean(&|q| q.hits_at_1),
        hits_at_10: mean(&|q| q.hits_at_10),
        mrr_at_10: mean(&|q| q.mrr_at_10),
        recall: (0..RECALL_CUTOFFS.len())
            .map(|i| mean(&|q| q.recall[i]))
            .collect(),
        per_query,
    }
}

impl Evaluation {
    /// Per-query measures as a table: `qid, hits_at_1, hits_at_10, mrr_at_10, recall_at_{k}...,
    /// first_relevant_rank` (null when no relevant document was returned).
    pub fn to_table(&self) -> Result<Table> {
        let q = &self.per_query;
        let f = |name: String, get: &dyn Fn(&QueryMetrics) -> f64| {
            Column::new(name, q.iter().map(get).collect::<Vec<f64>>())
        };
        let mut cols: Vec<Column> = vec![
            Column::new("qid", q.iter().map(|m| m.qid.as_str()).collect::<Vec<_>>()),
            f("hits_at_1".into(), &|m| m.hits_at_1),
            f("hits_at_10".into(), &|m| m.hits_at_10),
            f("mrr_at_10".into(), &|m| m.mrr_at_10),
        ];
        for (i, k) in RECALL_CUTOFFS.iter().enumerate() {
            cols.push(f(format!("recall_at_{k}"), &|m| m.recall[i]));
        }
        cols.push(Column::from_options(
            "first_relevant_rank",
            q.iter()
                .map(|m| m.first_relevant_rank.map(|r| r as u32))
                .collect::<Vec<_>>(),
        ));
        Ok(Table::new(cols)?)
    }

    /// Writes the per-query table as Parquet (atomic).
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        self.to_table()?.write_parquet(path)?;
        Ok(())
    }

    /// One line: `Hits@1 0.4200  Hits@10 0.7100  MRR@10 0.5100  (205 queries)`.
    pub fn summary(&self) -> String {
        format!(
            "Hits@1 {:.4}  Hits@10 {:.4}  MRR@10 {:.4}  Recall@100 {:.4}  ({} queries)",
            self.hits_at_1,
            self.hits_at_10,
            self.mrr_at_10,
            self.recall[3],
            self.per_query.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genir_data::Qrel;

    fn entry(q: &str, d: &str, s: f64) -> RunEntry {
        RunEntry {
            qid: q.into(),
            docid: d.into(),
            rank: 0,
            score: s,
            tag: "t".into(),
        }
    }

    #[test]
    fn ties_break_by_descending_docid_and_missing_queries_score_zero() {
        let run = Run::new(vec![
            entry("q1", "a", 1.0),
            entry("q1", "b", 1.0),
            entry("q1", "c", 0.5),
        ]);
        let qrels = Qrels::new(vec![
            Qrel::new("q1", "a", 1),
            Qrel::new("q2", "x", 2),
            Qrel::new("q1", "z", 0),
        ]);
        let ev = evaluate(&run, &qrels, None);
        // "b" ranks before "a" (descending docid among equal scores)
        assert_eq!(ev.per_query[0].first_relevant_rank, Some(2));
        assert_eq!(ev.per_query[0].mrr_at_10, 0.5);
        assert_eq!(ev.per_query[1].hits_at_10, 0.0);
        assert_eq!(ev.mrr_at_10, 0.25);
        assert_eq!(ev.per_query.len(), 2);
    }

    #[test]
    fn duplicates_count_once_as_pytrec_eval_reads_them() {
        // d1 judged twice, d2 judged relevant then not (the last grade counts, as in a qrels dict)
        let qrels = Qrels::new(vec![
            Qrel::new("q1", "d1", 1),
            Qrel::new("q1", "d1", 1),
            Qrel::new("q1", "d2", 2),
            Qrel::new("q1", "d2", 0),
        ]);
        // d1 listed twice by the run
        let run = Run::new(vec![
            entry("q1", "d1", 3.0),
            entry("q1", "d1", 2.0),
            entry("q1", "d2", 1.0),
        ]);
        let qids = vec!["q1".to_string(), "q1".to_string()];
        let ev = evaluate(&run, &qrels, Some(&qids));
        assert_eq!(ev.per_query.len(), 1, "a query listed twice counts once");
        let q = &ev.per_query[0];
        // one relevant document (d1), found at rank 1: recall 1 at every cut-off, never above
        assert!(q.recall.iter().all(|&r| r == 1.0), "{:?}", q.recall);
        assert_eq!(q.first_relevant_rank, Some(1));
        assert_eq!(ev.hits_at_1, 1.0);
        // d2 (last grade 0) is not relevant: a run with d2 first misses at rank 1
        let run = Run::new(vec![entry("q1", "d2", 3.0), entry("q1", "d1", 2.0)]);
        let ev = evaluate(&run, &qrels, None);
        assert_eq!(ev.per_query[0].first_relevant_rank, Some(2));
    }
}
