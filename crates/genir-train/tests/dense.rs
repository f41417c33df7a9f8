//! Dense retrieval (`genir_train::dense`) against the bi-encoder's own pair scores (the tiny BERT fixture of
//! genir-model) and against sentence-transformers with the real all-MiniLM-L6-v2 (fixture from
//! `tools/reference/make_dense_fixture.py`; skipped with a printed reason when the model is not installed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use genir_data::{Corpus, Document, Queries, Query};
use genir_model::bert::Dot;
use genir_model::hooks::Hooks;
use genir_train::dense::DenseIndex;
use genir_train::metrics::evaluate;

fn tiny_dot() -> Dot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../genir-model/tests/fixtures/bert/bert-dot-bin");
    Dot::from_pretrained(&dir, &Device::flex()).expect("tiny bi-encoder fixture")
}

fn corpus() -> Corpus {
    Corpus::new(vec![
        Document::new("d0", "Sorting", "Return a new sorted list from the items in iterable."),
        Document::new("d1", "", "Open file and return a stream."),
        Document::new("d2", "Files", "Read and return at most size bytes from the stream, or until end of file is reached, whichever comes first; an empty result means the end."),
        Document::new("d3", "", "The quick fox."),
        Document::new("d4", "Paths", "Return the absolute version of a path."),
        Document::new("d5", "", "Join two or more path components, inserting the separator as needed."),
        Document::new("d6", "Numbers", "Return the absolute value of the argument."),
        Document::new("d7", "", "a"),
        Document::new("d8", "Lists", "Append object to the end of the list; extend the list by appending elements from the iterable."),
    ])
}

const QUERIES: [&str; 4] = ["sort a list", "open file", "absolute path", "the fox"];

#[test]
fn dense_scores_are_the_bi_encoders_own_pair_scores_in_any_batching() {
    let c = corpus();
    let dot = tiny_dot();
    // the reference: Dot::score, one encoder pass per (query, document) pair
    let want: Vec<Vec<f32>> = QUERIES
        .iter()
        .map(|q| {
            c.iter()
                .map(|d| dot.score(q, &d.full_text(), &mut Hooks::none()).unwrap())
                .collect()
        })
        .collect();
    for batch in [1, 4, 64] {
        let index = DenseIndex::build(tiny_dot(), &c, batch).unwrap();
        assert_eq!(index.len(), c.len());
        let got = index.scores(&QUERIES).unwrap();
        for (q, (g, w)) in got.iter().zip(&want).enumerate() {
            for (d, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "batch {batch}, query {q}, doc {d}: {a} vs pair score {b}"
                );
            }
        }
        // rankings: best first, ties by docid, the scores above
        let hits = index.search(&QUERIES, 3).unwrap();
        for (q, h) in hits.iter().enumerate() {
            assert_eq!(h.len(), 3);
            let mut order: Vec<usize> = (0..c.len()).collect();
            order.sort_by(|&a, &b| want[q][b].total_cmp(&want[q][a]).then(a.cmp(&b)));
            for (r, (docid, score)) in h.iter().enumerate() {
                assert!((*score as f32 - want[q][order[r]]).abs() < 1e-5);
                if r > 0 {
                    assert!(h[r - 1].1 >= *score, "query {q}: not best first");
                }
                // the same document unless two scores are within rounding of each other
                let gap = |i: usize| (want[q][order[i]] - want[q][order[i + 1]]).abs();
                if gap(r) > 1e-5 && (r == 0 || gap(r - 1) > 1e-5) {
                    assert_eq!(docid, &c.as_slice()[order[r]].docid, "query {q} rank {r}");
                }
            }
        }
    }
    // k beyond the corpus returns every document once; k = 0 none
    let index = DenseIndex::build(tiny_dot(), &c, 8).unwrap();
    let all = index.search(&["open file"], 100).unwrap();
    let mut ids: Vec<&str> = all[0].iter().map(|h| h.0.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, c.docids().collect::<Vec<_>>());
    assert!(index.search(&["open file"], 0).unwrap()[0].is_empty());
    // a run carries the same rankings
    let queries = Queries::new(
        QUERIES
            .iter()
            .enumerate()
            .map(|(i, q)| Query::new(format!("q{i}"), *q))
            .collect(),
    );
    let run = index.run(&queries, 3, "tiny").unwrap();
    assert_eq!(run.len(), 12);
    let top: Vec<&str> = run.for_query("q1").map(|e| e.docid.as_str()).collect();
    let want_top: Vec<String> = index.search(&["open file"], 3).unwrap()[0]
        .iter()
        .map(|h| h.0.clone())
        .collect();
    assert_eq!(top, want_top);
    // embeddings are unit rows for a cosine model
    for row in index.embeddings().unwrap() {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    // a sub-collection keeps its documents' scores and ranks only them
    let mut sub = DenseIndex::build(tiny_dot(), &c, 8).unwrap();
    sub.retain(|d| d != "d1" && d != "d4").unwrap();
    assert_eq!(sub.len(), c.len() - 2);
    let kept: Vec<usize> = (0..c.len()).filter(|&i| i != 1 && i != 4).collect();
    for (q, row) in sub.scores(&QUERIES).unwrap().iter().enumerate() {
        let want_row: Vec<f32> = kept.iter().map(|&i| want[q][i]).collect();
        for (a, b) in row.iter().zip(&want_row) {
            assert!((a - b).abs() < 1e-5, "query {q}: {a} vs {b}");
        }
    }
    let hits = sub.search(&["open file"], 100).unwrap();
    assert_eq!(hits[0].len(), c.len() - 2);
    assert!(hits[0].iter().all(|h| h.0 != "d1" && h.0 != "d4"));
    let err = sub.retain(|_| false).unwrap_err();
    assert!(err.to_string().contains("no document left"), "{err}");
}

