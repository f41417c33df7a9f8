//! BM25 (Robertson et al.; Lucene's variant): the lexical reference a GenIR model is compared with.
//!
//! Terms are [`perturb::tokenize`](crate::perturb::tokenize)d title + text (lowercase, split on
//! non-alphanumeric characters), the same terms the perturbations and [`CorpusStats`] use. A document's score for
//! a query is the sum, over the query's terms (a repeated term counts each time), of
//!
//! `idf(t) * tf / (tf + k1 * (1 - b + b * len / mean_len))`
//!
//! with `idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))` ([`CorpusStats::idf`]), `tf` the term's count in the
//! document and `len` the document's number of terms (Lucene 8's form, without the constant factor `k1 + 1` of
//! Robertson's, which changes no ranking; the `lucene` method of the Python package bm25s, against which it is
//! tested). Only documents sharing a term with the query are ranked;
//! ties are broken by docid, as in [`Run::from_scores`].
//!
//! ```
//! use genir_data::bm25::Bm25;
//! use genir_data::{Corpus, Document};
//!
//! let corpus = Corpus::new(vec![
//!     Document::new("d1", "", "the cat sat on the mat"),
//!     Document::new("d2", "", "the dog chased the cat"),
//! ]);
//! let bm25 = Bm25::new(&corpus);
//! let hits = bm25.search("dog", 10);
//! assert_eq!(hits.len(), 1);
//! assert_eq!(hits[0].0, "d2");
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use crate::perturb::{tokenize, CorpusStats};
use crate::types::{Corpus, Queries, Run};

/// An in-memory BM25 index of a corpus.
#[derive(Debug, Clone)]
pub struct Bm25 {
    /// Term-frequency saturation (default 0.9, Anserini's).
    pub k1: f64,
    /// Length normalisation (default 0.4, Anserini's).
    pub b: f64,
    docids: Vec<String>,
    lengths: Vec<u32>,
    mean_length: f64,
    /// term -> (document index, count), in document order.
    postings: HashMap<String, Vec<(u32, u32)>>,
    stats: Arc<CorpusStats>,
}

impl Bm25 {
    /// Indexes every document of `corpus` (title and text) with Anserini's defaults `k1 = 0.9`, `b = 0.4`.
    pub fn new(corpus: &Corpus) -> Self {
        Self::with_params(corpus, 0.9, 0.4)
    }

    /// Indexes `corpus` with the given `k1` and `b`.
    pub fn with_params(corpus: &Corpus, k1: f64, b: f64) -> Self {
        let mut docids = Vec::with_capacity(corpus.len());
        let mut lengths = Vec::with_capacity(corpus.len());
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        for (i, d) in corpus.iter().enumerate() {
            let mut terms = tokenize(&d.title);
            terms.extend(tokenize(&d.text));
            let mut tf: HashMap<String, u32> = HashMap::new();
            for t in &terms {
                *tf.entry(t.clone()).or_insert(0) += 1;
            }
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            for (t, n) in tf {
                postings.entry(t).or_default().push((idx, n));
            }
            docids.push(d.docid.clone());
            lengths.push(u32::try_from(terms.len()).unwrap_or(u32::MAX));
        }
        for p in postings.values_mut() {
            p.sort_unstable();
        }
        // The corpus caches its statistics (shared with the perturbations), so this is computed at most once.
        let stats = corpus.stats();
        Bm25 {
            k1,
            b,
            docids,
            lengths,
            mean_length: stats.mean_length(),
            postings,
            stats,
        }
    }

    /// Number of indexed documents.
    pub fn len(&self) -> usize {
        self.docids.len()
    }

    /// Whether no document is indexed.
    pub fn is_empty(&self) -> bool {
        self.docids.is_empty()
    }

