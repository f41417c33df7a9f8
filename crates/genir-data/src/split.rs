//! Seeded splits and subsets: train / validation / test queries, corpus views without some documents, and
//! subsets of a given size.
//!
//! All randomness comes from a ChaCha8 generator seeded by the caller, so results are the same on every
//! platform and every run for the same seed and input order.

use std::collections::{BTreeMap, HashSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::types::{Collection, Corpus, Document, Qrels, Queries, QuerySet};

/// The generator used for every seeded operation of this crate.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Fractions of queries going to train, validation and test. They must be non-negative and sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fractions {
    /// Share of the training split.
    pub train: f64,
    /// Share of the validation split.
    pub validation: f64,
    /// Share of the test split.
    pub test: f64,
}

impl Default for Fractions {
    /// 80 / 10 / 10.
    fn default() -> Self {
        Fractions {
            train: 0.8,
            validation: 0.1,
            test: 0.1,
        }
    }
}

impl Fractions {
    fn check(&self) -> Result<()> {
        let parts = [self.train, self.validation, self.test];
        if parts.iter().any(|p| !p.is_finite() || *p < 0.0)
            || (parts.iter().sum::<f64>() - 1.0).abs() > 1e-9
        {
            return Err(Error::InvalidArgument(format!(
                "split fractions must be non-negative and sum to 1, got {parts:?}"
            )));
        }
        Ok(())
    }
}

/// A query set split three ways.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainValidationTest {
    /// Training queries and their judgments.
    pub train: QuerySet,
    /// Validation queries and their judgments.
    pub validation: QuerySet,
    /// Test queries and their judgments.
    pub test: QuerySet,
}

/// Splits queries (and their judgments) at random with `seed`.
///
/// Counts are `round(n * train)`, `round(n * validation)` and the rest for test. Within a split, queries keep
/// their input order. Judgments follow their query; judgments of unknown qids are in no split (find them with
/// [`crate::validate`]).
pub fn split_queries(
    set: &QuerySet,
    fractions: Fractions,
    seed: u64,
) -> Result<TrainValidationTest> {
    fractions.check()?;
    let n = set.queries.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed));
    let n_train = ((n as f64) * fractions.train).round() as usize;
    let n_valid = (((n as f64) * fractions.validation).round() as usize).min(n - n_train.min(n));
    let mut which = vec![2u8; n];
    for (rank, &i) in order.iter().enumerate() {
        which[i] = if rank < n_train {
            0
        } else if rank < n_train + n_valid {
            1
        } else {
            2
        };
    }
    let pick = |k: u8| -> QuerySet {
        let queries: Queries = set
            .queries
            .iter()
            .zip(&which)
            .filter(|(_, w)| **w == k)
            .map(|(q, _)| q.clone())
            .collect();
        let qrels = set.qrels.filter(|r| queries.contains(&r.qid));
        QuerySet { queries, qrels }
    };
    Ok(TrainValidationTest {
        train: pick(0),
        validation: pick(1),
        test: pick(2),
    })
}

/// A read-only view of a corpus without some documents (e.g. for "missing documents" experiments).
#[derive(Debug, Clone)]
pub struct CorpusView<'a> {
    corpus: &'a Corpus,
    removed: HashSet<String>,
}

impl<'a> CorpusView<'a> {
    /// The corpus minus `removed` (ids not in the corpus are ignored).
    pub fn without<I, S>(corpus: &'a Corpus, removed: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CorpusView {
            corpus,
            removed: removed.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the view holds this document.
    pub fn contains(&self, docid: &str) -> bool {
        !self.removed.contains(docid) && self.corpus.contains(docid)
    }

    /// The document, unless removed.
    pub fn get(&self, docid: &str) -> Option<&'a Document> {
        if self.removed.contains(docid) {
            None
        } else {
            self.corpus.get(docid)
        }
    }

    /// Documents of the view, in corpus order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Document> + '_ {
        self.corpus
            .iter()
            .filter(move |d| !self.removed.contains(&d.docid))
    }

    /// Number of documents in the view.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The removed ids that were in the corpus, sorted.
    pub fn removed(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .removed
            .iter()
            .map(String::as_str)
            .filter(|id| self.corpus.contains(id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The view as an owned corpus.
    pub fn to_corpus(&self) -> Corpus {
        self.iter().cloned().collect()
    }

    /// Judgments whose document is in the view.
    pub fn judgments(&self, qrels: &Qrels) -> Qrels {
        qrels.filter(|q| self.contains(&q.docid))
    }
}

/// `n` documents drawn at random with `seed` (all of them when `n >= len`), in corpus order.
pub fn sample_documents(corpus: &Corpus, n: usize, seed: u64) -> Corpus {
    let keep = sample_indices(corpus.len(), n, seed);
    corpus
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(d, _)| d.clone())
        .collect()
}

/// `n` queries drawn at random with `seed`, with their judgments.
pub fn sample_queries(set: &QuerySet, n: usize, seed: u64) -> QuerySet {
    let keep = sample_indices(set.queries.len(), n, seed);
    let queries: Queries = set
        .queries
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(q, _)| q.clone())
        .collect();
    let qrels = set.qrels.filter(|r| queries.contains(&r.qid));
    QuerySet { queries, qrels }
}

fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng(seed));
    let mut keep = vec![false; len];
    for &i in order.iter().take(n) {
        keep[i] = true;
    }
    keep
}

/// A collection restricted to `n` documents drawn with `seed`, the way NQ10k / NQ100k are drawn from NQ320k:
/// each split keeps the judgments of the kept documents and the queries that still have one.
pub fn subset_by_documents(collection: &Collection, n: usize, seed: u64, name: &str) -> Collection {
    let corpus = sample_documents(&collection.corpus, n, seed);
    let splits: BTreeMap<String, QuerySet> = collection
        .splits
        .iter()
        .map(|(k, set)| {
            let qrels = set.qrels.filter(|q| corpus.contains(&q.docid));
            let judged: HashSet<&str> = qrels.iter().map(|q| q.qid.as_str()).collect();
            let queries = set.queries.filter(|q| judged.contains(q.qid.as_str()));
            (k.clone(), QuerySet { queries, qrels })
        })
        .collect();
    Collection {
        name: name.to_string(),
        corpus,
        splits,
    }
}
