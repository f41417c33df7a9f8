//! Consistency checks: duplicate ids and dangling references are reported, never silently dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{Collection, Corpus, Qrel, Qrels, Queries};

/// What [`validate`] or [`validate_collection`] found. Every list is in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Docids that occur more than once in the corpus (each listed once).
    pub duplicate_docids: Vec<String>,
    /// Qids that occur more than once in a query set (each listed once, prefixed by the split when checking a
    /// collection: `test/q1`).
    pub duplicate_qids: Vec<String>,
    /// (qid, docid) pairs judged more than once.
    pub duplicate_qrels: Vec<(String, String)>,
    /// Judgments whose docid is not in the corpus.
    pub dangling_docids: Vec<Qrel>,
    /// Judgments whose qid is not in the queries.
    pub dangling_qids: Vec<Qrel>,
    /// Queries with no judgment at all.
    pub unjudged_queries: Vec<String>,
    /// Qids present in more than one split of a collection (train/test leakage).
    pub qids_in_several_splits: Vec<String>,
}

impl ValidationReport {
    /// Whether nothing was found that makes the data inconsistent. Unjudged queries are allowed (common in
    /// TREC query sets) and do not count.
    pub fn is_consistent(&self) -> bool {
        self.duplicate_docids.is_empty()
            && self.duplicate_qids.is_empty()
            && self.duplicate_qrels.is_empty()
            && self.dangling_docids.is_empty()
            && self.dangling_qids.is_empty()
            && self.qids_in_several_splits.is_empty()
    }

    /// Whether every list is empty, unjudged queries included.
    pub fn is_clean(&self) -> bool {
        self.is_consistent() && self.unjudged_queries.is_empty()
    }

    fn merge_split(&mut self, split: &str, other: ValidationReport) {
        let tag = |s: String| format!("{split}/{s}");
        self.duplicate_qids
            .extend(other.duplicate_qids.into_iter().map(tag));
        self.duplicate_qrels.extend(other.duplicate_qrels);
        self.dangling_docids.extend(other.dangling_docids);
        self.dangling_qids.extend(other.dangling_qids);
        self.unjudged_queries
            .extend(other.unjudged_queries.into_iter().map(tag));
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn show(f: &mut fmt::Formatter<'_>, what: &str, items: &[String]) -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            let head: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
            let more = if items.len() > 5 { ", ..." } else { "" };
            writeln!(f, "{} {what}: {}{more}", items.len(), head.join(", "))
        }
        if self.is_clean() {
            return writeln!(f, "no problems found");
        }
        let pairs = |v: &[Qrel]| -> Vec<String> {
            v.iter()
                .map(|q| format!("{}->{}", q.qid, q.docid))
                .collect()
        };
        show(f, "duplicate docids", &self.duplicate_docids)?;
        show(f, "duplicate qids", &self.duplicate_qids)?;
        let dup: Vec<String> = self
            .duplicate_qrels
            .iter()
            .map(|(q, d)| format!("{q}->{d}"))
            .collect();
        show(f, "duplicate judgments", &dup)?;
        show(
            f,
            "judgments of documents not in the corpus",
            &pairs(&self.dangling_docids),
        )?;
        show(
            f,
            "judgments of queries not in the query set",
            &pairs(&self.dangling_qids),
        )?;
        show(f, "queries without judgments", &self.unjudged_queries)?;
        show(f, "qids in several splits", &self.qids_in_several_splits)
    }
}

fn duplicates<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut out = Vec::new();
    for id in ids {
        let n = seen.entry(id).or_insert(0);
        *n += 1;
        if *n == 2 {
            out.push(id.to_string());
        }
    }
    out
}

/// Checks one query set against a corpus.
pub fn validate(corpus: &Corpus, queries: &Queries, qrels: &Qrels) -> ValidationReport {
    let mut report = ValidationReport {
        duplicate_docids: duplicates(corpus.docids()),
        ..ValidationReport::default()
    };
    report.absorb(validate_queries(corpus, queries, qrels));
    report
}

impl ValidationReport {
    fn absorb(&mut self, other: ValidationReport) {
        self.duplicate_qids.extend(other.duplicate_qids);
        self.duplicate_qrels.extend(other.duplicate_qrels);
        self.dangling_docids.extend(other.dangling_docids);
        self.dangling_qids.extend(other.dangling_qids);
        self.unjudged_queries.extend(other.unjudged_queries);
    }
}

fn validate_queries(corpus: &Corpus, queries: &Queries, qrels: &Qrels) -> ValidationReport {
    let mut report = ValidationReport {
        duplicate_qids: duplicates(queries.qids()),
        ..ValidationReport::default()
    };
    let mut pairs: HashSet<(&str, &str)> = HashSet::new();
    let mut reported: HashSet<(&str, &str)> = HashSet::new();
    let mut judged: HashSet<&str> = HashSet::new();
    for q in qrels {
        let key = (q.qid.as_str(), q.docid.as_str());
        if !pairs.insert(key) && reported.insert(key) {
            report
                .duplicate_qrels
                .push((q.qid.clone(), q.docid.clone()));
        }
        if !corpus.contains(&q.docid) {
            report.dangling_docids.push(q.clone());
        }
        if !queries.contains(&q.qid) {
            report.dangling_qids.push(q.clone());
        }
        judged.insert(q.qid.as_str());
    }
    report.unjudged_queries = queries
        .qids()
        .filter(|id| !judged.contains(id))
        .map(str::to_string)
        .collect();
    report
}

/// Checks every split of a collection against its corpus, and that no qid is in two splits.
pub fn validate_collection(collection: &Collection) -> ValidationReport {
    let mut report = ValidationReport {
        duplicate_docids: duplicates(collection.corpus.docids()),
        ..ValidationReport::default()
    };
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut leaked: Vec<String> = Vec::new();
    for (name, set) in &collection.splits {
        report.merge_split(
            name,
            validate_queries(&collection.corpus, &set.queries, &set.qrels),
        );
        let mut here: HashSet<&str> = HashSet::new();
        for qid in set.queries.qids() {
            if !here.insert(qid) {
                continue;
            }
            if let Some(first) = owner.insert(qid, name) {
                leaked.push(format!("{qid} ({first}, {name})"));
            }
        }
    }
    report.qids_in_several_splits = leaked;
    report
}
