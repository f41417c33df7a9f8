//! genir's T5 against Hugging Face transformers on the same weights and inputs.
//!
//! Fixtures come from `tools/reference/make_t5_fixtures.py` (transformers 4.57.6, torch 2.15). Tolerance: max
//! absolute difference 1e-4 in f32 on every logit and every recorded activation. The backend is `flex` unless
//! `GENIR_TEST_BACKEND` names another one built into this test binary (CI also runs these on `wgpu`).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use genir_model::device::Backend;
use genir_model::hooks::{
    Activation, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention, Selection, Site,
    Stack,
};
use genir_model::t5::{relative_position_bucket, KvPair, Seq2SeqInput, T5Model};
use genir_model::tokenizer::TextTokenizer;
use genir_model::weights::WeightFile;
use genir_model::ModelError;

const TOL: f32 = 1e-4;
const VARIANTS: [&str; 2] = ["relu-tied", "gated-untied"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5")
}

fn device() -> Device {
    let name = std::env::var("GENIR_TEST_BACKEND").unwrap_or_else(|_| "flex".into());
    name.parse::<Backend>()
        .and_then(Backend::device)
        .unwrap_or_else(|e| panic!("GENIR_TEST_BACKEND={name}: {e}"))
}

struct Fixture {
    model: T5Model,
    reference: WeightFile,
    sources: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    mask: Vec<Vec<u32>>,
    decoder_ids: Vec<Vec<u32>>,
}

fn load(name: &str, device: &Device) -> Fixture {
    let dir = fixtures().join(name);
    let model = T5Model::from_pretrained(&dir, device).unwrap();
    let reference = WeightFile::read_safetensors(&dir.join("reference.safetensors")).unwrap();
    let inputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(inputs[k].clone()).unwrap() };
    Fixture {
        model,
        reference,
        sources: serde_json::from_value(inputs["sources"].clone()).unwrap(),
        input_ids: ids("input_ids"),
        mask: ids("attention_mask"),
        decoder_ids: ids("decoder_input_ids"),
    }
}

impl Fixture {
    /// The reference batch with decoder inputs cut to `t` tokens (sources unpadded, re-padded by genir).
    fn input(&self, t: usize, device: &Device) -> Seq2SeqInput {
        let sources: Vec<Vec<u32>> = self
            .input_ids
            .iter()
            .zip(&self.mask)
            .map(|(ids, m)| {
                ids.iter()
                    .zip(m)
                    .filter(|(_, &m)| m == 1)
                    .map(|(&i, _)| i)
                    .collect()
            })
            .collect();
        let dec: Vec<Vec<u32>> = self.decoder_ids.iter().map(|d| d[..t].to_vec()).collect();
        Seq2SeqInput::from_ids(&sources, &dec, 0, device).unwrap()
    }

    fn reference(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self
            .reference
            .get(name)
            .unwrap_or_else(|| panic!("no reference `{name}`"));
        (t.shape.clone(), t.values.clone())
    }
}

fn values3(t: &Tensor<3>) -> Vec<f32> {
    t.to_data().try_to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rows `..t` along axis 1 of a `[batch, T, ...]` row-major buffer.
fn prefix(shape: &[usize], values: &[f32], t: usize) -> Vec<f32> {
    let inner: usize = shape[2..].iter().product();
    let mut out = Vec::new();
    for b in 0..shape[0] {
        let start = b * shape[1] * inner;
        out.extend_from_slice(&values[start..start + t * inner]);
    }
    out
}

#[test]
fn tokenizer_matches_hugging_face_ids() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let tok = TextTokenizer::from_file(
            &fixtures().join(name).join("tokenizer.json"),
            f.model.config.vocab_size,
        )
        .unwrap();
        for (i, s) in f.sources.iter().enumerate() {
            let expected: Vec<u32> = f.input_ids[i]
                .iter()
                .zip(&f.mask[i])
                .filter(|(_, &m)| m == 1)
                .map(|(&v, _)| v)
                .collect();
            assert_eq!(tok.encode(s).unwrap(), expected, "{name}: source {i}");
        }
    }
}

