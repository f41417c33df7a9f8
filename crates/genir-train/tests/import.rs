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

#[derive(serde::Deserialize)]
struct ExpectedText {
    model: String,
    docids: Vec<String>,
    targets: BTreeMap<String, Vec<String>>,
    queries: Vec<ExpectedTextQuery>,
    semantic: ExpectedSemantic,
}

#[derive(serde::Deserialize)]
struct ExpectedSemantic {
    ids: BTreeMap<String, String>,
    targets: BTreeMap<String, Vec<String>>,
    queries: Vec<ExpectedTextQuery>,
}

#[derive(serde::Deserialize)]
struct ExpectedTextQuery {
    text: String,
    scores: BTreeMap<String, f64>,
    top: String,
}

#[test]
fn renamed_docid_tokens_export_what_the_python_code_looks_up() {
    let exp = expected();
    let gm = import(&exp.pattern).unwrap();
    assert_eq!(
        DocidTokenPattern::of_scheme(&gm.scheme).map(|p| p.to_string()),
        Some(exp.pattern.clone())
    );
    let rows: Vec<(String, u32)> = gm
        .scheme
        .docids
        .iter()
        .map(|d| {
            (
                d.clone(),
                gm.tok
                    .inner()
                    .token_to_id(&format!("@DOC_ID_{d}@"))
                    .unwrap(),
            )
        })
        .collect();
    let queries: Vec<String> = exp.queries.iter().map(|q| q.text.clone()).collect();
    let before = gm.searcher().unwrap().search(&queries, 16).unwrap();
    let renamed = gm
        .rename_docid_tokens(&"<doc {}>".parse().unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    renamed.save(dir.path()).unwrap();
    // the copy opens as a genir model and, through its new names, as a checkpoint of Python DSI code
    for gm in [
        GenirModel::load(dir.path(), &Device::flex()).unwrap(),
        GenirModel::import_atomic(dir.path(), &"<doc {}>".parse().unwrap(), &Device::flex())
            .unwrap(),
    ] {
        assert_eq!(
            DocidTokenPattern::of_scheme(&gm.scheme).map(|p| p.to_string()),
            Some("<doc {}>".into())
        );
        for (d, row) in &rows {
            assert_eq!(
                gm.tok.inner().token_to_id(&format!("<doc {d}>")),
                Some(*row)
            );
            assert_eq!(gm.tok.inner().token_to_id(&format!("@DOC_ID_{d}@")), None);
        }
        let after = gm.searcher().unwrap().search(&queries, 16).unwrap();
        for (a, b) in before.iter().zip(&after) {
            let key = |h: &[genir_train::search::Hit]| {
                h.iter()
                    .map(|h| (h.docid.clone(), h.score.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(key(a), key(b), "same weights, same scores");
        }
    }
    // a name that is already a text token (the tokenizer has `▁0`), and docids that are not atomic
    let e = import(&exp.pattern)
        .unwrap()
        .rename_docid_tokens(&"▁{}".parse().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("\"▁0\"") && e.contains("already text token"),
        "{e}"
    );
    let text = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-dsi-text/expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(text["model"].as_str().unwrap());
    let docids: Vec<String> = serde_json::from_value(text["docids"].clone()).unwrap();
    let e = GenirModel::import_text(&model_dir, &docids, &docids, &Device::flex())
        .unwrap()
        .rename_docid_tokens(&"@DOC_ID_{}@".parse().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("only atomic docids"), "{e}");
}

#[test]
fn text_docids_of_python_dsi_code_import_and_score_as_transformers_does() {
    // tools/reference/make_hf_dsi_text_fixture.py: naive docids as the model's own tokens (`text_target`), each
    // docid's log-probability (every step normalised over the whole vocabulary), by transformers
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-dsi-text");
    let exp: ExpectedText =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(&exp.model);
    let gm =
        GenirModel::import_text(&model_dir, &exp.docids, &exp.docids, &Device::flex()).unwrap();
    assert!(!gm.scheme.is_atomic());
    assert_eq!(gm.scheme.docids, exp.docids);
    // 12 docid tokens (the distinct text tokens of the targets; `</s>` closes each docid) after the table's
    // 312 rows (a 300-token tokenizer padded with 12 unused tokens), each a copy of its text token
    assert_eq!((gm.scheme.token_offset, gm.scheme.n_tokens()), (312, 12));
    assert_eq!(
        (gm.model.config.vocab_size, gm.tok.vocab_size()),
        (324, 324)
    );
    assert_eq!(gm.tok.id_to_token(311).unwrap(), "<unused_311>");
    check_text_import(&gm, &exp.targets, &exp.queries);

    // semantic ids in the paper's form (`1_4_2`, tokenized as the words 1, 4, 2)
    let written: Vec<String> = exp
        .docids
        .iter()
        .map(|d| exp.semantic.ids[d].replace('_', " "))
        .collect();
    let gm = GenirModel::import_text(&model_dir, &exp.docids, &written, &Device::flex()).unwrap();
    check_text_import(&gm, &exp.semantic.targets, &exp.semantic.queries);

    // docids the tokenizer cannot write are refused by name
    let two = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    let e = GenirModel::import_text(&model_dir, &two("12", "x"), &two("12", ""), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("docid \"x\", written \"\"") && e.contains("tokenizer.json"),
        "{e}"
    );
    let e = GenirModel::import_text(
        &model_dir,
        &two("12", "12"),
        &two("12", "13"),
        &Device::flex(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("12"), "{e}");
}

/// The imported model writes every docid with transformers' tokens and scores every docid of every query as
/// transformers does (exhaustive beam search and teacher forcing), within 1e-4.
fn check_text_import(
    gm: &GenirModel,
    targets: &BTreeMap<String, Vec<String>>,
    queries: &[ExpectedTextQuery],
) {
    let n = gm.scheme.len();
    for (doc, d) in gm.scheme.docids.iter().enumerate() {
        let target = gm.scheme.target(doc);
        let (last, code) = target.split_last().unwrap();
        assert_eq!(*last, gm.scheme.eos);
        let names: Vec<String> = code
            .iter()
            .map(|&t| gm.tok.id_to_token(t).unwrap())
            .collect();
        let want: Vec<String> = targets[d].iter().map(|t| format!("<docid:{t}>")).collect();
        assert_eq!(names, want, "docid {d}");
    }
    let mut searcher = gm.searcher().unwrap();
    searcher.beams = n;
    let docs: Vec<usize> = (0..n).collect();
    for q in queries {
        // beams as wide as the collection: the search is exhaustive
        let hits = searcher
            .search(std::slice::from_ref(&q.text), n)
            .unwrap()
            .remove(0);
        assert_eq!(hits.len(), n);
        assert_eq!(hits[0].docid, q.top, "{}", q.text);
        for h in &hits {
            let want = q.scores[&h.docid];
            assert!(
                (f64::from(h.score) - want).abs() < 1e-4,
                "{}: docid {} scored {} by genir, {want} by transformers",
                q.text,
                h.docid,
                h.score
            );
        }
        // teacher-forced scores (what the analyses use for "rank of the docid") are the same numbers
        let ids = searcher
            .encode_queries(std::slice::from_ref(&q.text))
            .unwrap();
        let forced = searcher.score_docs(&ids[0], &docs).unwrap();
        for (d, f) in gm.scheme.docids.iter().zip(forced) {
            assert!(
                (f64::from(f) - q.scores[d]).abs() < 1e-4,
                "{}: docid {d}",
                q.text
            );
        }
    }
}
