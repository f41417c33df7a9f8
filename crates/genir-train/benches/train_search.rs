//! Training throughput and constrained-search latency, on `flex`, with the shapes of
//! `tools/reference/bench_train_search.py` (PyTorch + HF transformers):
//!
//! - one AdamW step of the T5 from the model issue (d_model 256, d_ff 1024, 4+4 layers, 4 heads) with 9,000
//!   text + 2,000 atomic docid tokens, batch 32 x 64 source tokens, one docid token, clipping at 1.0;
//! - constrained search of 64 queries x 16 tokens, top 10 of 2,000 docids: atomic (one step) and multi-token
//!   (3 tokens + `</s>`, 10 x 10 x 20 codes, beam 10).
//!
//! `cargo bench -p genir-train`; throughput is reported per example / per query.

use burn::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use genir_model::t5::{T5Config, T5Model};
use genir_model::tokenizer::TextTokenizer;
use genir_train::docid::{DocidKind, DocidScheme};
use genir_train::examples::{Example, ExampleKind};
use genir_train::search::Searcher;
use genir_train::train::{TrainConfig, Trainer};

const TEXT: u32 = 9000;
const DOCS: usize = 2000;
const B: usize = 32;
const S: usize = 64;

fn model(device: &Device) -> T5Model {
    let mut c = T5Config::small(TEXT as usize + DOCS, 256, 1024, 4, 4);
    c.dropout_rate = 0.0;
    T5Model::init(c, 0, device).expect("init")
}

/// A word-level tokenizer over `w3 .. w8999` so queries are 16 known tokens.
fn tokenizer(scheme: &DocidScheme) -> TextTokenizer {
    TextTokenizer::synthetic_words(TEXT, &scheme.token_names).expect("tokenizer")
}

fn queries() -> Vec<String> {
    (0..64)
        .map(|q| {
            (0..15)
                .map(|i| format!("w{}", 3 + (q * 15 + i) * 104_729 % 8990))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // as genir's binaries do: reuse freed tensor buffers (see `reuse_freed_memory`)
    genir_model::device::reuse_freed_memory();
    // GENIR_BENCH_BACKEND=flex|wgpu|cuda (`cargo xtask bench` sets it); benchmark ids start with it
    let backend =
        genir_model::device::Backend::from_env("GENIR_BENCH_BACKEND").expect("GENIR_BENCH_BACKEND");
    let device = backend.device().expect("the backend is built in");
    let docids: Vec<String> = (0..DOCS).map(|d| d.to_string()).collect();
    let atomic =
        DocidScheme::build(DocidKind::Atomic, docids.clone(), None, TEXT, 1, 0).expect("scheme");

    // training step
    let cfg = TrainConfig {
        batch_size: B,
        ..TrainConfig::default()
    };
    let trainer = Trainer::new(cfg, device.clone());
    let examples: Vec<Example> = (0..B)
        .map(|i| Example {
            source: (0..S)
                .map(|j| 3 + ((i * S + j) * 7919 % 8990) as u32)
                .collect(),
            doc: i * 61 % DOCS,
            kind: ExampleKind::Retrieval,
        })
        .collect();
    let batch: Vec<&Example> = examples.iter().collect();
    let mut m = Some(model(&device.clone().autodiff()));
    let mut optim = trainer.optimizer();
    let mut g = c.benchmark_group("dsi_train_step_b32_s64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(B as u64));
    g.bench_function(format!("{backend}/adamw_step"), |b| {
        b.iter(|| {
            let (next, loss, _) = trainer
                .step(m.take().expect("model"), &mut optim, &batch, &atomic, 1e-3)
                .expect("step");
            m = Some(next);
            loss
        })
    });
    g.finish();

    // constrained search
    let inference = model(&device);
    let codes: Vec<Vec<u32>> = (0..DOCS as u32)
        .map(|d| vec![d / 200, (d / 20) % 10, d % 20])
        .collect();
    let mut multi = DocidScheme::build(DocidKind::Naive, docids, None, TEXT, 1, 0).expect("scheme");
    multi.kind = DocidKind::Semantic {
        branching: 10,
        leaf_size: 20,
    };
    multi.codes = codes;
    multi.token_names = (0..20).map(|i| format!("<docid_sem_{i}>")).collect();
    let qs = queries();
    let mut g = c.benchmark_group("dsi_search_q64_k10");
    g.sample_size(10);
    g.throughput(Throughput::Elements(qs.len() as u64));
    let tok_a = tokenizer(&atomic);
    let sa = Searcher::new(&inference, &tok_a, &atomic).expect("searcher");
    g.bench_function(format!("{backend}/atomic"), |b| {
        b.iter(|| sa.search(&qs, 10).expect("search"))
    });
    let tok_m = tokenizer(&multi);
    let sm = Searcher::new(&inference, &tok_m, &multi).expect("searcher");
    g.bench_function(format!("{backend}/multi_token_beam10"), |b| {
        b.iter(|| sm.search(&qs, 10).expect("search"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