#[test]
fn logits_and_every_recorded_activation_match_hugging_face() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let input = f.input(32, &device);
        let (logits, cache) = f.model.run_with_cache(&input, HookFilter::all()).unwrap();
        let (shape, want) = f.reference("logits");
        assert_eq!(logits.dims().to_vec(), shape);
        let d = max_diff(&values3(&logits), &want);
        assert!(d < TOL, "{name}: logits differ by {d}");
        let mut compared = 0;
        for key in f.reference.names() {
            if key == "logits" {
                continue;
            }
            let point: HookPoint = key.parse().unwrap();
            let act = cache
                .get(&point)
                .unwrap_or_else(|| panic!("{name}: `{key}` not cached"));
            let (shape, want) = f.reference(&key);
            assert_eq!(act.dims(), shape, "{name}: `{key}` shape");
            let d = max_diff(&act.to_vec().unwrap(), &want);
            assert!(d < TOL, "{name}: `{key}` differs by {d}");
            compared += 1;
        }
        assert!(
            compared > 40,
            "{name}: only {compared} activations compared"
        );
    }
}

#[test]
fn every_decoder_length_from_1_to_32_matches() {
    // A decoder whose self-attention ignored the causal mask would match only at length 1.
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let (shape, want) = f.reference("logits");
        for t in 1..=32 {
            let logits = f
                .model
                .forward(&f.input(t, &device), &mut Hooks::none())
                .unwrap();
            let d = max_diff(&values3(&logits), &prefix(&shape, &want, t));
            assert!(d < TOL, "{name}: decoder length {t} differs by {d}");
        }
    }
}

#[test]
fn kv_cached_decoding_equals_the_full_forward() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let input = f.input(32, &device);
        let full = values3(&f.model.forward(&input, &mut Hooks::none()).unwrap());
        for chunk in [1usize, 3, 32] {
            let enc = f.model.encode_input(&input, &mut Hooks::none()).unwrap();
            let mut state = f.model.start_decoding(enc, input.attention_mask.clone());
            let mut parts = Vec::new();
            let mut start = 0;
            while start < 32 {
                let end = (start + chunk).min(32);
                let ids = input.decoder_input_ids.clone().slice([0..3, start..end]);
                parts.push(
                    f.model
                        .decode_step(&mut state, ids, &mut Hooks::none())
                        .unwrap(),
                );
                start = end;
            }
            let stepped = Tensor::cat(parts, 1);
            let d = max_diff(&values3(&stepped), &full);
            assert!(
                d < TOL,
                "{name}: KV-cached decoding in chunks of {chunk} differs by {d}"
            );
        }
    }
}

#[test]
fn beam_reordering_of_decoder_state_follows_the_rows() {
    let device = device();
    let f = load("relu-tied", &device);
    let input = f.input(4, &device);
    let enc = f.model.encode_input(&input, &mut Hooks::none()).unwrap();
    let mut state = f.model.start_decoding(enc, input.attention_mask.clone());
    let first = input.decoder_input_ids.clone().slice([0..3, 0..2]);
    f.model
        .decode_step(&mut state, first, &mut Hooks::none())
        .unwrap();
    let mut reordered = state.select(&[2, 2, 0]);
    let next = input.decoder_input_ids.clone().slice([0..3, 2..3]);
    let rows = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 2, 0], [3]), &device);
    let got = f
        .model
        .decode_step(&mut reordered, next.select(0, rows), &mut Hooks::none())
        .unwrap();
    let full = f
        .model
        .forward(&f.input(3, &device), &mut Hooks::none())
        .unwrap();
    let full = values3(&full.slice([0..3, 2..3]));
    let got = values3(&got);
    let v = full.len() / 3;
    for (out_row, src_row) in [(0usize, 2usize), (1, 2), (2, 0)] {
        let d = max_diff(
            &got[out_row * v..(out_row + 1) * v],
            &full[src_row * v..(src_row + 1) * v],
        );
        assert!(d < TOL, "row {out_row} (from {src_row}) differs by {d}");
    }
}

