//! The comparison table of the README: `cargo run --release -p genir-edit --example eval_mini [n_new] [out]`.
//!
//! Variants through the environment (for the README's A/B): `SENT=1` trains the base and retrained models with
//! sentence indexing (`ExampleConfig::index_sentences`), `EPOCHS=N` changes the epochs, `MARGIN_NEW`,
//! `MARGIN_OLD`, `L2` set IncDSI's margins and L2 weight, `ONLY_INCDSI=1` runs IncDSI alone,
//! `PRETRAINED=DIR` starts the base and retrained models from a pretrained T5 folder (e.g.
//! `models/flan-t5-small-traceforge`), `LR` sets the learning rate and `DENSE=DIR` adds a bi-encoder's dense
//! retrieval (e.g. `models/all-MiniLM-L6-v2`) to the references; `METHODS=incdsi,continued_training` picks
//! methods, `FT_STEPS` and `FT_LR` set continued training's step limit and learning rate. A finished base or
//! retrained model in `out` is reused when its training configuration is this run's (so the edit settings can
//! be varied on one base model); give another `out` for `SENT` or `EPOCHS` variants.

use burn::prelude::*;
use genir_edit::eval::{evaluate_methods, EvalConfig};
use genir_train::train::{Architecture, Init, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n_new: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let out = std::path::PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "target/edit-eval".into()),
    );
    let wiki = genir_data::shipped::load("wiki-genir-mini")?;
    let env = |k: &str| std::env::var(k).ok();
    let mut train = TrainConfig {
        init: Init::Scratch(Architecture {
            d_model: 128,
            d_ff: 512,
            layers: 2,
            heads: 4,
            text_vocab: 2000,
        }),
        epochs: 30,
        warmup_steps: 50,
        ..TrainConfig::default()
    };
    if let Some(e) = env("EPOCHS") {
        train.epochs = e.parse()?;
    }
    if let Some(dir) = env("PRETRAINED") {
        train.init = Init::Pretrained(dir.into());
    }
    if let Some(lr) = env("LR") {
        train.lr = lr.parse()?;
    }
    if env("SENT").is_some() {
        train.examples.index_sentences = true;
    }
    let mut cfg = EvalConfig::new(out.join(format!("n{n_new}")), train);
    cfg.n_new = n_new;
    if let Some(v) = env("MARGIN_NEW") {
        cfg.edit.margin_new = v.parse()?;
    }
    if let Some(v) = env("MARGIN_OLD") {
        cfg.edit.margin_old = v.parse()?;
    }
    if let Some(v) = env("L2") {
        cfg.edit.l2 = v.parse()?;
    }
    cfg.dense = env("DENSE").map(Into::into);
    if env("ONLY_INCDSI").is_some() {
        cfg.methods = vec![genir_edit::eval::Method::IncDsi];
    }
    if let Some(m) = env("METHODS") {
        use genir_edit::eval::Method;
        let all = [
            Method::IncDsi,
            Method::RankOne,
            Method::ContinuedTraining,
            Method::FullRetraining,
        ];
        cfg.methods = m
            .split(',')
            .map(|n| {
                all.into_iter()
                    .find(|x| x.name() == n)
                    .ok_or_else(|| format!("METHODS: unknown method {n:?}"))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = env("FT_STEPS") {
        cfg.finetune_steps = v.parse()?;
    }
    if let Some(v) = env("FT_LR") {
        cfg.finetune_lr = Some(v.parse()?);
    }
    let t = std::time::Instant::now();
    let report = evaluate_methods(&wiki, &cfg, &Device::flex())?;
    println!("{}", report.markdown());
    println!("{}", report.references_markdown());
    println!(
        "base: {} documents, trained in {:.1} s; whole evaluation {:.1} s",
        report.base_docs,
        report.base_train_seconds,
        t.elapsed().as_secs_f64()
    );
    report.write_parquet(&out.join(format!("n{n_new}.parquet")))?;
    std::fs::write(
        out.join(format!("n{n_new}.json")),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(())
}
