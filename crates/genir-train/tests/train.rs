//! Training, resuming, data-parallel shards and constrained search on tiny collections.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use genir_data::{Collection, Corpus, Document, Qrel, Qrels, Queries, Query, QuerySet};
use genir_train::bundle::GenirModel;
use genir_train::docid::DocidKind;
use genir_train::examples::{ExampleConfig, TrainingSet};
use genir_train::metrics::evaluate;
use genir_train::train::{Architecture, Init, LogProgress, TrainConfig, TrainState, Trainer};
use genir_train::TrainError;

const TOPICS: [&str; 12] = [
    "volcano lava eruption magma",
    "violin orchestra symphony concert",
    "glacier ice arctic polar",
    "bitcoin blockchain ledger mining",
    "pharaoh pyramid egypt nile",
    "tennis racket wimbledon serve",
    "photosynthesis chlorophyll leaf plant",
    "submarine sonar torpedo navy",
    "cheese dairy milk cheddar",
    "telescope galaxy nebula orbit",
    "chess bishop knight checkmate",
    "hurricane storm cyclone wind",
];

/// Twelve documents with distinct vocabularies; one training and one validation query each.
fn tiny_collection() -> Collection {
    let docs = TOPICS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let w: Vec<&str> = t.split(' ').collect();
            Document::new(
                format!("{}", 100 + i * 7),
                format!("The {}", w[0]),
                format!(
                    "The {} is about {} and {}. Many people study {} with {}.",
                    w[0], w[1], w[2], w[3], w[1]
                ),
            )
        })
        .collect();
    let mut splits = BTreeMap::new();
    for (split, pick) in [("train", [0usize, 1]), ("validation", [2, 3])] {
        let mut queries = Vec::new();
        let mut qrels = Vec::new();
        for (i, t) in TOPICS.iter().enumerate() {
            let w: Vec<&str> = t.split(' ').collect();
            let qid = format!("{split}-{i}");
            queries.push(Query::new(&qid, format!("{} {}", w[pick[0]], w[pick[1]])));
            qrels.push(Qrel::new(&qid, format!("{}", 100 + i * 7), 1));
        }
        splits.insert(
            split.to_string(),
            QuerySet {
                queries: Queries::new(queries),
                qrels: Qrels::new(qrels),
            },
        );
    }
    Collection {
        name: "tiny".into(),
        corpus: Corpus::new(docs),
        splits,
    }
}

fn config(docids: DocidKind, epochs: usize) -> TrainConfig {
    TrainConfig {
        init: Init::Scratch(Architecture {
            d_model: 32,
            d_ff: 64,
            layers: 1,
            heads: 2,
            text_vocab: 120,
        }),
        docids,
        examples: ExampleConfig {
            max_source_len: 32,
            index_chunks: 1,
            index_sentences: false,
            index_ratio: None,
            exclude: Vec::new(),
        },
        batch_size: 8,
        epochs,
        lr: 1e-2,
        warmup_steps: 5,
        weight_decay: 0.01,
        clip_norm: Some(1.0),
        seed: 3,
        checkpoint_every: 4,
        keep_checkpoints: 2,
        eval_every: 0,
        validation_split: "validation".into(),
        shards: 1,
        embedder: Default::default(),
        docid_rows_from_documents: true,
    }
}

/// `flex` unless `GENIR_TEST_BACKEND` names another backend built in (CI also trains on `wgpu`).
fn device() -> Device {
    let name = std::env::var("GENIR_TEST_BACKEND").unwrap_or_else(|_| "flex".into());
    name.parse::<genir_model::device::Backend>()
        .and_then(genir_model::device::Backend::device)
        .unwrap_or_else(|e| panic!("GENIR_TEST_BACKEND={name}: {e}"))
}

fn train_split_hits(dir: &Path, c: &Collection, split: &str) -> (f64, f64) {
    let m = GenirModel::load(dir, &device()).unwrap();
    let s = c.split(split).unwrap();
    let run = m.searcher().unwrap().run(&s.queries, 10, 16, "t").unwrap();
    let ev = evaluate(&run, &s.qrels, None);
    (ev.hits_at_1, ev.hits_at_10)
}