/// Beam search's decoder state keeps one encoder output (and one set of cross-attention keys/values) per
/// source: decoding grouped rows must give what decoding with them copied to every row gives, through
/// reorderings that repeat rows, leave a source without rows, and start before the first step.
#[test]
fn beams_share_the_encoder_output_and_decode_as_if_it_were_copied() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let input = f.input(5, &device);
        let enc = f.model.encode_input(&input, &mut Hooks::none()).unwrap();
        let state = f.model.start_decoding(enc, input.attention_mask.clone());
        let mut source_of = vec![2usize, 0, 2, 2, 2];
        let mut grouped = state.select(&source_of);
        assert_eq!(
            grouped.encoder_out.dims()[0],
            3,
            "the encoder output is not copied"
        );
        let mut copied = grouped.expanded();
        assert_eq!(copied.encoder_out.dims()[0], 5);
        let reorders: [&[usize]; 3] = [&[4, 1, 1, 0, 3, 3], &[5, 0, 2], &[2, 2, 1, 0]];
        for step in 0..4 {
            let rows = Tensor::<1, Int>::from_data(
                TensorData::new(
                    source_of.iter().map(|&s| s as i64).collect::<Vec<_>>(),
                    [source_of.len()],
                ),
                &device,
            );
            let ids = input
                .decoder_input_ids
                .clone()
                .slice([0..3, step..step + 1])
                .select(0, rows);
            let a = f
                .model
                .decode_step(&mut grouped, ids.clone(), &mut Hooks::none())
                .unwrap();
            let b = f
                .model
                .decode_step(&mut copied, ids, &mut Hooks::none())
                .unwrap();
            let d = max_diff(&values3(&a), &values3(&b));
            assert!(d < 1e-5, "{name} step {step}: grouped rows differ by {d}");
            if let Some(r) = reorders.get(step) {
                source_of = r.iter().map(|&i| source_of[i]).collect();
                grouped = grouped.select(r);
                copied = copied.select(r);
                assert_eq!(grouped.sources.as_deref(), Some(&source_of[..]));
            }
        }
        // a hooked step sees one row per decoder row at every hook point
        let mut hooks = Hooks::caching(HookFilter::all());
        let rows = source_of.len();
        let last =
            Tensor::<2, Int>::from_data(TensorData::new(vec![5i64; rows], [rows, 1]), &device);
        f.model.decode_step(&mut grouped, last, &mut hooks).unwrap();
        let cache = hooks.take_cache();
        let point = HookPoint::attn(Stack::Decoder, 1, AttnKind::CrossAttn, AttnSite::Pattern);
        assert_eq!(cache.get(&point).unwrap().dims()[0], rows);
        assert!(grouped.sources.is_none());
        // decoder ids that do not match the state's rows are an error, not a panic
        let wrong = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64; 2], [2, 1]), &device);
        let err = f
            .model
            .decode_step(&mut copied, wrong, &mut Hooks::none())
            .unwrap_err();
        assert!(err.to_string().contains("2 rows of decoder ids"), "{err}");
        // every beam pruned: a state without rows decodes nothing, without a panic
        let mut empty = copied.select(&[]);
        let none = Tensor::<2, Int>::from_data(TensorData::new(Vec::<i64>::new(), [0, 1]), &device);
        let out = f
            .model
            .decode_step(&mut empty, none, &mut Hooks::none())
            .unwrap();
        assert_eq!(out.dims()[0], 0);
    }
}

#[test]
fn pytorch_bin_checkpoint_loads_the_same_weights() {
    let device = device();
    let f = load("relu-tied", &device);
    let bin = T5Model::from_pretrained(&fixtures().join("relu-tied-bin"), &device).unwrap();
    let input = f.input(8, &device);
    let a = values3(&f.model.forward(&input, &mut Hooks::none()).unwrap());
    let b = values3(&bin.forward(&input, &mut Hooks::none()).unwrap());
    assert_eq!(max_diff(&a, &b), 0.0);
}

#[test]
fn caching_and_self_patching_change_nothing() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let input = f.input(6, &device);
        let plain = values3(&f.model.forward(&input, &mut Hooks::none()).unwrap());
        let (cached_logits, cache) = f.model.run_with_cache(&input, HookFilter::all()).unwrap();
        assert_eq!(
            max_diff(&plain, &values3(&cached_logits)),
            0.0,
            "{name}: caching changed the logits"
        );
        let (e, d) = f.model.depth();
        let points = HookPoint::all(e, d);
        assert_eq!(
            cache.len(),
            points.len(),
            "{name}: not every point was cached"
        );
        // Patch every point at once with the run's own activations.
        let mut hooks = Hooks::none();
        for p in &points {
            hooks = hooks.patch_from(&cache, *p, Selection::all()).unwrap();
        }
        let patched = values3(&f.model.forward(&input, &mut hooks).unwrap());
        assert_eq!(
            max_diff(&plain, &patched),
            0.0,
            "{name}: self-patching changed the logits"
        );
    }
}

