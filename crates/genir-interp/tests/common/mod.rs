//! Tiny models trained in the test (about a second each): the 12-document collection of genir-train's tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use burn::prelude::*;
use genir_data::{Collection, Corpus, Document, Qrel, Qrels, Queries, Query, QuerySet};
use genir_train::bundle::GenirModel;
use genir_train::docid::DocidKind;
use genir_train::examples::ExampleConfig;
use genir_train::train::{Architecture, Init, LogProgress, TrainConfig, Trainer};

pub const TOPICS: [&str; 12] = [
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
pub fn tiny_collection() -> Collection {
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

pub fn config(
    docids: DocidKind,
    epochs: usize,
    d_model: usize,
    layers: usize,
    seed: u64,
) -> TrainConfig {
    TrainConfig {
        init: Init::Scratch(Architecture {
            d_model,
            d_ff: 2 * d_model,
            layers,
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
        seed,
        checkpoint_every: 1000,
        keep_checkpoints: 1,
        eval_every: 0,
        validation_split: "validation".into(),
        shards: 1,
        embedder: Default::default(),
        docid_rows_from_documents: false,
    }
}

pub fn device() -> Device {
    Device::flex()
}

pub fn train(c: &Collection, cfg: TrainConfig, dir: &Path) {
    Trainer::new(cfg, device())
        .train(c, dir, false, &mut LogProgress)
        .expect("training the tiny model");
}

fn trained(
    cell: &'static OnceLock<tempfile::TempDir>,
    cfg: impl FnOnce() -> TrainConfig,
) -> GenirModel {
    let dir = cell.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        train(&tiny_collection(), cfg(), dir.path());
        dir
    });
    GenirModel::load(dir.path(), &device()).expect("load")
}

/// A 2-layer atomic-docid model that has learned the training queries.
pub fn atomic() -> GenirModel {
    static CELL: OnceLock<tempfile::TempDir> = OnceLock::new();
    trained(&CELL, || config(DocidKind::Atomic, 40, 32, 2, 3))
}

/// The same architecture from another seed, trained without documents 100 and 107.
pub fn atomic_other() -> GenirModel {
    static CELL: OnceLock<tempfile::TempDir> = OnceLock::new();
    trained(&CELL, || {
        let mut c = config(DocidKind::Atomic, 40, 32, 2, 11);
        c.examples.exclude = vec!["100".into(), "107".into()];
        c
    })
}

/// A naive (one token per character) docid model: several decoder positions.
pub fn naive() -> GenirModel {
    static CELL: OnceLock<tempfile::TempDir> = OnceLock::new();
    trained(&CELL, || config(DocidKind::Naive, 40, 32, 1, 3))
}

pub fn train_set() -> QuerySet {
    tiny_collection()
        .split("train")
        .expect("train split")
        .clone()
}