#[test]
fn atomic_model_learns_the_tiny_collection() {
    let c = tiny_collection();
    let dir = tempfile::tempdir().unwrap();
    let summary = Trainer::new(config(DocidKind::Atomic, 40), device())
        .train(&c, dir.path(), false, &mut LogProgress)
        .unwrap();
    assert!(summary.finished);
    let first = summary.state.losses.first().unwrap().1;
    let last = summary.state.losses.last().unwrap().1;
    assert!(last < first * 0.2, "loss {first} -> {last}");
    let (h1, _) = train_split_hits(dir.path(), &c, "train");
    assert!(h1 >= 0.9, "training queries Hits@1 {h1}");
    // the final model folder opens as a Hugging Face T5 folder plus docids.json
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "docids.json",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    assert!(!summary.state.validation.is_empty());
    // searchers cut queries where training did (32 tokens here, not the default 64): from genir.json, from
    // train_config.json in a folder without it, else the default
    let m = GenirModel::load(dir.path(), &device()).unwrap();
    assert_eq!(m.max_source_len, 32);
    assert_eq!(m.searcher().unwrap().max_source_len, 32);
    std::fs::remove_file(dir.path().join("genir.json")).unwrap();
    assert_eq!(
        GenirModel::load(dir.path(), &device())
            .unwrap()
            .max_source_len,
        32
    );
    std::fs::remove_file(dir.path().join("train_config.json")).unwrap();
    assert_eq!(
        GenirModel::load(dir.path(), &device())
            .unwrap()
            .max_source_len,
        64
    );
    // a copy keeps it
    let copy = tempfile::tempdir().unwrap();
    m.save(copy.path()).unwrap();
    assert_eq!(
        GenirModel::load(copy.path(), &device())
            .unwrap()
            .max_source_len,
        32
    );
    std::fs::write(copy.path().join("genir.json"), b"{\"max_source_len\": 0}").unwrap();
    let e = GenirModel::load(copy.path(), &device())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("genir.json") && e.contains("max_source_len"),
        "{e}"
    );
}