#[test]
fn an_empty_corpus_no_tokenizer_or_zero_batch_is_a_clear_error() {
    let err = DenseIndex::build(tiny_dot(), &Corpus::new(vec![]), 8).unwrap_err();
    assert!(err.to_string().contains("no documents"), "{err}");
    let err = DenseIndex::build(tiny_dot(), &corpus(), 0).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    let mut dot = tiny_dot();
    dot.tokenizer = None;
    let err = DenseIndex::build(dot, &corpus(), 8).unwrap_err();
    assert!(err.to_string().contains("tokenizer"), "{err}");
    let err =
        DenseIndex::from_pretrained(Path::new("/nonexistent/model"), &corpus(), &Device::flex())
            .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model"), "{err}");
}

#[derive(serde::Deserialize)]
struct SplitHits {
    queries: usize,
    hits_at_1: f64,
    hits_at_10: f64,
}

#[derive(serde::Deserialize)]
struct Reference {
    hits: BTreeMap<String, SplitHits>,
    queries: BTreeMap<String, Vec<(String, f64)>>,
}

/// Tolerance on a cosine: f32 encoders (genir's flex kernels against PyTorch's) agree to about 1e-6 per
/// embedding component; 1e-4 leaves room for 384-term sums.
const TOL: f64 = 1e-4;

#[test]
fn real_minilm_ranks_the_mini_collection_as_sentence_transformers_does() {
    let dir = std::env::var("GENIR_MINILM_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    if !dir.join("config.json").exists() {
        eprintln!(
            "SKIP real_minilm_ranks_the_mini_collection_as_sentence_transformers_does: no model at {} \
             (set GENIR_MINILM_DIR, or run tools/models/install_reference_models.sh)",
            dir.display()
        );
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dense/minilm-wiki-genir-mini.json");
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mini = genir_data::shipped::load("wiki-genir-mini").unwrap();
    let index = DenseIndex::from_pretrained(&dir, &mini.corpus, &Device::flex()).unwrap();
    let mut worst = 0.0f64;
    for (name, split) in &mini.splits {
        let run = index.run(&split.queries, 10, "minilm").unwrap();
        for q in split.queries.iter() {
            let want = &reference.queries[&q.qid];
            let got: Vec<_> = run.for_query(&q.qid).collect();
            assert_eq!(got.len(), want.len(), "{}", q.qid);
            for (r, (g, (wd, ws))) in got.iter().zip(want).enumerate() {
                let d = (g.score - ws).abs();
                worst = worst.max(d);
                assert!(d < TOL, "{} rank {}: {} vs {ws}", q.qid, r + 1, g.score);
                // the same document unless its reference neighbours are within the tolerance
                let near = |i: usize| {
                    want.get(i)
                        .zip(want.get(i + 1))
                        .is_some_and(|(a, b)| (a.1 - b.1).abs() < 2.0 * TOL)
                };
                if !near(r) && (r == 0 || !near(r - 1)) {
                    assert_eq!(&g.docid, wd, "{} rank {}", q.qid, r + 1);
                }
            }
        }
        let qids: Vec<String> = split.queries.qids().map(String::from).collect();
        let ev = evaluate(&run, &split.qrels, Some(&qids));
        let want = &reference.hits[name];
        assert_eq!(ev.per_query.len(), want.queries, "{name}");
        assert!(
            (ev.hits_at_1 - want.hits_at_1).abs() < 1e-9,
            "{name} Hits@1"
        );
        assert!(
            (ev.hits_at_10 - want.hits_at_10).abs() < 1e-9,
            "{name} Hits@10"
        );
    }
    eprintln!(
        "all-MiniLM-L6-v2 dense ranking of wiki-genir-mini: worst score difference {worst:.2e}"
    );
}
