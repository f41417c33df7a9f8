use std::collections::HashSet;

use genir_data::split::{self, CorpusView, Fractions};
use genir_data::{shipped, Corpus, Document, QuerySet};

fn set() -> QuerySet {
    shipped::load("wiki-genir-mini").unwrap().splits["train"].clone()
}

#[test]
fn query_split_is_seeded_disjoint_and_complete() {
    let s = set();
    let a = split::split_queries(&s, Fractions::default(), 7).unwrap();
    let b = split::split_queries(&s, Fractions::default(), 7).unwrap();
    let c = split::split_queries(&s, Fractions::default(), 8).unwrap();
    assert_eq!(a, b, "same seed, same split");
    assert_ne!(
        a.test.queries, c.test.queries,
        "another seed, another split"
    );
    let n = s.queries.len();
    assert_eq!(a.train.queries.len(), ((n as f64) * 0.8).round() as usize);
    assert_eq!(
        a.validation.queries.len(),
        ((n as f64) * 0.1).round() as usize
    );
    let mut all: Vec<&str> = [&a.train, &a.validation, &a.test]
        .iter()
        .flat_map(|x| x.queries.qids())
        .collect();
    assert_eq!(all.len(), n);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "disjoint");
    assert_eq!(
        a.train.qrels.len() + a.validation.qrels.len() + a.test.qrels.len(),
        s.qrels.len()
    );
    for part in [&a.train, &a.validation, &a.test] {
        for q in &part.qrels {
            assert!(part.queries.contains(&q.qid));
        }
    }
}

#[test]
fn bad_fractions_are_rejected() {
    let bad = Fractions {
        train: 0.9,
        validation: 0.2,
        test: 0.0,
    };
    assert!(split::split_queries(&set(), bad, 1).is_err());
}

#[test]
fn corpus_view_hides_documents() {
    let corpus = Corpus::new(vec![
        Document::new("a", "", "x"),
        Document::new("b", "", "y"),
        Document::new("c", "", "z"),
    ]);
    let view = CorpusView::without(&corpus, ["b", "not-there"]);
    assert_eq!(view.len(), 2);
    assert!(view.get("b").is_none() && view.get("c").is_some());
    assert_eq!(view.removed(), ["b"]);
    assert_eq!(view.to_corpus().docids().collect::<Vec<_>>(), ["a", "c"]);
    let qrels = genir_data::Qrels::new(vec![
        genir_data::Qrel::new("q", "a", 1),
        genir_data::Qrel::new("q", "b", 1),
    ]);
    assert_eq!(view.judgments(&qrels).len(), 1);
    assert_eq!(corpus.len(), 3, "the corpus itself is untouched");
}

#[test]
fn subsets_by_size_are_seeded_and_keep_only_answerable_queries() {
    let full = shipped::load("wiki-genir-mini").unwrap();
    let a = split::subset_by_documents(&full, 50, 3, "mini50");
    let b = split::subset_by_documents(&full, 50, 3, "mini50");
    let c = split::subset_by_documents(&full, 50, 4, "mini50");
    assert_eq!(a, b);
    assert_ne!(a.corpus, c.corpus);
    assert_eq!(a.corpus.len(), 50);
    assert!(a.validate().is_clean(), "{}", a.validate());
    let kept: HashSet<&str> = a.corpus.docids().collect();
    for set in a.splits.values() {
        for q in &set.queries {
            assert!(set.qrels.relevant(&q.qid).any(|d| kept.contains(d)));
        }
    }
    // Every original query with a judged document in the subset is kept.
    let expected: usize = full.splits["train"]
        .queries
        .iter()
        .filter(|q| {
            full.splits["train"]
                .qrels
                .relevant(&q.qid)
                .any(|d| kept.contains(d))
        })
        .count();
    assert_eq!(a.splits["train"].queries.len(), expected);
    assert_eq!(
        split::sample_documents(&full.corpus, 10_000, 1).len(),
        full.corpus.len()
    );
    let q = split::sample_queries(&full.splits["train"], 10, 9);
    assert_eq!(q.queries.len(), 10);
    assert!(q.qrels.iter().all(|r| q.queries.contains(&r.qid)));
}
