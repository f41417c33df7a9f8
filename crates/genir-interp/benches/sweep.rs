//! The activation-patching sweep of the interpretability issue, three ways, on the model issue's T5
//! (d_model 256, d_ff 1024, 4 + 4 layers, 4 heads of 64, vocabulary 8,900 text + 100 atomic docid tokens =
//! 9,000, ReLU, tied head; random weights, seed 0), 8 clean / corrupted query pairs of 64 source tokens,
//! atomic docids (one decoder position), metric = logit difference:
//!
//! - `sweep`: [`activation_patching`] with components (5 sites x 4 layers), heads (2 kinds x 4 layers x 4
//!   heads), encoder positions (64) and the decoder's final norm: 117 cells per pair;
//! - `naive_full_forward_per_patch`: the same 117 cells the way TransformerLens's generic patching and
//!   MechIR do it, one full forward (encoder + decoder) of the 8-pair batch per cell, with plain hooks;
//! - `attribution`: [`attribution_patching`] of the same cells (one backward pass per pair);
//!   `attribution_gradient` the same with encoder positions by the plain gradient (no QK fix).
//!
//! Throughput is patched cells per second (8 pairs x 117 cells per iteration). The PyTorch baseline of the
//! naive loop is `tools/reference/bench_patching_sweep.py` (same shapes); `cargo xtask bench --bench sweep
//! --python ...` runs both and writes the ratios to docs/benchmarks.md.
//!
//! `cargo bench --workspace --bench sweep`

use std::time::Duration;

use burn::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use genir_interp::attribution::{attribution_patching, attribution_patching_with, EncoderEstimate};
use genir_interp::patching::{
    activation_patching, PatchConfig, PatchMetric, PatchPair, PatchTarget, PATCH_COMPONENTS,
};
use genir_model::hooks::{
    AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention, Selection, Stack,
};
use genir_model::t5::{Seq2SeqInput, T5Config, T5Model};
use genir_model::tokenizer::TextTokenizer;
use genir_train::bundle::GenirModel;
use genir_train::docid::{DocidKind, DocidScheme};

const TEXT: u32 = 8900;
const DOCS: usize = 100;
const PAIRS: usize = 8;
const WORDS: usize = 63; // + </s> = 64 source tokens
const CELLS: usize = 117;

fn model(device: &Device) -> GenirModel {
    let docids: Vec<String> = (0..DOCS).map(|d| d.to_string()).collect();
    let scheme = DocidScheme::build(DocidKind::Atomic, docids, None, TEXT, 1, 0).expect("scheme");
    let tok = TextTokenizer::synthetic_words(TEXT, &scheme.token_names).expect("tokenizer");
    let mut c = T5Config::small(TEXT as usize + DOCS, 256, 1024, 4, 4);
    c.dropout_rate = 0.0;
    let model = T5Model::init(c, 0, device).expect("init");
    GenirModel::new(model, tok, scheme).expect("model")
}

fn query(seed: usize) -> String {
    (0..WORDS)
        .map(|i| format!("w{}", 100 + (seed * WORDS + i) * 104_729 % 8800))
        .collect::<Vec<_>>()
        .join(" ")
}

fn pairs() -> Vec<PatchPair> {
    (0..PAIRS)
        .map(|i| {
            PatchPair::new(
                format!("q{i}"),
                query(2 * i),
                format!("{}", 50 + i),
                query(2 * i + 1),
                Some(format!("{i}")),
            )
        })
        .collect()
}

fn config() -> PatchConfig {
    PatchConfig {
        metric: PatchMetric::LogitDiff,
        targets: vec![
            PatchTarget::Components,
            PatchTarget::Heads,
            PatchTarget::EncoderPositions,
            PatchTarget::FinalNorm,
        ],
        batch_size: 64,
        ..PatchConfig::default()
    }
}

/// Every cell of the sweep as (hook point, selection), in the order of the table.
fn cells(layers: usize, heads: usize, src: usize) -> Vec<(HookPoint, Selection)> {
    let mut v = Vec::with_capacity(CELLS);
    for l in 0..layers {
        for (_, site) in PATCH_COMPONENTS {
            v.push((HookPoint::block(Stack::Decoder, l, site), Selection::all()));
        }
    }
    for l in 0..layers {
        for kind in [AttnKind::SelfAttn, AttnKind::CrossAttn] {
            for h in 0..heads {
                v.push((
                    HookPoint::attn(Stack::Decoder, l, kind, AttnSite::Z),
                    Selection::heads(vec![h]),
                ));
            }
        }
    }
    for p in 0..src {
        v.push((
            HookPoint::final_norm(Stack::Encoder),
            Selection::positions(vec![p]),
        ));
    }
    v.push((HookPoint::final_norm(Stack::Decoder), Selection::all()));
    v
}

