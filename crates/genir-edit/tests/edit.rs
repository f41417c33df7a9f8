//! Editing tiny trained models: delete, add (IncDSI, rank-one), change, batches, the edit log (replay, undo)
//! and errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use genir_data::{Collection, Corpus, Document, Qrel, Qrels, Queries, Query, QuerySet};
use genir_edit::{AddMethod, ChangedDocument, EditError, Editor, NewDocument};
use genir_model::hooks::Hooks;
use genir_model::t5::{pad_batch, T5Model};
use genir_train::bundle::GenirModel;
use genir_train::docid::DocidKind;
use genir_train::examples::ExampleConfig;
use genir_train::metrics::evaluate;
use genir_train::train::{Architecture, Init, LogProgress, TrainConfig, Trainer};

const N_DOCS: usize = 40;
/// Documents left out of the base model (added by the tests).
const N_NEW: usize = 4;

const SYL: [&str; 14] = [
    "ba", "de", "fi", "go", "ku", "la", "me", "ni", "po", "ru", "sa", "te", "vo", "zi",
];

/// Word `slot` of document `doc`: two or three syllables, unique per (doc, slot).
fn word(doc: usize, slot: usize) -> String {
    let k = doc * 7 + slot;
    format!(
        "{}{}{}",
        SYL[k % 14],
        SYL[(k / 14) % 14],
        SYL[(k / 196) % 14]
    )
}

fn doc_text(doc: usize) -> String {
    let w: Vec<String> = (0..7).map(|s| word(doc, s)).collect();
    format!(
        "The {} is about {} and {}. Many people study {} with {}. The {} of {} is well known.",
        w[0], w[1], w[2], w[3], w[4], w[5], w[6]
    )
}

fn docid(doc: usize) -> String {
    format!("d{doc}")
}

/// Query texts of a document per split.
fn queries_of(doc: usize) -> [(&'static str, String); 3] {
    let w = |s| word(doc, s);
    [
        ("train", format!("{} {}", w(0), w(1))),
        ("validation", format!("study {} {}", w(3), w(4))),
        ("test", format!("{} of {}", w(5), w(6))),
    ]
}

/// Documents `0..N_DOCS`; `skip` documents get no corpus entry and no queries.
fn collection(skip: &[usize]) -> Collection {
    let docs = (0..N_DOCS)
        .filter(|d| !skip.contains(d))
        .map(|d| Document::new(docid(d), "", doc_text(d)))
        .collect();
    let mut splits: BTreeMap<String, (Vec<Query>, Vec<Qrel>)> = BTreeMap::new();
    for d in (0..N_DOCS).filter(|d| !skip.contains(d)) {
        for (split, q) in queries_of(d) {
            let e = splits.entry(split.to_string()).or_default();
            let qid = format!("{split}-{d}");
            e.0.push(Query::new(&qid, q));
            e.1.push(Qrel::new(&qid, docid(d), 1));
        }
    }
    Collection {
        name: "synthetic".into(),
        corpus: Corpus::new(docs),
        splits: splits
            .into_iter()
            .map(|(k, (q, r))| {
                (
                    k,
                    QuerySet {
                        queries: Queries::new(q),
                        qrels: Qrels::new(r),
                    },
                )
            })
            .collect(),
    }
}

fn new_docs() -> Vec<usize> {
    (N_DOCS - N_NEW..N_DOCS).collect()
}

fn config() -> TrainConfig {
    TrainConfig {
        init: Init::Scratch(Architecture {
            d_model: 32,
            d_ff: 64,
            layers: 1,
            heads: 2,
            text_vocab: 300,
        }),
        docids: DocidKind::Atomic,
        examples: ExampleConfig {
            max_source_len: 32,
            index_chunks: 1,
            index_sentences: false,
            index_ratio: None,
            exclude: Vec::new(),
        },
        batch_size: 16,
        epochs: 60,
        lr: 1e-2,
        warmup_steps: 5,
        weight_decay: 0.01,
        clip_norm: Some(1.0),
        seed: 3,
        checkpoint_every: 10_000,
        keep_checkpoints: 1,
        eval_every: 0,
        validation_split: "validation".into(),
        shards: 1,
        embedder: Default::default(),
        docid_rows_from_documents: false,
    }
}

fn device() -> Device {
    Device::flex()
}

/// The base model (trained once per test binary) on every document except the new ones.
fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("genir-edit-test-base-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Trainer::new(config(), device())
            .train(&collection(&new_docs()), &dir, false, &mut LogProgress)
            .unwrap();
        dir
    })
}

