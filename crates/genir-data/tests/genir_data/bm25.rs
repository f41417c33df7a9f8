//! BM25 against the Python package bm25s (method "lucene", float64) on the shipped mini collection
//! (fixture by tools/reference/make_bm25_fixture.py).

use genir_data::bm25::Bm25;
use genir_data::shipped;

use crate::fixture;

#[test]
fn bm25_matches_bm25s_on_the_mini_collection() {
    let c = shipped::load("wiki-genir-mini").unwrap();
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("bm25/wiki-genir-mini.json")).unwrap(),
    )
    .unwrap();
    let bm = Bm25::new(&c.corpus);
    assert_eq!(bm.k1, want["k1"].as_f64().unwrap());
    assert_eq!(bm.b, want["b"].as_f64().unwrap());
    let queries = want["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 42);
    let mut worst = 0.0f64;
    for q in queries {
        let got = bm.search(q["text"].as_str().unwrap(), 10);
        let top = q["top"].as_array().unwrap();
        assert_eq!(got.len(), top.len(), "{}", q["qid"]);
        for (g, w) in got.iter().zip(top) {
            let (docid, score) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            assert_eq!(g.0, docid, "{}: {got:?} vs {top:?}", q["qid"]);
            worst = worst.max((g.1 - score).abs() / score);
        }
    }
    // the same float64 formula; only the order of the sums over query terms may differ
    assert!(worst < 1e-12, "relative score difference {worst:e}");
}