fn clean_and_corrupt(f: &Fixture, device: &Device) -> (Seq2SeqInput, Seq2SeqInput) {
    let clean = f.input(5, device);
    // The corrupted run reads the sources in another order.
    let ids = clean.input_ids.clone();
    let mask = clean.attention_mask.clone();
    let order = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 2, 0], [3]), device);
    let corrupt = Seq2SeqInput {
        input_ids: ids.select(0, order.clone()),
        attention_mask: mask.select(0, order),
        decoder_input_ids: clean.decoder_input_ids.clone(),
    };
    (clean, corrupt)
}

#[test]
fn patching_the_last_residual_stream_gives_the_other_runs_logits() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let (clean, corrupt) = clean_and_corrupt(&f, &device);
        let (clean_logits, cache) = f.model.run_with_cache(&clean, HookFilter::all()).unwrap();
        let corrupt_logits = values3(&f.model.forward(&corrupt, &mut Hooks::none()).unwrap());
        let clean_logits = values3(&clean_logits);
        assert!(
            max_diff(&clean_logits, &corrupt_logits) > 1e-2,
            "{name}: runs do not differ"
        );
        let last = f.model.depth().1 - 1;
        for point in [
            HookPoint::block(Stack::Decoder, last, Site::ResidPost),
            HookPoint::final_norm(Stack::Decoder),
        ] {
            let mut hooks = Hooks::none()
                .patch_from(&cache, point, Selection::all())
                .unwrap();
            let patched = values3(&f.model.forward(&corrupt, &mut hooks).unwrap());
            assert!(max_diff(&patched, &clean_logits) < 1e-5, "{name}: {point}");
        }
        // Patching every position one at a time in one run is the same as the whole tensor.
        let point = HookPoint::block(Stack::Decoder, last, Site::ResidPost);
        let mut hooks = Hooks::none();
        for pos in 0..5 {
            hooks = hooks
                .patch_from(&cache, point, Selection::positions(vec![pos]))
                .unwrap();
        }
        let patched = values3(&f.model.forward(&corrupt, &mut hooks).unwrap());
        assert!(
            max_diff(&patched, &clean_logits) < 1e-5,
            "{name}: per-position patching"
        );
        // Patching only position 2 of the last layer changes only position 2's logits.
        let mut hooks = Hooks::none()
            .patch_from(&cache, point, Selection::positions(vec![2]))
            .unwrap();
        let patched = values3(&f.model.forward(&corrupt, &mut hooks).unwrap());
        let v = f.model.config.vocab_size;
        for b in 0..3 {
            for t in 0..5 {
                let r = (b * 5 + t) * v..(b * 5 + t + 1) * v;
                let want = if t == 2 {
                    &clean_logits[r.clone()]
                } else {
                    &corrupt_logits[r.clone()]
                };
                assert!(
                    max_diff(&patched[r], want) < 1e-5,
                    "{name}: batch {b} pos {t}"
                );
            }
        }
    }
}

