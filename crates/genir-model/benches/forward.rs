//! Forward pass of the T5 from the model issue (d_model 256, d_ff 1024, 4+4 layers, 4 heads, vocabulary
//! 9,000) on a batch of 32 sources of 64 tokens and one decoder step, on `flex`; with no hooks, with the hook
//! machinery active (a no-op hook on one point), caching every point, and with every self-attention removed
//! (`T5Model::remove_components`: skipped, so it runs faster; throughput still counts the full model's FLOP).
//! Compare with
//! `tools/reference/bench_t5_forward.py` (PyTorch, same shapes); `cargo xtask`-free: `cargo bench -p genir-model`.

use burn::prelude::*;
use burn::tensor::TensorData;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use genir_model::hooks::{HookFilter, HookPoint, Hooks, Intervention};
use genir_model::t5::{Seq2SeqInput, T5Config, T5Model};

const BATCH: usize = 32;
const SRC: usize = 64;

fn setup(device: &Device) -> (T5Model, Seq2SeqInput) {
    let mut config = T5Config::small(9000, 256, 1024, 4, 4);
    config.dropout_rate = 0.0;
    let model = T5Model::init(config, 0, device).expect("init");
    let ids: Vec<i64> = (0..BATCH * SRC)
        .map(|i| (3 + (i * 7919) % 8990) as i64)
        .collect();
    let input = Seq2SeqInput {
        input_ids: Tensor::from_data(TensorData::new(ids, [BATCH, SRC]), device),
        attention_mask: Tensor::ones([BATCH, SRC], device),
        decoder_input_ids: Tensor::zeros([BATCH, 1], device),
    };
    (model, input)
}

fn sync(t: Tensor<3>) -> f32 {
    t.slice([0..1, 0..1, 0..1]).into_scalar::<f32>()
}

fn bench(c: &mut Criterion) {
    // as genir's binaries do: reuse freed tensor buffers (see `reuse_freed_memory`)
    genir_model::device::reuse_freed_memory();
    // GENIR_BENCH_BACKEND=flex|wgpu|cuda (`cargo xtask bench` sets it); benchmark ids start with it
    let backend =
        genir_model::device::Backend::from_env("GENIR_BENCH_BACKEND").expect("GENIR_BENCH_BACKEND");
    let device = backend.device().expect("the backend is built in");
    let (model, input) = setup(&device);
    let flops = model.config.forward_flops(BATCH, SRC, 1);
    let mut g = c.benchmark_group("t5_forward_b32_s64_t1");
    g.sample_size(20);
    g.throughput(Throughput::Elements(flops));
    g.bench_function(format!("{backend}/no_hooks"), |b| {
        b.iter(|| sync(model.forward(&input, &mut Hooks::none()).expect("forward")))
    });
    let point: HookPoint = "decoder.blocks.3.hook_mlp_out".parse().expect("name");
    g.bench_function(format!("{backend}/noop_hook_active"), |b| {
        b.iter(|| {
            let mut hooks = Hooks::none().with(point, Intervention::Custom(Box::new(|_, a| Ok(a))));
            sync(model.forward(&input, &mut hooks).expect("forward"))
        })
    });
    g.bench_function(format!("{backend}/cache_all_points"), |b| {
        b.iter(|| {
            let (logits, cache) = model
                .run_with_cache(&input, HookFilter::all())
                .expect("forward");
            std::hint::black_box(cache.len());
            sync(logits)
        })
    });
    let all_self: Vec<HookPoint> = ["encoder", "decoder"]
        .iter()
        .flat_map(|s| (0..4).map(move |l| format!("{s}.blocks.{l}.hook_self_attn_out")))
        .map(|n| n.parse().expect("name"))
        .collect();
    let pruned = model
        .clone()
        .remove_components(&all_self)
        .expect("remove self-attention");
    g.bench_function(format!("{backend}/self_attention_removed"), |b| {
        b.iter(|| sync(pruned.forward(&input, &mut Hooks::none()).expect("forward")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
