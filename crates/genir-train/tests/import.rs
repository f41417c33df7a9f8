//! `GenirModel::import_atomic` against a checkpoint that transformers wrote the way the paper's code
//! (technion-cs-nlp/re-gen-ir) writes one: one added token `@DOC_ID_<docid>@` per docid, in shuffled order, and
//! a resized table (`tools/reference/make_hf_dsi_fixture.py`, run by hand; its logits are transformers').

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use genir_train::bundle::{DocidTokenPattern, GenirModel};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-dsi-atomic")
}

#[derive(serde::Deserialize)]
struct Expected {
    pattern: String,
    docids_by_token_id: Vec<String>,
    queries: Vec<ExpectedQuery>,
}

#[derive(serde::Deserialize)]
struct ExpectedQuery {
    text: String,
    input_ids: Vec<u32>,
    docid_logits: BTreeMap<String, f64>,
    top: String,
}

fn expected() -> Expected {
    serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap()
}

fn import(pattern: &str) -> genir_train::Result<GenirModel> {
    GenirModel::import_atomic(&fixture(), &pattern.parse()?, &Device::flex())
}

#[test]
fn a_python_dsi_checkpoint_imports_and_ranks_docids_as_transformers_does() {
    let exp = expected();
    let gm = import(&exp.pattern).unwrap();
    // the docids in token-id order (they were added shuffled), on the rows right after the 300 text tokens
    assert!(gm.scheme.is_atomic());
    assert_eq!(gm.scheme.docids, exp.docids_by_token_id);
    assert_eq!((gm.scheme.token_offset, gm.scheme.vocab_size()), (300, 316));
    let searcher = gm.searcher().unwrap();
    let mut tops = Vec::new();
    for q in &exp.queries {
        assert_eq!(
            searcher
                .encode_queries(std::slice::from_ref(&q.text))
                .unwrap()[0],
            q.input_ids,
            "{}",
            q.text
        );
        let hits = searcher
            .search(std::slice::from_ref(&q.text), gm.scheme.len())
            .unwrap()
            .remove(0);
        assert_eq!(hits.len(), 16);
        assert_eq!(hits[0].docid, q.top, "{}", q.text);
        // every docid's score relative to the top one is transformers' logit difference (the normalisation
        // cancels), within 1e-4
        let top = q.docid_logits[&q.top];
        for h in &hits {
            let want = q.docid_logits[&h.docid] - top;
            let got = f64::from(h.score - hits[0].score);
            assert!(
                (got - want).abs() < 1e-4,
                "{}: docid {} at {got}, transformers {want}",
                q.text,
                h.docid
            );
        }
        tops.push(hits[0].docid.clone());
    }
    // the fixture is not degenerate: the five queries retrieve five different docids
    tops.sort();
    tops.dedup();
    assert_eq!(tops.len(), 5);

    // saved as a genir folder, it opens like a trained model and ranks the same
    let tmp = tempfile::tempdir().unwrap();
    gm.save(tmp.path()).unwrap();
    let back = GenirModel::load(tmp.path(), &Device::flex()).unwrap();
    assert_eq!(back.scheme.docids, gm.scheme.docids);
    let q = &exp.queries[2];
    let hit = &back
        .searcher()
        .unwrap()
        .search(std::slice::from_ref(&q.text), 1)
        .unwrap()[0][0];
    assert_eq!(hit.docid, q.top);
}

#[test]
fn bad_patterns_and_checkpoints_get_errors_that_say_what_is_wrong() {
    for bad in ["@DOC_ID_@", "{}", "{}x{}"] {
        let e = bad.parse::<DocidTokenPattern>().unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("exactly one {}"), "{e}");
    }
    let p: DocidTokenPattern = "@DOC_ID_{}@".parse().unwrap();
    assert_eq!(p.docid_of("@DOC_ID_doc-7@"), Some("doc-7"));
    assert_eq!(p.docid_of("@DOC_ID_@"), None);
    assert_eq!(p.docid_of("DOC_ID_7@"), None);
    assert_eq!(p.to_string(), "@DOC_ID_{}@");

    // no token matches: the tokenizer file and the pattern are named
    let e = import("<docid_{}>").unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("no token matches") && e.contains("<docid_{}>"),
        "{e}"
    );
    // tokens that match but are not consecutive ids: docids 12, 15, 14, 10, 13, 11 (ids 300, 304, 307, 309,
    // 311, 313); id 301 is docid 3's token
    let e = import("@DOC_ID_1{}@").unwrap_err().to_string();
    assert!(
        e.contains("6 tokens") && e.contains("300..=313") && e.contains("\"@DOC_ID_3@\""),
        "{e}"
    );
    // a folder that is not a model
    let tmp = tempfile::tempdir().unwrap();
    let e = GenirModel::import_atomic(tmp.path(), &p, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&tmp.path().display().to_string()), "{e}");
}