#[test]
fn head_patching_and_ablation_touch_only_the_selection() {
    let device = device();
    let f = load("gated-untied", &device);
    let (clean, corrupt) = clean_and_corrupt(&f, &device);
    let (_, clean_cache) = f.model.run_with_cache(&clean, HookFilter::all()).unwrap();
    let point = HookPoint::attn(Stack::Decoder, 1, AttnKind::CrossAttn, AttnSite::Z);
    let (_, corrupt_cache) = f
        .model
        .run_with_cache(&corrupt, HookFilter::points(&[point]))
        .unwrap();
    let mut hooks = Hooks::none()
        .patch_from(&clean_cache, point, Selection::heads(vec![1]))
        .unwrap()
        .with_cache(HookFilter::points(&[point]));
    f.model.forward(&corrupt, &mut hooks).unwrap();
    let got = hooks.take_cache().get(&point).unwrap().to_vec().unwrap();
    let clean_z = clean_cache.get(&point).unwrap().to_vec().unwrap();
    let corrupt_z = corrupt_cache.get(&point).unwrap().to_vec().unwrap();
    // [batch 3, pos 5, head 4, d_head 8]
    for (i, v) in got.iter().enumerate() {
        let head = (i / 8) % 4;
        let want = if head == 1 { clean_z[i] } else { corrupt_z[i] };
        assert_eq!(*v, want, "element {i} (head {head})");
    }

    // Zero ablation of an MLP output, and mean ablation with a broadcast mean.
    let mlp = HookPoint::block(Stack::Decoder, 0, Site::MlpOut);
    let mut hooks = Hooks::none()
        .with(mlp, Intervention::Zero(Selection::all()))
        .with_cache(HookFilter::points(&[mlp]));
    let ablated = values3(&f.model.forward(&clean, &mut hooks).unwrap());
    assert!(hooks
        .take_cache()
        .get(&mlp)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|v| *v == 0.0));
    let plain = values3(&f.model.forward(&clean, &mut Hooks::none()).unwrap());
    assert!(max_diff(&ablated, &plain) > 1e-3, "ablation had no effect");
    let mean = Tensor::<3>::ones([1, 1, 32], &device) * 0.5;
    let mut hooks = Hooks::none()
        .with(
            mlp,
            Intervention::Mean {
                mean: Activation::Rank3(mean),
                selection: Selection::positions(vec![0]),
            },
        )
        .with_cache(HookFilter::points(&[mlp]));
    f.model.forward(&clean, &mut hooks).unwrap();
    let got = hooks.take_cache().get(&mlp).unwrap().to_vec().unwrap();
    let orig = clean_cache.get(&mlp).unwrap().to_vec().unwrap();
    for (i, v) in got.iter().enumerate() {
        let pos = (i / 32) % 5;
        assert_eq!(*v, if pos == 0 { 0.5 } else { orig[i] });
    }
}

#[test]
fn custom_hooks_read_and_write() {
    let device = device();
    let f = load("relu-tied", &device);
    let input = f.input(3, &device);
    let mut seen = Vec::new();
    // Not a residual stream: the final RMS norm would cancel a uniform scaling of it.
    let point: HookPoint = "decoder.blocks.2.hook_mlp_out".parse().unwrap();
    let plain = values3(&f.model.forward(&input, &mut Hooks::none()).unwrap());
    {
        let mut hooks = Hooks::none().with(
            point,
            Intervention::Custom(Box::new(|p, a| {
                seen.push(p.to_string());
                Ok(match a {
                    Activation::Rank3(t) => Activation::Rank3(t * 2.0),
                    other => other,
                })
            })),
        );
        let doubled = values3(&f.model.forward(&input, &mut hooks).unwrap());
        assert!(max_diff(&doubled, &plain) > 1e-3);
    }
    assert_eq!(seen, vec!["decoder.blocks.2.hook_mlp_out".to_string()]);
    // A hook that returns the wrong shape is an error naming the point.
    let mut hooks = Hooks::none().with(
        point,
        Intervention::Custom(Box::new(|_, a| {
            Ok(match a {
                Activation::Rank3(t) => Activation::Rank3(t.slice([0..1, 0..1, 0..32])),
                other => other,
            })
        })),
    );
    let err = f.model.forward(&input, &mut hooks).unwrap_err().to_string();
    assert!(err.contains("decoder.blocks.2.hook_mlp_out"), "{err}");
    // Hooks on layers the model does not have are refused before running.
    let bad: HookPoint = "decoder.blocks.7.hook_mlp_out".parse().unwrap();
    let mut hooks = Hooks::none().with(bad, Intervention::Zero(Selection::all()));
    assert!(matches!(
        f.model.forward(&input, &mut hooks),
        Err(ModelError::UnknownHook { .. })
    ));
}

