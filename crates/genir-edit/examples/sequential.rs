//! Sequential additions: how retention decays after 1, 10, 100, 1000 edits (issue 7's table).
//!
//! `cargo run --release -p genir-edit --example sequential -- [collection] [n_new] [methods] [out]`
//! (defaults: `wiki-genir`, 1000, `incdsi`, `target/edit-sequential`). `n_new` documents are split off the
//! collection, a base model is trained on the rest with the study's default recipe (`cargo xtask
//! reproduce`: T5 d_model 128, 2+2 layers, 8000-token WordPiece vocabulary, 6 epochs), then the documents
//! are added back one at a time by each method (`incdsi`, `rank_one`, `continued_training`,
//! `full_retraining`, comma-separated), and retention (Hits@1 of the other documents' training queries) is
//! measured after 1, 10, 100, 1000 additions. `PRETRAINED=DIR` fine-tunes the base (and retrained) models
//! from a pretrained T5 folder instead, `EPOCHS` and `LR` change the recipe's epochs and learning rate,
//! `ANCHORS` the number of anchors the edits keep (default 2,000), and `DENSE=DIR` adds a bi-encoder's dense
//! retrieval (e.g. `models/all-MiniLM-L6-v2`) to the reference rows.

use burn::prelude::*;
use genir_edit::eval::{evaluate_methods, EvalConfig, Method};
use genir_train::train::{Init, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("wiki-genir");
    let n_new: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let methods = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("incdsi")
        .split(',')
        .map(|m| match m {
            "incdsi" => Ok(Method::IncDsi),
            "rank_one" => Ok(Method::RankOne),
            "continued_training" => Ok(Method::ContinuedTraining),
            "full_retraining" => Ok(Method::FullRetraining),
            other => Err(format!(
                "unknown method {other:?} (incdsi, rank_one, continued_training, full_retraining)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out = std::path::PathBuf::from(
        args.get(4)
            .cloned()
            .unwrap_or_else(|| "target/edit-sequential".into()),
    );
    let collection = genir_data::shipped::load(name)?;
    let mut train = TrainConfig {
        epochs: 6,
        checkpoint_every: 100_000,
        ..TrainConfig::default()
    };
    let env = |k: &str| std::env::var(k).ok();
    if let Some(dir) = env("PRETRAINED") {
        train.init = Init::Pretrained(dir.into());
    }
    if let Some(e) = env("EPOCHS") {
        train.epochs = e.parse()?;
    }
    if let Some(lr) = env("LR") {
        train.lr = lr.parse()?;
    }
    let mut cfg = EvalConfig::new(out.join(format!("{name}-n{n_new}")), train);
    cfg.n_new = n_new;
    cfg.methods = methods;
    cfg.dense = env("DENSE").map(Into::into);
    if let Some(a) = env("ANCHORS") {
        cfg.max_anchors = a.parse()?;
    }
    cfg.decay_points = vec![1, 10, 100, 1000, n_new];
    cfg.decay_points.sort_unstable();
    cfg.decay_points.dedup();
    let t = std::time::Instant::now();
    let report = evaluate_methods(&collection, &cfg, &Device::flex())?;
    println!("{}", report.markdown());
    println!("{}", report.references_markdown());
    println!(
        "base: {} documents, trained in {:.1} s; whole evaluation {:.1} s",
        report.base_docs,
        report.base_train_seconds,
        t.elapsed().as_secs_f64()
    );
    std::fs::write(
        out.join(format!("{name}-n{n_new}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