    /// Every document's score for `query` (0 for documents without a query term), in corpus order.
    pub fn scores(&self, query: &str) -> Vec<f64> {
        let mut s = vec![0.0f64; self.docids.len()];
        for t in tokenize(query) {
            let Some(post) = self.postings.get(&t) else {
                continue;
            };
            let idf = self.stats.idf(&t);
            for &(d, tf) in post {
                let tf = f64::from(tf);
                let len = f64::from(self.lengths[d as usize]);
                let norm = self.k1 * (1.0 - self.b + self.b * len / self.mean_length);
                s[d as usize] += idf * tf / (tf + norm);
            }
        }
        s
    }

    /// The `k` best documents for `query` as `(docid, score)`, best first (ties by docid); only documents
    /// with a query term.
    pub fn search(&self, query: &str, k: usize) -> Vec<(String, f64)> {
        let scores = self.scores(query);
        let mut hits: Vec<(usize, f64)> = scores
            .into_iter()
            .enumerate()
            .filter(|(_, s)| *s > 0.0)
            .collect();
        hits.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.docids[a.0].cmp(&self.docids[b.0]))
        });
        hits.truncate(k);
        hits.into_iter()
            .map(|(i, s)| (self.docids[i].clone(), s))
            .collect()
    }

    /// A run of the `k` best documents for every query, tagged `tag`.
    pub fn run(&self, queries: &Queries, k: usize, tag: &str) -> Run {
        Run::from_scores(
            tag,
            queries
                .iter()
                .map(|q| (q.qid.as_str(), self.search(&q.text, k))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Bm25;
    use crate::{Corpus, Document, Queries, Query};

    fn corpus() -> Corpus {
        Corpus::new(vec![
            Document::new("a", "Cats", "the cat sat on the mat"),
            Document::new("b", "", "the dog chased the cat the cat ran"),
            Document::new("c", "", "dogs and birds"),
        ])
    }

    #[test]
    fn scores_follow_the_formula_term_by_term() {
        let bm = Bm25::with_params(&corpus(), 1.2, 0.75);
        // lengths 7 (title "cats" + 6), 8, 3; mean 6; N = 3
        let idf = |df: f64| (1.0 + (3.0 - df + 0.5) / (df + 0.5)).ln();
        let term = |tf: f64, len: f64, df: f64| {
            idf(df) * tf / (tf + 1.2 * (1.0 - 0.75 + 0.75 * len / 6.0))
        };
        let s = bm.scores("Cat, dog! cat");
        let want_a = 2.0 * term(1.0, 7.0, 2.0);
        let want_b = 2.0 * term(2.0, 8.0, 2.0) + term(1.0, 8.0, 1.0);
        assert!((s[0] - want_a).abs() < 1e-12, "{} vs {want_a}", s[0]);
        assert!((s[1] - want_b).abs() < 1e-12, "{} vs {want_b}", s[1]);
        assert_eq!(s[2], 0.0);
        // "dogs" is its own term; an unknown term adds nothing
        assert_eq!(bm.scores("zebra"), vec![0.0; 3]);
    }

    #[test]
    fn search_ranks_best_first_drops_non_matching_documents_and_breaks_ties_by_docid() {
        let c = Corpus::new(vec![
            Document::new("z", "", "apple pie"),
            Document::new("y", "", "apple tart"),
            Document::new("x", "", "pear"),
        ]);
        let bm = Bm25::new(&c);
        let hits = bm.search("apple", 10);
        let ids: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(ids, ["y", "z"]);
        assert_eq!(hits[0].1, hits[1].1);
        assert_eq!(bm.search("apple", 1).len(), 1);
        let run = bm.run(
            &Queries::new(vec![Query::new("q1", "pear apple")]),
            10,
            "bm25",
        );
        assert_eq!(run.entries[0].docid, "x");
        assert_eq!(run.entries[0].rank, 1);
        assert_eq!(run.len(), 3);
        assert!(Bm25::new(&Corpus::new(vec![])).is_empty());
    }
}