#[test]
fn save_and_reload_round_trip() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let dir = tempfile::tempdir().unwrap();
        f.model.save_pretrained(dir.path()).unwrap();
        let back = T5Model::from_pretrained(dir.path(), &device).unwrap();
        assert_eq!(back.config.tied_head(), f.model.config.tied_head());
        let input = f.input(4, &device);
        let a = values3(&f.model.forward(&input, &mut Hooks::none()).unwrap());
        let b = values3(&back.forward(&input, &mut Hooks::none()).unwrap());
        assert_eq!(max_diff(&a, &b), 0.0, "{name}");
        let saved = WeightFile::read_safetensors(&dir.path().join("model.safetensors")).unwrap();
        let original =
            WeightFile::read_safetensors(&fixtures().join(name).join("model.safetensors")).unwrap();
        for n in saved.names() {
            let o = original
                .get(&n)
                .unwrap_or_else(|| panic!("{name}: saved `{n}` is not a Hugging Face name"));
            assert_eq!(o, saved.get(&n).unwrap(), "{name}: `{n}`");
        }
    }
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let device = device();
    // A tensor missing from the weights.
    let dir = copy_fixture("relu-tied");
    let w = WeightFile::read_safetensors(&dir.path().join("model.safetensors")).unwrap();
    let mut kept = std::collections::BTreeMap::new();
    for n in w
        .names()
        .into_iter()
        .filter(|n| n != "decoder.block.1.layer.1.EncDecAttention.k.weight")
    {
        kept.insert(n.clone(), w.get(&n).unwrap().clone());
    }
    genir_model::weights::write_safetensors(&dir.path().join("model.safetensors"), &kept, None)
        .unwrap();
    let err = T5Model::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decoder.block.1.layer.1.EncDecAttention.k.weight") && err.contains("missing"),
        "{err}"
    );

    // A config that disagrees with the tensor shapes.
    let dir = copy_fixture("relu-tied");
    let cfg = std::fs::read_to_string(dir.path().join("config.json"))
        .unwrap()
        .replace("\"d_ff\": 64", "\"d_ff\": 48");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let err = T5Model::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("DenseReluDense.wi.weight")
            && err.contains("[64, 32]")
            && err.contains("[48, 32]"),
        "{err}"
    );

    // A truncated weights file.
    let dir = copy_fixture("relu-tied");
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = T5Model::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("corrupt"),
        "{err}"
    );

    // Malformed config.json.
    let dir = copy_fixture("relu-tied");
    std::fs::write(dir.path().join("config.json"), "{\"d_model\": 32,").unwrap();
    let err = T5Model::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("invalid config"),
        "{err}"
    );

    // No weights at all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("relu-tied/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = T5Model::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // A tokenizer that does not fit the vocabulary.
    let err = TextTokenizer::from_file(&fixtures().join("relu-tied/tokenizer.json"), 100)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("does not belong"),
        "{err}"
    );

    // A post-processor whose special token is outside the vocabulary (every encode would index past the table).
    let dir = copy_fixture("relu-tied");
    let p = dir.path().join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    t["post_processor"]["special_tokens"]["</s>"]["ids"] = serde_json::json!([99999]);
    std::fs::write(&p, t.to_string()).unwrap();
    let err = TextTokenizer::from_file(&p, 312).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("99999"),
        "{err}"
    );

    // config.json: an end-of-sequence id outside the vocabulary
    let dir = copy_fixture("relu-tied");
    let p = dir.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    c["eos_token_id"] = serde_json::json!(312);
    std::fs::write(&p, c.to_string()).unwrap();
    let err = T5Model::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("eos_token_id"),
        "{err}"
    );
}

#[test]
fn relative_position_buckets_match_transformers() {
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("buckets.json")).unwrap())
            .unwrap();
    let rel: Vec<i64> = serde_json::from_value(table["relative"].clone()).unwrap();
    for (key, bidi, nb, md) in [
        ("bidirectional_32_128", true, 32, 128),
        ("causal_32_128", false, 32, 128),
        ("bidirectional_16_20", true, 16, 20),
        ("causal_16_20", false, 16, 20),
    ] {
        let want: Vec<usize> = serde_json::from_value(table[key].clone()).unwrap();
        let got: Vec<usize> = rel
            .iter()
            .map(|&r| relative_position_bucket(r, bidi, nb, md))
            .collect();
        assert_eq!(got, want, "{key}");
    }
}

