//! genir's measures against pytrec_eval (trec_eval 9) on the same run and qrels.
//! Fixture: `tools/reference/make_metrics_fixture.py`. Tolerance: 1e-9 (both compute in f64).

use std::path::Path;

use genir_data::formats::{load_qrels, load_run};
use genir_train::metrics::{evaluate, RECALL_CUTOFFS};

#[test]
fn measures_agree_with_pytrec_eval() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics");
    let run = load_run(&dir.join("run.trec")).unwrap();
    let qrels = load_qrels(&dir.join("qrels.trec")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let per_query = expected["per_query"].as_object().unwrap();
    let qids: Vec<String> = per_query.keys().cloned().collect();
    let ev = evaluate(&run, &qrels, Some(&qids));
    assert_eq!(ev.per_query.len(), per_query.len());
    let close = |a: f64, b: f64, what: &str| {
        assert!((a - b).abs() < 1e-9, "{what}: genir {a} vs pytrec_eval {b}")
    };
    for m in &ev.per_query {
        let e = &per_query[&m.qid];
        close(
            m.hits_at_1,
            e["hits_at_1"].as_f64().unwrap(),
            &format!("{} Hits@1", m.qid),
        );
        close(
            m.hits_at_10,
            e["hits_at_10"].as_f64().unwrap(),
            &format!("{} Hits@10", m.qid),
        );
        close(
            m.mrr_at_10,
            e["mrr_at_10"].as_f64().unwrap(),
            &format!("{} MRR@10", m.qid),
        );
        for (i, k) in RECALL_CUTOFFS.iter().enumerate() {
            close(
                m.recall[i],
                e[format!("recall_at_{k}")].as_f64().unwrap(),
                &format!("{} R@{k}", m.qid),
            );
        }
    }
    let mean = &expected["mean"];
    close(
        ev.hits_at_1,
        mean["hits_at_1"].as_f64().unwrap(),
        "mean Hits@1",
    );
    close(
        ev.hits_at_10,
        mean["hits_at_10"].as_f64().unwrap(),
        "mean Hits@10",
    );
    close(
        ev.mrr_at_10,
        mean["mrr_at_10"].as_f64().unwrap(),
        "mean MRR@10",
    );
    // the fixture exercises ties at the cut-offs and queries with nothing relevant retrieved
    assert!(ev.per_query.iter().any(|m| m.hits_at_10 == 0.0));
    assert!(ev
        .per_query
        .iter()
        .any(|m| m.mrr_at_10 > 0.0 && m.mrr_at_10 < 1.0));
}

#[test]
fn per_query_table_round_trips_through_parquet() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics");
    let run = load_run(&dir.join("run.trec")).unwrap();
    let qrels = load_qrels(&dir.join("qrels.trec")).unwrap();
    let ev = evaluate(&run, &qrels, None);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("per_query.parquet");
    ev.write_parquet(&p).unwrap();
    let t = genir_data::Table::read_parquet(&p).unwrap();
    assert_eq!(t.height(), ev.per_query.len());
    assert_eq!(
        t.f64s("mrr_at_10").unwrap(),
        ev.per_query.iter().map(|q| q.mrr_at_10).collect::<Vec<_>>()
    );
    assert!(t.column("recall_at_100").is_ok());
    let ranks = t.column("first_relevant_rank").unwrap();
    for (i, q) in ev.per_query.iter().enumerate() {
        assert_eq!(ranks.is_null(i), q.first_relevant_rank.is_none());
    }
}