#[test]
fn naive_and_semantic_models_learn_and_search_only_valid_docids() {
    let c = tiny_collection();
    for kind in [
        DocidKind::Naive,
        DocidKind::Semantic {
            branching: 3,
            leaf_size: 3,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        Trainer::new(config(kind.clone(), 60), device())
            .train(&c, dir.path(), false, &mut LogProgress)
            .unwrap();
        let (h1, h10) = train_split_hits(dir.path(), &c, "train");
        assert!(h1 >= 0.75, "{kind}: training Hits@1 {h1}");
        assert!(h10 >= 0.9, "{kind}: training Hits@10 {h10}");
        let m = GenirModel::load(dir.path(), &device()).unwrap();
        let valid: Vec<&str> = c.corpus.iter().map(|d| d.docid.as_str()).collect();
        let hits = m
            .searcher()
            .unwrap()
            .search(&["volcano lava".into()], 12)
            .unwrap();
        assert_eq!(hits[0].len(), 12, "{kind}: every docid is reachable");
        assert!(hits[0].iter().all(|h| valid.contains(&h.docid.as_str())));
    }
}

#[test]
fn a_model_folder_without_checkpoints_is_not_overwritten() {
    let c = tiny_collection();
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(config(DocidKind::Atomic, 4), device())
        .train(&c, dir.path(), false, &mut LogProgress)
        .unwrap();
    std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
    let before = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    for resume in [false, true] {
        let err = Trainer::new(config(DocidKind::Atomic, 4), device())
            .train(&c, dir.path(), resume, &mut LogProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds a model"), "{err}");
    }
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        before
    );
    // the model still loads and searches with a zero-length query budget clamped, not wrapped
    let m = GenirModel::load(dir.path(), &device()).unwrap();
    let mut s = m.searcher().unwrap();
    s.max_source_len = 0;
    let ids = s.encode_queries(&["glacier polar".into()]).unwrap();
    assert_eq!(ids[0], vec![m.scheme.eos]);
}

#[test]
fn beam_search_matches_exhaustive_scoring() {
    let c = tiny_collection();
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(config(DocidKind::Naive, 10), device())
        .train(&c, dir.path(), false, &mut LogProgress)
        .unwrap();
    let m = GenirModel::load(dir.path(), &device()).unwrap();
    let mut s = m.searcher().unwrap();
    s.beams = 12; // as wide as the corpus: beam search is exact
    for q in ["glacier polar", "chess knight", "unrelated words here"] {
        let ids = s.encode_queries(&[q.to_string()]).unwrap();
        let hits = s.search_ids(&ids, 5).unwrap().remove(0);
        let all: Vec<usize> = (0..m.scheme.len()).collect();
        let scores = s.score_docs(&ids[0], &all).unwrap();
        let mut order: Vec<usize> = all.clone();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let got: Vec<usize> = hits.iter().map(|h| h.doc).collect();
        assert_eq!(got, order[..5].to_vec(), "{q}");
        for h in &hits {
            assert!(
                (h.score - scores[h.doc]).abs() < 1e-4,
                "{q}: {} vs {}",
                h.score,
                scores[h.doc]
            );
        }
    }
    // restricted documents are never returned
    let banned = m.scheme.index_of("100").unwrap();
    let r = m.searcher().unwrap().restrict(|d| d != banned);
    let hits = r.search(&["volcano lava".into()], 12).unwrap().remove(0);
    assert_eq!(hits.len(), 11);
    assert!(hits.iter().all(|h| h.doc != banned));
}

fn model_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn a_stopped_run_resumes_bit_for_bit() {
    let c = tiny_collection();
    let straight = tempfile::tempdir().unwrap();
    let cfg = config(DocidKind::Atomic, 4); // 24 examples / 8 = 3 steps per epoch, 12 steps
    Trainer::new(cfg.clone(), device())
        .train(&c, straight.path(), false, &mut LogProgress)
        .unwrap();
    let stopped = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(cfg.clone(), device());
    t.stop_after = Some(6); // checkpoint at step 4; steps 5-6 are lost, as in a killed run
    let s = t
        .train(&c, stopped.path(), false, &mut LogProgress)
        .unwrap();
    assert!(!s.finished);
    let err = Trainer::new(cfg.clone(), device())
        .train(&c, stopped.path(), false, &mut LogProgress)
        .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let s = Trainer::new(cfg.clone(), device())
        .train(&c, stopped.path(), true, &mut LogProgress)
        .unwrap();
    assert!(s.resumed && s.finished);
    assert_eq!(s.state.step, 12);
    assert!(
        model_bytes(straight.path()) == model_bytes(stopped.path()),
        "resumed model differs from the uninterrupted one"
    );
    // and so does its record: epoch 1 (steps 4-6) straddles the checkpoint at step 4
    let straight_state = TrainState::read_finished(straight.path()).unwrap();
    assert_eq!(s.state.losses, straight_state.losses);
    assert_eq!(
        TrainState::read_finished(stopped.path()).unwrap().losses,
        straight_state.losses
    );
    let m = GenirModel::load(stopped.path(), &device()).unwrap();
    let set = TrainingSet::build(
        &c.corpus,
        c.split("train"),
        &m.scheme,
        &m.tok,
        &cfg.examples,
    );
    assert_eq!(s.state.examples_digest, Some(set.unwrap().digest()));
    // a different configuration cannot resume this run; the error names the setting and both values
    let mut other = cfg.clone();
    other.lr *= 2.0;
    let err = Trainer::new(other, device())
        .train(&c, stopped.path(), true, &mut LogProgress)
        .unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("lr: 0.01 in the checkpoint, 0.02 now") && !msg.contains("epochs"),
        "{msg}"
    );
    // nor can other training data: one training query's text changed after the run started
    let run = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(cfg.clone(), device());
    t.stop_after = Some(6);
    t.train(&c, run.path(), false, &mut LogProgress).unwrap();
    let mut changed = tiny_collection();
    let train = changed.splits.get_mut("train").unwrap();
    let qs: Vec<Query> = train
        .queries
        .iter()
        .enumerate()
        .map(|(i, q)| match i {
            0 => Query::new(&q.qid, format!("{} again", q.text)),
            _ => q.clone(),
        })
        .collect();
    train.queries = Queries::new(qs);
    let err = Trainer::new(cfg.clone(), device())
        .train(&changed, run.path(), true, &mut LogProgress)
        .unwrap_err();
    assert!(
        matches!(err, TrainError::Checkpoint { .. })
            && err.to_string().contains("other training examples"),
        "{err}"
    );
    // the unchanged collection still resumes it
    let s = Trainer::new(cfg, device())
        .train(&c, run.path(), true, &mut LogProgress)
        .unwrap();
    assert!(s.resumed && s.finished);
    // a docids.json whose end-of-docid token is no text token of the model is refused on load
    let p = straight.path().join("docids.json");
    let mut d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    d["eos"] = serde_json::json!(99999);
    std::fs::write(&p, d.to_string()).unwrap();
    let err = GenirModel::load(straight.path(), &device())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("end-of-docid token 99999"), "{err}");
}