#[test]
fn padded_decoder_rows_do_not_leak_into_real_positions() {
    // Rows of different decoder lengths, right-padded with a mask: every real position's logits equal those of
    // the row run alone at its own length.
    let device = device();
    let f = load("gated-untied", &device);
    let input = f.input(6, &device);
    let enc = f.model.encode_input(&input, &mut Hooks::none()).unwrap();
    let lens = [6usize, 3, 1];
    let mask: Vec<i64> = lens
        .iter()
        .flat_map(|&l| (0..6).map(move |i| i64::from(i < l)))
        .collect();
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, [3, 6]), &device);
    let padded = f
        .model
        .decode(
            &enc,
            input.attention_mask.clone(),
            input.decoder_input_ids.clone(),
            Some(mask),
            &mut Hooks::none(),
        )
        .unwrap();
    let v = f.model.config.vocab_size;
    let padded = values3(&padded);
    for (row, &len) in lens.iter().enumerate() {
        let alone = values3(
            &f.model
                .forward(&f.input(len, &device), &mut Hooks::none())
                .unwrap(),
        );
        let got = &padded[row * 6 * v..(row * 6 + len) * v];
        let want = &alone[row * len * v..(row + 1) * len * v];
        assert!(max_diff(got, want) < TOL, "row {row}");
    }
}

#[test]
fn decoding_from_cached_cross_attention_keys_equals_decoding_from_the_encoder_output() {
    let device = device();
    for name in VARIANTS {
        let f = load(name, &device);
        let input = f.input(5, &device);
        let (_, cache) = f.model.run_with_cache(&input, HookFilter::all()).unwrap();
        let rank3 = |p: HookPoint| match cache.require(&p).unwrap() {
            Activation::Rank3(t) => t.clone(),
            Activation::Rank4(_) => panic!("{p} is not [batch, pos, d]"),
        };
        let want = values3(&rank3(HookPoint::final_norm(Stack::Decoder)));
        let enc = f
            .model
            .encode(
                input.input_ids.clone(),
                input.attention_mask.clone(),
                &mut Hooks::none(),
            )
            .unwrap();
        let enc_bias = f.model.encoder_bias(input.attention_mask.clone());
        let self_bias = f.model.decoder_self_bias(5, &device).unwrap();
        let kv = f.model.cross_kv(&enc);
        let (_, layers) = f.model.depth();
        for start in 0..layers {
            let x = rank3(HookPoint::block(Stack::Decoder, start, Site::ResidPre));
            let from_kv = |pairs: &[KvPair]| {
                f.model.decode_from_kv(
                    x.clone(),
                    start,
                    self_bias.clone(),
                    pairs,
                    enc_bias.clone(),
                    &mut Hooks::none(),
                )
            };
            let from_enc = f
                .model
                .decode_from(
                    x.clone(),
                    start,
                    self_bias.clone(),
                    &enc,
                    enc_bias.clone(),
                    &mut Hooks::none(),
                )
                .unwrap();
            assert!(
                max_diff(&want, &values3(&from_enc)) < 1e-5,
                "{name} {start}"
            );
            // Layers below `start` are not run, so their keys/values may be missing.
            let mut partial = kv.clone();
            for pair in &mut partial[..start] {
                *pair = Default::default();
            }
            let got = from_kv(&partial).unwrap();
            assert!(max_diff(&want, &values3(&got)) < 1e-5, "{name} {start}");
            // A layer that runs without its keys/values is an error naming its hook point.
            let mut missing = kv.clone();
            missing[layers - 1] = Default::default();
            let err = from_kv(&missing).unwrap_err().to_string();
            let at = format!("decoder.blocks.{}.cross_attn", layers - 1);
            assert!(err.contains(&at) && err.contains("cache"), "{err}");
            // So are keys/values of another batch in a layer that runs.
            let mut doubled = kv.clone();
            let v = doubled[layers - 1].v.clone().unwrap();
            doubled[layers - 1].v = Some(Tensor::cat(vec![v.clone(), v], 0));
            let err = from_kv(&doubled).unwrap_err().to_string();
            assert!(
                err.contains(&format!("layer {}", layers - 1)) && err.contains("batch"),
                "{err}"
            );
        }
    }
}

/// The real flan-t5-small folder of `tools/models/install_reference_models.sh` (`GENIR_FLAN_T5_DIR` overrides).
fn flan_t5_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [
        std::env::var("GENIR_FLAN_T5_DIR").ok().map(PathBuf::from),
        Some(root.join("models/flan-t5-small-traceforge")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("model.safetensors").exists())
}

