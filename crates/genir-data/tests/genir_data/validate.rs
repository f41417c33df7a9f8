use std::collections::BTreeMap;

use genir_data::validate::validate;
use genir_data::{Collection, Corpus, Document, Qrel, Qrels, Queries, Query, QuerySet};

#[test]
fn duplicates_and_dangling_references_are_reported_not_dropped() {
    let corpus = Corpus::new(vec![
        Document::new("d1", "", "one"),
        Document::new("d2", "", "two"),
        Document::new("d1", "", "one again"),
    ]);
    let queries = Queries::new(vec![
        Query::new("q1", "a"),
        Query::new("q2", "b"),
        Query::new("q1", "a again"),
        Query::new("q3", "never judged"),
    ]);
    let qrels = Qrels::new(vec![
        Qrel::new("q1", "d1", 1),
        Qrel::new("q1", "d1", 2),
        Qrel::new("q2", "d9", 1),
        Qrel::new("q7", "d2", 1),
    ]);
    assert_eq!(corpus.len(), 3, "duplicates are kept");
    assert_eq!(
        corpus.get("d1").unwrap().text,
        "one",
        "lookups return the first"
    );
    let r = validate(&corpus, &queries, &qrels);
    assert_eq!(r.duplicate_docids, ["d1"]);
    assert_eq!(r.duplicate_qids, ["q1"]);
    assert_eq!(r.duplicate_qrels, [("q1".to_string(), "d1".to_string())]);
    assert_eq!(r.dangling_docids, [Qrel::new("q2", "d9", 1)]);
    assert_eq!(r.dangling_qids, [Qrel::new("q7", "d2", 1)]);
    assert_eq!(r.unjudged_queries, ["q3"]);
    assert!(!r.is_consistent());
    let text = r.to_string();
    assert!(
        text.contains("1 judgments of documents not in the corpus: q2->d9"),
        "{text}"
    );
}

#[test]
fn a_qid_in_two_splits_is_leakage() {
    let corpus = Corpus::new(vec![Document::new("d", "", "x")]);
    let set = |qid: &str| QuerySet {
        queries: Queries::new(vec![Query::new(qid, "t")]),
        qrels: Qrels::new(vec![Qrel::new(qid, "d", 1)]),
    };
    let c = Collection {
        name: "t".into(),
        corpus,
        splits: BTreeMap::from([
            ("train".to_string(), set("q")),
            ("test".to_string(), set("q")),
            ("validation".to_string(), set("v")),
        ]),
    };
    let r = c.validate();
    assert_eq!(r.qids_in_several_splits, ["q (test, train)"]);
    assert!(!r.is_consistent());
}