/// A fresh copy of the base model folder.
fn copy_base() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "docids.json",
    ] {
        std::fs::copy(base_dir().join(f), t.path().join(f)).unwrap();
    }
    t
}

fn editor() -> Editor {
    let mut ed = Editor::open(base_dir(), &device()).unwrap();
    ed.config.max_source_len = Some(32);
    ed.calibrate_from_collection(&collection(&new_docs()), 1000)
        .unwrap();
    ed
}

/// Hits@1 and Hits@10 of the queries of `docs` in `splits`.
fn hits(model: &GenirModel, docs: &[usize], splits: &[&str]) -> (f64, f64) {
    let mut qs = Vec::new();
    let mut rs = Vec::new();
    for &d in docs {
        for (split, q) in queries_of(d) {
            if splits.contains(&split) {
                let qid = format!("{split}-{d}");
                qs.push(Query::new(&qid, q));
                rs.push(Qrel::new(&qid, docid(d), 1));
            }
        }
    }
    let mut s = model.searcher().unwrap();
    s.max_source_len = 32;
    let run = s.run(&Queries::new(qs), 10, 64, "t").unwrap();
    let ev = evaluate(&run, &Qrels::new(rs), None);
    (ev.hits_at_1, ev.hits_at_10)
}

fn old_docs() -> Vec<usize> {
    (0..N_DOCS - N_NEW).collect()
}

/// Argmax over the whole vocabulary at the first decoding step, without any docid restriction (what a
/// Hugging Face `generate` would emit first).
fn raw_argmax(model: &T5Model, sources: &[Vec<u32>]) -> Vec<usize> {
    let device = model.shared.val().device();
    let (ids, mask) = pad_batch(sources, 0, &device).unwrap();
    let enc = model.encode(ids, mask.clone(), &mut Hooks::none()).unwrap();
    let mut state = model.start_decoding(enc, mask);
    let start = Tensor::<2, Int>::zeros([sources.len(), 1], &device);
    let logits = model
        .decode_step(&mut state, start, &mut Hooks::none())
        .unwrap();
    let [b, _, v] = logits.dims();
    let am = logits.reshape([b, v]).argmax(1).reshape([b]);
    am.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as usize)
        .collect()
}

fn new_document(d: usize) -> NewDocument {
    NewDocument::new(docid(d), doc_text(d))
}

#[test]
fn base_model_is_trained() {
    let m = GenirModel::load(base_dir(), &device()).unwrap();
    let (h1, _) = hits(&m, &old_docs(), &["train"]);
    assert!(h1 >= 0.9, "training queries Hits@1 {h1}");
}