#[test]
fn impossible_settings_are_refused_before_training() {
    let c = tiny_collection();
    let base = config(DocidKind::Atomic, 1);
    let arch = |f: &dyn Fn(&mut Architecture)| {
        let mut cfg = base.clone();
        if let Init::Scratch(a) = &mut cfg.init {
            f(a);
        }
        cfg
    };
    for (cfg, want) in [
        (arch(&|a| a.heads = 0), "heads must be positive"),
        (arch(&|a| a.layers = 0), "layers must be positive"),
        (arch(&|a| a.heads = a.d_model + 1), "at least one dimension"),
        (
            {
                let mut c = base.clone();
                c.examples.index_ratio = Some(1e30);
                c
            },
            "index ratio",
        ),
        (
            {
                let mut c = base.clone();
                c.examples.index_ratio = Some(f64::NAN);
                c
            },
            "index ratio",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = Trainer::new(cfg, device())
            .train(&c, dir.path(), false, &mut LogProgress)
            .unwrap_err();
        assert!(
            matches!(err, TrainError::Config(_)) && err.to_string().contains(want),
            "{want}: {err}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}

#[test]
fn two_data_parallel_shards_take_the_same_step_as_one_device() {
    let c = tiny_collection();
    let mut cfg = config(DocidKind::Atomic, 1);
    let one = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(cfg.clone(), device());
    t.stop_after = None;
    t.train(&c, one.path(), false, &mut LogProgress).unwrap();
    cfg.shards = 2;
    let two = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(cfg, device());
    t.devices = vec![device(), device()];
    t.train(&c, two.path(), false, &mut LogProgress).unwrap();
    let a = GenirModel::load(one.path(), &device())
        .unwrap()
        .model
        .to_hf_tensors()
        .unwrap();
    let b = GenirModel::load(two.path(), &device())
        .unwrap()
        .model
        .to_hf_tensors()
        .unwrap();
    let mut worst = 0f32;
    for (name, ta) in &a {
        let tb = &b[name];
        for (x, y) in ta.values.iter().zip(&tb.values) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 1e-4, "max parameter difference {worst}");
}

#[test]
fn missing_documents_are_left_out_but_keep_their_docids() {
    let c = tiny_collection();
    let mut cfg = config(DocidKind::Atomic, 2);
    cfg.examples.exclude = vec!["100".into(), "107".into()];
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(cfg.clone(), device())
        .train(&c, dir.path(), false, &mut LogProgress)
        .unwrap();
    let m = GenirModel::load(dir.path(), &device()).unwrap();
    assert_eq!(m.scheme.len(), 12);
    cfg.examples.exclude = vec!["nope".into()];
    let err = Trainer::new(cfg, device())
        .train(
            &c,
            tempfile::tempdir().unwrap().path(),
            false,
            &mut LogProgress,
        )
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn unknown_docids_in_qrels_name_the_query() {
    let mut c = tiny_collection();
    let train = c.splits.get_mut("train").unwrap();
    train.qrels = Qrels::new(vec![Qrel::new("train-0", "no-such-doc", 1)]);
    let err = Trainer::new(config(DocidKind::Atomic, 1), device())
        .train(
            &c,
            tempfile::tempdir().unwrap().path(),
            false,
            &mut LogProgress,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no-such-doc") && err.contains("train-0"),
        "{err}"
    );
}

#[test]
fn corrupt_checkpoints_are_clear_errors() {
    let c = tiny_collection();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(config(DocidKind::Atomic, 4), device());
    t.stop_after = Some(5);
    t.train(&c, dir.path(), false, &mut LogProgress).unwrap();
    let latest = std::fs::read_to_string(dir.path().join("checkpoints/latest")).unwrap();
    let ck = dir.path().join("checkpoints").join(latest.trim());
    std::fs::write(ck.join("optimizer.bpk"), b"garbage").unwrap();
    let err = Trainer::new(config(DocidKind::Atomic, 4), device())
        .train(&c, dir.path(), true, &mut LogProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("optimizer"), "{err}");
    std::fs::remove_file(ck.join("state.json")).unwrap();
    let err = Trainer::new(config(DocidKind::Atomic, 4), device())
        .train(&c, dir.path(), true, &mut LogProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("incomplete"), "{err}");
    let bad = dir.path().join("not-a-model");
    std::fs::create_dir_all(&bad).unwrap();
    let err = GenirModel::load(&bad, &device()).unwrap_err().to_string();
    assert!(err.contains("docids.json"), "{err}");
}

#[test]
fn the_same_seed_gives_the_same_model_and_another_seed_does_not() {
    let c = tiny_collection();
    let cfg = config(DocidKind::Atomic, 2);
    let runs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for r in &runs {
        Trainer::new(cfg.clone(), device())
            .train(&c, r.path(), false, &mut LogProgress)
            .unwrap();
    }
    for f in ["model.safetensors", "tokenizer.json", "docids.json"] {
        let a = std::fs::read(runs[0].path().join(f)).unwrap();
        let b = std::fs::read(runs[1].path().join(f)).unwrap();
        assert!(a == b, "{f} differs between two runs with one seed");
    }
    let mut other = cfg;
    other.seed += 1;
    let o = tempfile::tempdir().unwrap();
    Trainer::new(other, device())
        .train(&c, o.path(), false, &mut LogProgress)
        .unwrap();
    assert!(model_bytes(o.path()) != model_bytes(runs[0].path()));
}

#[test]
fn a_pretrained_hugging_face_t5_gets_docid_rows_and_trains() {
    let pretrained =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../genir-model/tests/fixtures/t5/relu-tied");
    let c = tiny_collection();
    let mut cfg = config(DocidKind::Atomic, 30);
    cfg.init = Init::Pretrained(pretrained.clone());
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(cfg, device())
        .train(&c, dir.path(), false, &mut LogProgress)
        .unwrap();
    let m = GenirModel::load(dir.path(), &device()).unwrap();
    let base = genir_model::t5::T5Model::from_pretrained(&pretrained, &device()).unwrap();
    // the text vocabulary is the pretrained one; docid tokens come right after it
    assert_eq!(
        m.scheme.token_offset as usize,
        m.tok.vocab_size() - m.scheme.n_tokens()
    );
    assert_eq!(
        m.model.config.vocab_size,
        base.config.vocab_size.max(m.scheme.vocab_size())
    );
    assert_eq!(m.tok.token_to_id("<docid_0>"), Some(m.scheme.token_offset));
    let (h1, _) = train_split_hits(dir.path(), &c, "train");
    assert!(h1 >= 0.75, "pretrained start, training Hits@1 {h1}");
}

#[test]
fn semantic_docids_from_a_bi_encoder() {
    let enc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../genir-model/tests/fixtures/bert/bert-dot-bin");
    let c = tiny_collection();
    let mut cfg = config(
        DocidKind::Semantic {
            branching: 3,
            leaf_size: 4,
        },
        1,
    );
    cfg.embedder = genir_train::embed::EmbedderSpec::BiEncoder(enc);
    let dir = tempfile::tempdir().unwrap();
    Trainer::new(cfg, device())
        .train(&c, dir.path(), false, &mut LogProgress)
        .unwrap();
    let m = GenirModel::load(dir.path(), &device()).unwrap();
    assert_eq!(m.scheme.len(), 12);
    assert!(m.scheme.codes.iter().all(|c| c.len() >= 2));
    let bad: Result<genir_train::embed::EmbedderSpec, _> = "word2vec:x".parse();
    assert!(bad.is_err());
}

/// A BERT-style `tokenizer.json` (WordPiece, `[PAD]` = 0, `[unused0]` = 1, `[CLS] ... [SEP]` template,
/// padding and truncation set as in sentence-transformers' files) over the tiny collection's words.
fn bert_style_tokenizer(path: &Path, pad_first: bool) -> usize {
    let mut vocab = serde_json::Map::new();
    let mut names: Vec<String> = if pad_first {
        ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]"]
    } else {
        ["[UNK]", "[PAD]", "[unused0]", "[CLS]", "[SEP]"]
    }
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut words: Vec<String> = TOPICS
        .iter()
        .flat_map(|t| t.split(' '))
        .chain([
            "the", "is", "about", "and", "many", "people", "study", "with", ".",
        ])
        .map(str::to_string)
        .collect();
    words.sort();
    words.dedup();
    names.extend(words);
    for (i, n) in names.iter().enumerate() {
        vocab.insert(n.clone(), serde_json::json!(i));
    }
    let id = |n: &str| names.iter().position(|x| x == n).unwrap();
    let spec = serde_json::json!({
        "version": "1.0",
        "truncation": {"max_length": 8, "strategy": "LongestFirst", "stride": 0, "direction": "Right"},
        "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    std::fs::write(path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    names.len()
}

/// `Init::ScratchWithTokenizer` (`genir train --tokenizer`): a model trained from scratch on a given BERT
/// WordPiece tokenizer learns, keeps that tokenizer (with the docid tokens after its vocabulary and without
/// the file's fixed padding and truncation), and a tokenizer whose id 0 is not padding is a clear error.
#[test]
fn a_given_bert_tokenizer_replaces_the_learned_one() {
    let c = tiny_collection();
    let tmp = tempfile::tempdir().unwrap();
    let tok = tmp.path().join("tokenizer.json");
    let text_tokens = bert_style_tokenizer(&tok, true);
    let mut cfg = config(DocidKind::Atomic, 40);
    let Init::Scratch(arch) = cfg.init.clone() else {
        unreachable!()
    };
    cfg.init = Init::ScratchWithTokenizer {
        arch: arch.clone(),
        tokenizer: tok.clone(),
    };
    let dir = tmp.path().join("run");
    Trainer::new(cfg.clone(), device())
        .train(&c, &dir, false, &mut LogProgress)
        .unwrap();
    let (h1, _) = train_split_hits(&dir, &c, "train");
    assert!(h1 >= 0.9, "training queries Hits@1 {h1}");
    let m = GenirModel::load(&dir, &device()).unwrap();
    assert_eq!(m.scheme.token_offset as usize, text_tokens);
    assert_eq!(m.model.config.vocab_size, text_tokens + c.corpus.len());
    // [CLS] volcano lava eruption magma and more [SEP]: no truncation to 8, no padding to 16
    let ids = m
        .tok
        .encode("volcano lava eruption magma violin orchestra symphony concert glacier")
        .unwrap();
    assert_eq!(ids.len(), 11, "{ids:?}");
    assert_eq!((ids[0], ids[10]), (3, 4), "{ids:?}");

    let bad = tmp.path().join("bad.json");
    bert_style_tokenizer(&bad, false);
    cfg.init = Init::ScratchWithTokenizer {
        arch: arch.clone(),
        tokenizer: bad.clone(),
    };
    let err = Trainer::new(cfg.clone(), device())
        .train(&c, &tmp.path().join("bad-run"), false, &mut LogProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.json") && err.contains("padding"), "{err}");
    cfg.init = Init::ScratchWithTokenizer {
        arch: arch.clone(),
        tokenizer: tmp.path().join("missing.json"),
    };
    let err = Trainer::new(cfg, device())
        .train(&c, &tmp.path().join("missing-run"), false, &mut LogProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.json"), "{err}");
}

/// The decoder's first-position state (final norm) of each document's first `max_len` tokens, as
/// `init_docid_rows` reads them.
fn first_states(m: &GenirModel, c: &Collection, max_len: usize) -> Vec<Vec<f32>> {
    let device = device();
    let d = m.model.config.d_model;
    let ids: Vec<Vec<u32>> = c
        .corpus
        .iter()
        .map(|doc| {
            let mut ids = m.tok.encode(&doc.full_text()).unwrap();
            if ids.len() > max_len {
                ids.truncate(max_len - 1);
                ids.push(m.scheme.eos);
            }
            ids
        })
        .collect();
    let (input, mask) = genir_model::t5::pad_batch(&ids, 0, &device).unwrap();
    let hooks = &mut genir_model::hooks::Hooks::none();
    let enc = m.model.encode(input, mask.clone(), hooks).unwrap();
    let start = m.model.config.decoder_start() as i64;
    let dec = Tensor::<2, Int>::from_data(
        burn::tensor::TensorData::new(vec![start; ids.len()], [ids.len(), 1]),
        &device,
    );
    let h = m.model.decode_hidden(&enc, mask, dec, None, hooks).unwrap();
    let v: Vec<f32> = h
        .reshape([ids.len(), d])
        .into_data()
        .try_into_vec()
        .unwrap();
    v.chunks(d).map(<[f32]>::to_vec).collect()
}

#[test]
fn docid_rows_of_a_pretrained_model_are_orthogonal_to_its_mean_document_state() {
    let pretrained =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../genir-model/tests/fixtures/t5/gated-untied");
    let c = tiny_collection();
    let mut cfg = config(DocidKind::Atomic, 1);
    let rows_of = |cfg: &TrainConfig| -> (GenirModel, Vec<Vec<f32>>) {
        let m = genir_train::train::initial_model(cfg, &c, &device()).unwrap();
        let d = m.model.config.d_model;
        let head = m
            .model
            .to_hf_tensors()
            .unwrap()
            .remove("lm_head.weight")
            .unwrap();
        let rows = (0..m.scheme.len())
            .map(|doc| {
                let r = m.scheme.target(doc)[0] as usize;
                head.values[r * d..(r + 1) * d].to_vec()
            })
            .collect();
        (m, rows)
    };
    cfg.init = Init::Pretrained(pretrained);
    let (m, rows) = rows_of(&cfg);
    let d = m.model.config.d_model;
    // the mean state of the documents, from the initial model (its text rows are the pretrained ones)
    let states = first_states(&m, &c, cfg.examples.max_source_len);
    let mean: Vec<f32> = (0..d)
        .map(|k| states.iter().map(|s| s[k]).sum::<f32>() / states.len() as f32)
        .collect();
    let mean_norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(mean_norm > 1e-3, "the fixture's states have no common part");
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for (doc, row) in rows.iter().enumerate() {
        let norm = dot(row, row).sqrt();
        assert!(
            (norm - (d as f32).sqrt()).abs() < 1e-3,
            "doc {doc}: row norm {norm}"
        );
        let along = dot(row, &mean) / (norm * mean_norm);
        assert!(
            along.abs() < 1e-4,
            "doc {doc}: cosine with the mean state {along}"
        );
    }
    // each row points along its own document's state (minus the mean's direction)
    for (doc, (row, s)) in rows.iter().zip(&states).enumerate() {
        let own = dot(row, s);
        let best = rows
            .iter()
            .map(|r| dot(r, s))
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(
            own >= best - 1e-3,
            "doc {doc}: own logit {own}, best {best}"
        );
    }
}