/// Real weights: a flan-t5-small (8 + 8 layers, d_model 512, gated GELU, untied LM head, 32,128 ids) against
/// Hugging Face on three sources and the model's own greedy continuations (fixture from
/// `tools/reference/make_flan_t5_fixture.py`): token ids exactly; the encoder's output at the first three
/// positions within 1e-4; at every decoder position the greedy token, the log-sum-exp of the 32,128 logits and
/// 24 chosen logits (the 12 largest and 12 fixed ids) within 5e-4 (logits reach about 50 in magnitude; measured
/// 7e-5 on flex and on wgpu/lavapipe, 1e-5 for the log-sum-exp).
#[test]
fn real_flan_t5_small_matches_hugging_face() {
    let Some(dir) = flan_t5_dir() else {
        println!(
            "SKIP real_flan_t5_small_matches_hugging_face: no models/flan-t5-small-traceforge (run \
             tools/models/install_reference_models.sh, or set GENIR_FLAN_T5_DIR)"
        );
        return;
    };
    let device = device();
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("flan-t5-small-traceforge.json")).unwrap(),
    )
    .unwrap();
    let rows = fx["rows"].as_array().unwrap();
    let model = T5Model::from_pretrained(&dir, &device).unwrap();
    assert_eq!(
        (model.encoder.blocks.len(), model.decoder.blocks.len()),
        (8, 8)
    );
    assert!(model.config.gated(), "gated-gelu feed-forward");
    let tok =
        TextTokenizer::from_file(&dir.join("tokenizer.json"), model.config.vocab_size).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> { serde_json::from_value(v.clone()).unwrap() };
    let sources: Vec<Vec<u32>> = rows.iter().map(|r| ids(&r["input_ids"])).collect();
    for (r, want) in rows.iter().zip(&sources) {
        let got = tok.encode(r["source"].as_str().unwrap()).unwrap();
        assert_eq!(&got, want, "token ids of {}", r["source"]);
    }
    let decoder: Vec<Vec<u32>> = rows.iter().map(|r| ids(&r["decoder_input_ids"])).collect();
    let input = Seq2SeqInput::from_ids(&sources, &decoder, 0, &device).unwrap();
    let enc_point = HookPoint::final_norm(Stack::Encoder);
    let mut hooks = Hooks::caching(HookFilter::points(&[enc_point]));
    let logits = model.forward(&input, &mut hooks).unwrap();
    let [b, t, v] = logits.dims();
    assert_eq!((b, t, v), (rows.len(), decoder[0].len(), 32128));
    let logits = values3(&logits);
    let cache = hooks.take_cache();
    let enc = cache.get(&enc_point).expect("encoder output cached");
    let [_, s, d] = [enc.dims()[0], enc.dims()[1], enc.dims()[2]];
    let enc = enc.to_vec().unwrap();
    let (mut worst_enc, mut worst_logit, mut worst_lse) = (0.0f32, 0.0f32, 0.0f64);
    for (i, r) in rows.iter().enumerate() {
        let want: Vec<Vec<f32>> = serde_json::from_value(r["encoder_first3"].clone()).unwrap();
        for (p, w) in want.iter().enumerate() {
            let at = (i * s + p) * d;
            worst_enc = worst_enc.max(max_diff(&enc[at..at + d], w));
        }
        for (p, pos) in r["positions"].as_array().unwrap().iter().enumerate() {
            let row = &logits[(i * t + p) * v..(i * t + p + 1) * v];
            let chosen: Vec<usize> = serde_json::from_value(pos["ids"].clone()).unwrap();
            let want: Vec<f32> = serde_json::from_value(pos["logits"].clone()).unwrap();
            let got: Vec<f32> = chosen.iter().map(|&k| row[k]).collect();
            worst_logit = worst_logit.max(max_diff(&got, &want));
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            worst_lse = worst_lse.max((lse - pos["logsumexp"].as_f64().unwrap()).abs());
            let argmax = (0..v).max_by(|&a, &c| row[a].total_cmp(&row[c])).unwrap();
            assert_eq!(
                argmax as u64,
                pos["argmax"].as_u64().unwrap(),
                "row {i} position {p}: greedy token"
            );
        }
    }
    eprintln!(
        "flan-t5-small: encoder max abs diff {worst_enc:.2e}, logits {worst_logit:.2e}, log-sum-exp \
         {worst_lse:.2e}"
    );
    assert!(worst_enc < 1e-4, "encoder output differs by {worst_enc}");
    assert!(worst_logit < 5e-4, "logits differ by {worst_logit}");
    assert!(worst_lse < 5e-4, "log-sum-exp differs by {worst_lse}");
}