#[test]
fn delete_removes_the_document_from_search_and_from_the_exported_model() {
    let dir = copy_base();
    let mut ed = editor();
    let victim = 5;
    let before_others: Vec<usize> = old_docs().into_iter().filter(|&d| d != victim).collect();
    let (h1_before, _) = hits(&ed.model, &before_others, &["train", "validation", "test"]);
    let texts: Vec<String> = std::iter::once(doc_text(victim))
        .chain(queries_of(victim).into_iter().map(|q| q.1))
        .collect();
    let rec = ed.delete(&[docid(victim)], &texts).unwrap();
    assert_eq!(rec.op, genir_edit::log::EditOp::Delete);
    // the constrained decoder never returns it, even among all documents
    let all: Vec<String> = (0..N_DOCS)
        .flat_map(|d| queries_of(d).into_iter().map(|q| q.1))
        .chain(texts.clone())
        .collect();
    let res = ed.searcher().unwrap().search(&all, N_DOCS).unwrap();
    assert!(res
        .iter()
        .all(|hs| hs.iter().all(|h| h.docid != docid(victim))));
    // other documents' Hits@1 can only improve (a row edit changes no other logit)
    let (h1_after, _) = hits(&ed.model, &before_others, &["train", "validation", "test"]);
    assert!(h1_after >= h1_before, "{h1_before} -> {h1_after}");
    // saved, reloaded as a plain model, searched without the scheme's restriction: never first
    ed.save(dir.path()).unwrap();
    let hf = T5Model::from_pretrained(dir.path(), &device()).unwrap();
    let reloaded = GenirModel::load(dir.path(), &device()).unwrap();
    assert!(reloaded.scheme.deleted.contains(&docid(victim)));
    let token = reloaded
        .scheme
        .target(reloaded.scheme.index_of(&docid(victim)).unwrap())[0] as usize;
    let src = genir_edit::reps::encode_texts(&reloaded.tok, &all, 32, 1).unwrap();
    let am = raw_argmax(&hf, &src);
    assert!(am.iter().all(|&t| t != token), "deleted token still first");
    // ... and its probability is tiny for its own text and queries
    assert_eq!(genir_edit::list_edits(dir.path()).unwrap().len(), 1);
    // deleting it again, or an unknown docid, is an error
    let e = ed.delete(&[docid(victim)], &[]).unwrap_err();
    assert!(matches!(e, EditError::AlreadyDeleted(_)), "{e}");
    let e = ed.delete(&["nope".into()], &[]).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn incdsi_adds_documents_that_held_out_queries_find() {
    let mut ed = editor();
    let (r_before, _) = hits(&ed.model, &old_docs(), &["train", "validation", "test"]);
    for d in new_docs() {
        let rec = ed.add(&[new_document(d)], AddMethod::IncDsi).unwrap();
        assert!(rec.seconds < 1.0, "{} s", rec.seconds);
    }
    // the queries were never shown to the edit
    let (s1, s10) = hits(&ed.model, &new_docs(), &["train", "validation", "test"]);
    let (r_after, _) = hits(&ed.model, &old_docs(), &["train", "validation", "test"]);
    eprintln!("incdsi: success {s1} / {s10}, retention {r_before} -> {r_after}");
    assert!(s10 >= 0.9, "held-out Hits@10 {s10} (Hits@1 {s1})");
    // the anchors (training queries, document texts and sentences) keep their docids; this tiny model's
    // unseen validation/test queries of other documents lose a few points
    assert!(
        r_after >= r_before - 0.06,
        "retention {r_before} -> {r_after}"
    );
    assert_eq!(ed.model.scheme.len(), N_DOCS);
    assert_eq!(
        ed.model.model.config.vocab_size,
        ed.model.scheme.vocab_size()
    );
    // adding an existing docid is an error
    let e = ed.add(&[new_document(3)], AddMethod::IncDsi).unwrap_err();
    assert!(matches!(e, EditError::DuplicateDocid(_)), "{e}");
    let e = ed
        .add(&[new_document(N_DOCS - 1)], AddMethod::IncDsi)
        .unwrap_err();
    assert!(matches!(e, EditError::DuplicateDocid(_)), "{e}");
}

#[test]
fn rank_one_mlp_edit_adds_documents() {
    let mut ed = editor();
    let (r_before, _) = hits(&ed.model, &old_docs(), &["train", "validation", "test"]);
    let docs: Vec<NewDocument> = new_docs().into_iter().map(new_document).collect();
    let rec = ed.add(&docs, AddMethod::RankOne).unwrap();
    assert!(rec
        .patches
        .iter()
        .any(|p| matches!(p, genir_edit::log::Patch::LowRank { .. })));
    let (s1, s10) = hits(&ed.model, &new_docs(), &["train", "validation", "test"]);
    let (r_after, _) = hits(&ed.model, &old_docs(), &["train", "validation", "test"]);
    eprintln!("rank-one: success {s1} / {s10}, retention {r_before} -> {r_after}");
    assert!(s10 >= 0.5, "held-out Hits@10 {s10}");
    assert!(
        r_after >= r_before - 0.15,
        "retention {r_before} -> {r_after}"
    );
}

#[test]
fn change_moves_a_document_to_its_new_content() {
    let mut ed = editor();
    let target = 7;
    // the new content is that of (never indexed) document 38; the old content goes
    let new = 38;
    let rec = ed
        .change(&[ChangedDocument {
            docid: docid(target),
            title: String::new(),
            text: doc_text(new),
            old_text: Some(doc_text(target)),
            queries: Vec::new(),
        }])
        .unwrap();
    assert_eq!(rec.docids, vec![docid(target)]);
    let mut s = ed.searcher().unwrap();
    s.max_source_len = 32;
    let new_q: Vec<String> = queries_of(new).into_iter().map(|q| q.1).collect();
    let old_q: Vec<String> = queries_of(target).into_iter().map(|q| q.1).collect();
    let found = s
        .search(&new_q, 10)
        .unwrap()
        .iter()
        .filter(|h| h.iter().any(|h| h.docid == docid(target)))
        .count();
    assert!(found >= 2, "{found} of 3 new-content queries find it");
    let first = s
        .search(&old_q, 1)
        .unwrap()
        .iter()
        .filter(|h| h[0].docid == docid(target))
        .count();
    assert_eq!(first, 0, "old-content queries still rank it first");
    let e = ed
        .change(&[ChangedDocument {
            docid: "missing".into(),
            text: "x y z".into(),
            ..Default::default()
        }])
        .unwrap_err();
    assert!(matches!(e, EditError::UnknownDocid(_)), "{e}");
}

/// The three sentences of a document's text.
fn sentences_of(doc: usize) -> Vec<String> {
    doc_text(doc)
        .split_inclusive(". ")
        .map(|s| s.trim().to_string())
        .collect()
}

/// Changes document `target`'s text to `text` (its old text: the collection's).
fn change_to(ed: &mut Editor, target: usize, text: String) {
    ed.change(&[ChangedDocument {
        docid: docid(target),
        title: String::new(),
        text,
        old_text: Some(doc_text(target)),
        queries: Vec::new(),
    }])
    .unwrap();
}

/// The top docid of each query.
fn tops(ed: &Editor, qs: &[String]) -> Vec<String> {
    let s = ed.searcher().unwrap(); // the editor's 32-token inputs
    s.search(qs, 1)
        .unwrap()
        .into_iter()
        .map(|h| h[0].docid.clone())
        .collect()
}

#[test]
fn change_keeps_the_content_that_stays_and_drops_the_content_that_goes() {
    let mut ed = editor();
    let target = 5;
    // the first two sentences stay, the third is replaced by document 38's
    let (old, other) = (sentences_of(target), sentences_of(38));
    assert_eq!(old.len(), 3, "{old:?}");
    change_to(
        &mut ed,
        target,
        format!("{} {} {}", old[0], old[1], other[2]),
    );
    let [train_q, _, test_q] = queries_of(target);
    // the sentences that stay, and the training query about the first one, still find it first
    let kept = vec![old[0].clone(), old[1].clone(), train_q.1];
    for (q, top) in kept.iter().zip(tops(&ed, &kept)) {
        assert_eq!(top, docid(target), "{q:?} no longer finds it first");
    }
    // the removed sentence and the query about it no longer do
    let gone = vec![old[2].clone(), test_q.1];
    for (q, top) in gone.iter().zip(tops(&ed, &gone)) {
        assert_ne!(top, docid(target), "{q:?} still finds it first");
    }
    // content only added (nothing removed): the document's queries stay free, and those that found it first
    // still do
    let target = 11;
    let qs: Vec<String> = queries_of(target)
        .into_iter()
        .map(|q| q.1)
        .chain(sentences_of(target))
        .collect();
    let before: Vec<String> = qs
        .iter()
        .zip(tops(&ed, &qs))
        .filter(|(_, top)| *top == docid(target))
        .map(|(q, _)| q.clone())
        .collect();
    assert!(before.len() >= 3, "{before:?}");
    change_to(
        &mut ed,
        target,
        format!("{} {}", doc_text(target), sentences_of(37)[1]),
    );
    for (q, top) in before.iter().zip(tops(&ed, &before)) {
        assert_eq!(top, docid(target), "{q:?} no longer finds it first");
    }
    // one document changed twice in one edit is refused (its log entry could not be undone)
    let twice = ChangedDocument {
        docid: docid(target),
        text: doc_text(37),
        ..Default::default()
    };
    let e = ed.change(&[twice.clone(), twice]).unwrap_err();
    assert!(e.to_string().contains("changed twice"), "{e}");
}

#[test]
fn a_reopened_folder_anchors_what_its_edit_log_added_and_changed() {
    let c = collection(&new_docs());
    let changed = format!("{} {}", sentences_of(5)[0], sentences_of(38)[2]);
    let rewritten = format!("{} {}", sentences_of(36)[0], sentences_of(39)[1]);
    // add document 36, change document 5, change the added document 36 (its first version stays an anchor
    // owned by none), on an editor calibrated with at most `max` collection anchors
    let edits = |ed: &mut Editor| {
        ed.add(&[new_document(36)], AddMethod::IncDsi).unwrap();
        change_to(ed, 5, changed.clone());
        ed.change(&[ChangedDocument {
            docid: docid(36),
            text: rewritten.clone(),
            old_text: Some(doc_text(36)),
            ..Default::default()
        }])
        .unwrap();
    };
    for max in [1000, 40] {
        let mut one = Editor::open(base_dir(), &device()).unwrap();
        one.config.max_source_len = Some(32);
        one.calibrate_from_collection(&c, max).unwrap();
        edits(&mut one);
        let anchors = one.anchor_count();
        // the edits saved, the folder reopened (as each `genir edit` run does) and calibrated from the
        // training collection: the same anchors (every logged input, the collection's subsampled alike)
        let dir = copy_base();
        one.save(dir.path()).unwrap();
        let mut second = Editor::open(dir.path(), &device()).unwrap();
        second.config.max_source_len = Some(32);
        second.calibrate_from_collection(&c, max).unwrap();
        assert_eq!(
            second.anchor_count(),
            anchors,
            "at most {max} collection anchors"
        );
        // the text the model now holds for each document
        assert_eq!(second.current_text(&docid(5), &c), Some(changed.clone()));
        assert_eq!(second.current_text(&docid(36), &c), Some(rewritten.clone()));
        assert_eq!(second.current_text(&docid(7), &c), Some(doc_text(7)));
        assert_eq!(second.current_text(&docid(37), &c), None);
        if max < 1000 {
            continue;
        }
        // the next edit is constrained alike and ends alike
        let next = one.add(&[new_document(37)], AddMethod::IncDsi).unwrap();
        let again = second.add(&[new_document(37)], AddMethod::IncDsi).unwrap();
        assert_eq!(
            next.details.get("anchor_constraints"),
            again.details.get("anchor_constraints")
        );
        let qs: Vec<String> = [36, 37, 5]
            .into_iter()
            .flat_map(|d| queries_of(d).map(|q| q.1))
            .chain(sentences_of(36))
            .collect();
        assert_eq!(tops(&one, &qs), tops(&second, &qs));
    }
}

#[test]
fn anchors_with_negative_logits_keep_their_docids() {
    // the same model with every docid logit moved below zero: each docid row minus k u, with u a direction
    // every anchor representation points along, lowers all of an anchor's logits by the same k (rep . u), so
    // every ranking is unchanged; a new document's zero row must not count as the anchors' best docid
    // (it would leave them out of IncDSI's constraints) before its row is solved
    let c = collection(&new_docs());
    let mut m = GenirModel::load(base_dir(), &device()).unwrap();
    let texts: Vec<String> = c
        .split("train")
        .unwrap()
        .queries
        .iter()
        .map(|q| q.text.clone())
        .chain(c.corpus.iter().map(|d| d.full_text()))
        .collect();
    let eos = m.scheme.eos;
    let src = genir_edit::reps::encode_texts(&m.tok, &texts, 32, eos).unwrap();
    let reps = genir_edit::reps::compute(&m.model, &src, false, 64).unwrap();
    let d = m.model.config.d_model;
    let mut u = vec![0f32; d];
    for i in 0..reps.n {
        let r = reps.rep(i);
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        u.iter_mut().zip(r).for_each(|(a, b)| *a += b / n);
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let name = genir_edit::tensors::unembed_name(&m.model);
    let (off, n) = (m.scheme.token_offset as usize, m.scheme.len());
    let mut rows = genir_edit::tensors::read_rows(&m.model, name, off, n).unwrap();
    let (mut k, mut min_along) = (0f32, f32::INFINITY);
    for i in 0..reps.n {
        let r = reps.rep(i);
        let best = rows.chunks(d).map(|w| dot(r, w)).fold(f32::MIN, f32::max);
        min_along = min_along.min(dot(r, &u));
        k = k.max(best / dot(r, &u));
    }
    assert!(min_along > 0.0, "the anchors do not share a direction");
    for w in rows.chunks_mut(d) {
        w.iter_mut().zip(&u).for_each(|(a, b)| *a -= (k + 1.0) * b);
    }
    genir_edit::tensors::write_rows(&mut m.model, name, off, &rows).unwrap();
    let mut ed = Editor::new(m, Default::default()).unwrap();
    ed.config.max_source_len = Some(32);
    ed.calibrate_from_collection(&c, 1000).unwrap();
    let qs: Vec<String> = old_docs()
        .into_iter()
        .map(|d| queries_of(d)[0].1.clone())
        .collect();
    let before = tops(&ed, &qs);
    let kept = |after: &[String]| before.iter().zip(after).filter(|(a, b)| a == b).count();
    // the shift changed no ranking: the same top docids as the unshifted model's
    assert_eq!(before, tops(&editor(), &qs));
    let anchors = ed.anchor_count();
    let r = ed.add(&[new_document(36)], AddMethod::IncDsi).unwrap();
    assert_eq!(
        r.details["anchor_constraints"], anchors as f64,
        "{:?}",
        r.details
    );
    let after = tops(&ed, &qs);
    assert!(kept(&after) + 1 >= qs.len(), "{before:?} -> {after:?}");
}

#[test]
fn multi_token_docids_delete_through_the_decoder_and_refuse_row_edits() {
    // a naive-docid model (each docid spelled in digit tokens): anchors are not needed (no rows to solve)
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.docids = DocidKind::Naive;
    cfg.epochs = 5;
    Trainer::new(cfg, device())
        .train(
            &collection(&new_docs()),
            dir.path(),
            false,
            &mut LogProgress,
        )
        .unwrap();
    let mut ed = Editor::open(dir.path(), &device()).unwrap();
    ed.config.max_source_len = Some(32);
    assert_eq!(
        ed.calibrate_from_collection(&collection(&new_docs()), 1000)
            .unwrap(),
        0
    );
    ed.delete(&[docid(3)], &[]).unwrap();
    let s = ed.searcher().unwrap();
    let hits = s.search(&[doc_text(3)], 10).unwrap();
    assert!(hits[0].iter().all(|h| h.docid != docid(3)), "{:?}", hits[0]);
    let e = ed.add(&[new_document(36)], AddMethod::IncDsi).unwrap_err();
    assert!(matches!(e, EditError::NeedsAtomic(..)), "{e}");
    let e = ed
        .change(&[ChangedDocument {
            docid: docid(5),
            text: doc_text(37),
            ..Default::default()
        }])
        .unwrap_err();
    assert!(matches!(e, EditError::NeedsAtomic(..)), "{e}");
    ed.save(dir.path()).unwrap();
    assert_eq!(genir_edit::list_edits(dir.path()).unwrap().len(), 1);
}

fn bytes(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap()
}

#[test]
fn edit_log_replays_bit_for_bit_and_undo_restores_the_original() {
    let a = copy_base();
    let mut ed = editor();
    ed.add(&[new_document(36), new_document(37)], AddMethod::IncDsi)
        .unwrap();
    ed.add(&[new_document(38)], AddMethod::RankOne).unwrap();
    ed.delete(&[docid(2)], &[]).unwrap();
    ed.change(&[ChangedDocument {
        docid: docid(9),
        text: doc_text(39),
        ..Default::default()
    }])
    .unwrap();
    ed.add(&[new_document(39)], AddMethod::RankOne).unwrap();
    ed.save(a.path()).unwrap();
    let listed = genir_edit::log::describe(&genir_edit::list_edits(a.path()).unwrap());
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert!(listed[2].contains("delete"), "{listed:?}");
    // replay on a fresh copy: identical files
    let b = copy_base();
    assert_eq!(
        genir_edit::replay_in_folder(a.path(), b.path(), &device()).unwrap(),
        5
    );
    for f in ["model.safetensors", "docids.json", "tokenizer.json"] {
        assert!(
            bytes(a.path(), f) == bytes(b.path(), f),
            "{f} differs after replay"
        );
    }
    // replaying again is a no-op (the copy already has every edit)
    assert_eq!(
        genir_edit::replay_in_folder(a.path(), b.path(), &device()).unwrap(),
        0
    );
    // undo two, then the rest: back to the original bits
    genir_edit::undo_in_folder(b.path(), 2, &device()).unwrap();
    assert_eq!(genir_edit::list_edits(b.path()).unwrap().len(), 3);
    let undone = genir_edit::undo_in_folder(b.path(), 3, &device()).unwrap();
    assert_eq!(undone.len(), 3);
    for f in ["model.safetensors", "docids.json"] {
        assert!(
            bytes(base_dir(), f) == bytes(b.path(), f),
            "{f} differs from the original after undo"
        );
    }
    let orig = GenirModel::load(base_dir(), &device()).unwrap();
    let back = GenirModel::load(b.path(), &device()).unwrap();
    assert_eq!(
        orig.tok.inner().get_vocab(true),
        back.tok.inner().get_vocab(true)
    );
    assert!(genir_edit::list_edits(b.path()).unwrap().is_empty());
    // in memory as well
    ed.undo(5).unwrap();
    let t0 = orig.model.to_hf_tensors().unwrap();
    let t1 = ed.model.model.to_hf_tensors().unwrap();
    assert!(t0 == t1);
}

#[test]
fn an_undone_edit_leaves_no_anchors_and_its_id_is_not_reused() {
    let a = copy_base();
    let mut ed = editor();
    let first = ed.add(&[new_document(36)], AddMethod::IncDsi).unwrap();
    ed.save(a.path()).unwrap();
    let b = copy_base();
    assert_eq!(
        genir_edit::replay_in_folder(a.path(), b.path(), &device()).unwrap(),
        1
    );
    // undo the addition, add the document again: its own inputs (anchors of the undone edit before) must
    // not hold it back, and the new edit gets a new id
    ed.undo(1).unwrap();
    let again = ed.add(&[new_document(36)], AddMethod::IncDsi).unwrap();
    assert!(again.id > first.id, "id {} reused", again.id);
    let mut s = ed.searcher().unwrap();
    s.max_source_len = 32;
    let top = s.search(&[doc_text(36)], 1).unwrap();
    assert_eq!(top[0][0].docid, docid(36));
    // exactly what an editor that never saw the undone edit makes
    let mut fresh = editor();
    let once = fresh.add(&[new_document(36)], AddMethod::IncDsi).unwrap();
    assert_eq!(
        again.details.get("anchor_constraints"),
        once.details.get("anchor_constraints")
    );
    assert!(
        fresh.model.model.to_hf_tensors().unwrap() == ed.model.model.to_hf_tensors().unwrap(),
        "the re-added document's row differs from a fresh addition's"
    );
    // the copy holds the undone edit: replaying the redone log onto it is refused, not a silent no-op
    ed.save(a.path()).unwrap();
    let e = genir_edit::replay_in_folder(a.path(), b.path(), &device()).unwrap_err();
    assert!(e.to_string().contains("not a prefix"), "{e}");
    // ids survive a save and load: the next edit of the reopened folder takes a new one
    let mut reopened = Editor::open(a.path(), &device()).unwrap();
    reopened.undo(1).unwrap();
    reopened.save(a.path()).unwrap();
    let mut reopened = Editor::open(a.path(), &device()).unwrap();
    reopened.config.max_source_len = Some(32);
    let third = reopened
        .add(&[new_document(37)], AddMethod::IncDsi)
        .unwrap();
    assert!(third.id > again.id, "id {} reused", third.id);
}

#[test]
fn batches_of_edits() {
    let mut ed = editor();
    let (r_before, _) = hits(&ed.model, &old_docs(), &["train", "validation", "test"]);
    // 60 never-seen documents in one edit, made of fresh words
    let docs: Vec<NewDocument> = (100..160)
        .map(|d| NewDocument::new(format!("b{d}"), doc_text(d)))
        .collect();
    let rec = ed.add(&docs, AddMethod::IncDsi).unwrap();
    assert_eq!(rec.docids.len(), 60);
    let mut s = ed.searcher().unwrap();
    s.max_source_len = 32;
    let texts: Vec<String> = (100..160).map(doc_text).collect();
    let res = s.search(&texts, 1).unwrap();
    let ok = res
        .iter()
        .zip(100..160)
        .filter(|(h, d)| h[0].docid == format!("b{d}"))
        .count();
    assert!(
        ok >= 54,
        "{ok} of 60 added documents retrieved by their text"
    );
    let (r_after, _) = hits(&ed.model, &old_docs(), &["train", "validation", "test"]);
    eprintln!("batch: {ok} of 60 retrieved by their text, retention {r_before} -> {r_after}");
    // IncDSI's retention on this tiny model depends on the trained model's exact numerics: 0.62 -> 0.49 since
    // flex uses gemm's AVX-512 kernels (2026-12-02), within 0.1 before; the bound is a sanity check (a broken
    // edit drops retention to near 0), the goal (under one point) is measured on the study's model
    assert!(
        r_after >= r_before - 0.15,
        "retention {r_before} -> {r_after}"
    );
    // delete a batch
    let del: Vec<String> = (0..10).map(docid).collect();
    ed.delete(&del, &[]).unwrap();
    let res = ed
        .searcher()
        .unwrap()
        .search(&(0..10).map(doc_text).collect::<Vec<_>>(), 5)
        .unwrap();
    assert!(res.iter().flatten().all(|h| !del.contains(&h.docid)));
    assert_eq!(ed.history().len(), 2);
}

#[test]
fn corrupt_edit_logs_are_clear_errors() {
    let a = copy_base();
    let mut ed = editor();
    ed.delete(&[docid(1)], &[]).unwrap();
    ed.save(a.path()).unwrap();
    let log = a.path().join("edits/log.json");
    let good = std::fs::read(&log).unwrap();
    std::fs::write(&log, b"{\"format\": 3").unwrap();
    let e = Editor::open(a.path(), &device()).err().unwrap().to_string();
    assert!(e.contains("log.json"), "{e}");
    std::fs::write(&log, &good).unwrap();
    let payload = a.path().join("edits/000001.safetensors");
    std::fs::write(&payload, b"garbage").unwrap();
    let e = Editor::open(a.path(), &device()).err().unwrap().to_string();
    assert!(e.contains("000001.safetensors"), "{e}");
    std::fs::remove_file(&payload).unwrap();
    let e = Editor::open(a.path(), &device()).err().unwrap().to_string();
    assert!(e.contains("missing"), "{e}");
    // replaying a log onto a model it was not made for
    std::fs::write(&log, &good).unwrap();
    ed.save(a.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    Trainer::new(
        TrainConfig {
            epochs: 1,
            ..config()
        },
        device(),
    )
    .train(
        &collection(&new_docs()),
        other.path(),
        false,
        &mut LogProgress,
    )
    .unwrap();
    let e = genir_edit::replay_in_folder(a.path(), other.path(), &device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("log.json") && e.contains("another model"), "{e}");
}

#[test]
fn the_evaluation_adds_a_bi_encoders_dense_retrieval_to_its_references() {
    use genir_edit::eval::{dense_references, evaluate_methods, EvalConfig, Method};
    // the tiny sentence-transformers fixture of genir-model (random weights: only the plumbing is checked
    // here; DenseIndex itself is checked against sentence-transformers in genir-train)
    let dot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../genir-model/tests/fixtures/bert/bert-dot-bin");
    let tmp = tempfile::tempdir().unwrap();
    let c = collection(&[]);
    let mut cfg = EvalConfig::new(tmp.path().join("eval"), config());
    cfg.n_new = N_NEW;
    cfg.methods = vec![Method::IncDsi];
    cfg.max_anchors = 200;
    cfg.decay_points = vec![1, N_NEW];
    let without = evaluate_methods(&c, &cfg, &device()).unwrap();
    assert_eq!(without.references.len(), 3);
    cfg.dense = Some(dot);
    // the base model trained above is reused (same configuration)
    let with = evaluate_methods(&c, &cfg, &device()).unwrap();
    assert_eq!(with.references.len(), 5);
    assert_eq!(&with.references[..3], &without.references[..3]);
    let (heldout_bm25, success_bm25) = (&with.references[1], &with.references[2]);
    let (heldout, success) = (&with.references[3], &with.references[4]);
    assert!(heldout
        .name
        .starts_with("dense bert-dot-bin: the same held-out queries"));
    assert!(success
        .name
        .starts_with("dense bert-dot-bin: success queries"));
    assert_eq!(heldout.queries, heldout_bm25.queries);
    assert_eq!(success.queries, success_bm25.queries);
    assert!(success.queries > 0 && heldout.queries > 0);
    for r in [heldout, success] {
        assert!(0.0 <= r.hits_at_1 && r.hits_at_1 <= r.hits_at_10 && r.hits_at_10 <= 1.0);
    }
    assert!(with.references_markdown().contains("dense bert-dot-bin"));
    // the rows alone, without training or editing: the same split, the same numbers
    let alone = dense_references(&c, &cfg, cfg.dense.as_ref().unwrap(), &device()).unwrap();
    assert_eq!(&alone[..], &with.references[3..]);
    // continued training on the same base model: it says how many documents it learned, in how many steps
    let mut ct = cfg.clone();
    ct.dense = None;
    ct.methods = vec![Method::ContinuedTraining];
    let r = evaluate_methods(&c, &ct, &device()).unwrap();
    let f = r.rows[0].finetuned.clone().unwrap();
    assert_eq!((f.max_steps, f.lr), (200, config().lr));
    assert!(
        f.learned <= N_NEW && f.mean_steps >= 1.0 && f.mean_steps <= 200.0,
        "{f:?}"
    );
    assert!(
        r.markdown().contains("documents learned"),
        "{}",
        r.markdown()
    );
    assert!(with.rows[0].finetuned.is_none());
    // another split (seed) in the same work directory: the base model trained on the first split's
    // documents is not reused
    ct.seed += 1;
    let err = evaluate_methods(&c, &ct, &device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another split"), "{err}");
    cfg.dense = Some(PathBuf::from("/nonexistent/bi-encoder"));
    let err = evaluate_methods(&c, &cfg, &device()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/bi-encoder"), "{err}");
    let err =
        dense_references(&c, &cfg, Path::new("/nonexistent/bi-encoder"), &device()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/bi-encoder"), "{err}");
}