/// One full forward of the whole batch per cell (TransformerLens / MechIR style); returns a checksum.
fn naive(gm: &GenirModel, pairs: &[PatchPair], device: &Device) -> f64 {
    let s = gm.searcher().expect("searcher");
    let clean: Vec<String> = pairs.iter().map(|p| p.clean.clone()).collect();
    let corrupt: Vec<String> = pairs.iter().map(|p| p.corrupt.clone()).collect();
    let dec = vec![vec![gm.model.config.decoder_start() as u32]; pairs.len()];
    let input = |q: &[String]| {
        Seq2SeqInput::from_ids(&s.encode_queries(q).expect("ids"), &dec, 0, device).expect("input")
    };
    let (clean, corrupt) = (input(&clean), input(&corrupt));
    let src = clean.input_ids.dims()[1];
    let cells = cells(4, 4, src);
    let points: Vec<HookPoint> = cells.iter().map(|c| c.0).collect();
    let (_, cache) = gm
        .model
        .run_with_cache(&clean, HookFilter::points(&points))
        .expect("clean run");
    let tok = |d: &str| gm.scheme.target(gm.scheme.index_of(d).expect("docid"))[0] as usize;
    let toks: Vec<(usize, usize)> = pairs
        .iter()
        .map(|p| {
            (
                tok(&p.clean_docid),
                tok(p.corrupt_docid.as_deref().expect("docid")),
            )
        })
        .collect();
    let metric = |hooks: &mut Hooks<'_>| -> f64 {
        let logits = gm.model.forward(&corrupt, hooks).expect("forward");
        let v: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("logits");
        let vocab = v.len() / pairs.len();
        toks.iter()
            .enumerate()
            .map(|(i, &(c, x))| f64::from(v[i * vocab + c] - v[i * vocab + x]))
            .sum()
    };
    let mut sum = metric(&mut Hooks::none());
    for (point, sel) in cells {
        let source = cache.require(&point).expect("cached").clone();
        let mut hooks = Hooks::none();
        hooks.add(
            point,
            Intervention::Patch {
                source,
                selection: sel,
            },
        );
        sum += metric(&mut hooks);
    }
    sum
}

fn bench(c: &mut Criterion) {
    // as genir's binaries do: reuse freed tensor buffers (see `reuse_freed_memory`)
    genir_model::device::reuse_freed_memory();
    // GENIR_BENCH_BACKEND=flex|wgpu|cuda (`cargo xtask bench` sets it); benchmark ids start with it
    let backend =
        genir_model::device::Backend::from_env("GENIR_BENCH_BACKEND").expect("GENIR_BENCH_BACKEND");
    let device = backend.device().expect("the backend is built in");
    let gm = model(&device);
    let pairs = pairs();
    let cfg = config();
    let rows = activation_patching(&gm, &pairs, &cfg)
        .expect("sweep")
        .height();
    assert_eq!(rows, PAIRS * (CELLS + 1), "cells per pair");
    let mut g = c.benchmark_group("interp_sweep_p8_s64_117cells");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements((PAIRS * CELLS) as u64));
    g.bench_function(format!("{backend}/sweep"), |b| {
        b.iter(|| activation_patching(&gm, &pairs, &cfg).expect("sweep"))
    });
    g.bench_function(format!("{backend}/attribution"), |b| {
        b.iter(|| attribution_patching(&gm, &pairs, &cfg).expect("attribution"))
    });
    // encoder positions by the plain gradient instead of AtP*'s QK fix: what the fix costs
    g.bench_function(format!("{backend}/attribution_gradient"), |b| {
        b.iter(|| {
            attribution_patching_with(&gm, &pairs, &cfg, EncoderEstimate::Gradient)
                .expect("attribution")
        })
    });
    g.bench_function(format!("{backend}/naive_full_forward_per_patch"), |b| {
        b.iter(|| naive(&gm, &pairs, &device))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
