//! genir-mechir against MechIR 0.2.0 (fixtures from tools/reference/make_mechir_fixtures.py) and against the
//! unbatched, one-cell-at-a-time reference sweep.

mod common;

use common::*;
use genir_mechir::{
    sweep_blocks, sweep_heads, Alignment, EncodeConfig, Pair, PairDataset, PairPerturbation,
    PatchConfig, PatchModel,
};
use genir_model::bert::{Cat, Dot};
use serde_json::Value;

struct Fixture {
    json: Value,
    pairs: PairDataset,
    config: PatchConfig,
}

fn load_fixture(name: &str) -> Fixture {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let raw: Vec<(String, String, String)> = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["query"].as_str().unwrap().to_string(),
                p["document"].as_str().unwrap().to_string(),
                p["perturbed"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // genir's TFC1 makes the same perturbed documents as the fixture's.
    let qd: Vec<(&str, &str)> = raw.iter().map(|p| (p.0.as_str(), p.1.as_str())).collect();
    let pairs = PairDataset::perturb(&qd, PairPerturbation::tfc1());
    for (p, r) in pairs.pairs.iter().zip(&raw) {
        assert_eq!(p.perturbed, r.2);
    }
    let config = PatchConfig {
        encode: EncodeConfig {
            query_max_length: json["query_max_length"].as_u64().unwrap() as usize,
            doc_max_length: json["doc_max_length"].as_u64().unwrap() as usize,
            filler: json["filler"].as_str().unwrap().into(),
            pad_to_max_length: true,
        },
        ..PatchConfig::default()
    };
    Fixture {
        json,
        pairs,
        config,
    }
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a number array"),
    }
}

/// Scores agree within `tol`; patching metrics within `tol`, relative where the reference exceeds 1 in
/// magnitude ([`max_metric_diff`]).
fn check_against_mechir<M: PatchModel>(model: &M, fx: &Fixture, tol: f32) {
    // Inputs: the same token ids as MechIR's collator (up to its max_length padding).
    let enc = model
        .encode(&fx.pairs.pairs, Alignment::Append, &fx.config.encode)
        .unwrap();
    for (key, input) in [
        ("input_ids", &enc.original),
        ("perturbed_input_ids", &enc.perturbed),
    ] {
        let ids = input
            .input_ids
            .to_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let [b, s] = input.dims();
        for r in 0..b {
            let want: Vec<i64> = fx.json[key][r]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(&ids[r * s..(r + 1) * s], &want[..s], "{key} row {r}");
            assert!(
                want[s..].iter().all(|&x| x == 0),
                "{key} row {r}: longer than genir's"
            );
        }
    }

    let blocks = sweep_blocks(model, &fx.pairs, &fx.config).unwrap();
    let (d, i) = max_diff(&blocks.scores.original, &flat(&fx.json["scores"]));
    assert!(d < tol, "original scores differ by {d} at {i}");
    let (d, i) = max_diff(
        &blocks.scores.perturbed,
        &flat(&fx.json["scores_perturbed"]),
    );
    assert!(d < tol, "perturbed scores differ by {d} at {i}");
    let want = flat(&fx.json["block_all"]);
    let (d, i) = max_metric_diff(&blocks.values, &want);
    println!(
        "block_all: {} cells, max |genir - MechIR| / max(1, |MechIR|) = {d:e}",
        want.len()
    );
    assert!(
        d < tol,
        "block_all differs by {d} at {i}: {} vs {}",
        blocks.values[i],
        want[i]
    );

    let heads = sweep_heads(model, &fx.pairs, None, &fx.config).unwrap();
    let want = flat(&fx.json["head_all"]);
    let (d, i) = max_metric_diff(&heads.values, &want);
    println!(
        "head_all: {} cells, max |genir - MechIR| / max(1, |MechIR|) = {d:e}",
        want.len()
    );
    assert!(d < tol, "head_all differs by {d} at {i}");

    let len = blocks.positions;
    let positions: Vec<usize> = (0..len).collect();
    let by_pos = sweep_heads(model, &fx.pairs, Some(&positions), &fx.config).unwrap();
    let list = fx.json["head_by_pos_heads"].as_array().unwrap();
    let want = flat(&fx.json["head_by_pos_z"]);
    let mut got = Vec::new();
    for lh in list {
        let (l, h) = (
            lh[0].as_u64().unwrap() as usize,
            lh[1].as_u64().unwrap() as usize,
        );
        for p in 0..len {
            got.push(by_pos.get(l, h, p));
        }
    }
    let (d, i) = max_metric_diff(&got, &want);
    println!(
        "head_by_pos (z): {} cells, max |genir - MechIR| / max(1, |MechIR|) = {d:e}",
        want.len()
    );
    assert!(d < tol, "head_by_pos differs by {d} at {i}");
}

#[test]
fn tiny_cross_encoder_matches_mechir() {
    let cat = Cat::from_pretrained(&model_fixture("bert-cat"), &device()).unwrap();
    let fx = load_fixture("mechir_cat_tiny.json");
    check_against_mechir(&cat, &fx, 1e-5);
}

#[test]
fn all_minilm_l6_v2_bi_encoder_matches_mechir() {
    let Some(dir) = minilm_dir() else {
        println!(
            "SKIP all_minilm_l6_v2_bi_encoder_matches_mechir: no all-MiniLM-L6-v2 (set GENIR_MINILM_DIR, or \
             run tools/models/install_reference_models.sh)"
        );
        return;
    };
    let dot = Dot::from_pretrained(&dir, &device()).unwrap();
    let fx = load_fixture("mechir_dot_minilm.json");
    check_against_mechir(&dot, &fx, 1e-4);
}

/// Pairs of different lengths (padding inside the batch) and several perturbations.
fn mixed_pairs(alignment_case: usize) -> PairDataset {
    let qd = [
        ("cat food", "the cat sat on the mat"),
        (
            "river flood",
            "rain made the river rise over the old stone bridge",
        ),
        ("chess", "a chess opening"),
    ];
    match alignment_case {
        0 => PairDataset::perturb(&qd, PairPerturbation::tfc1()),
        1 => PairDataset::perturb(&qd, PairPerturbation::replace_query_terms("dog")),
        _ => PairDataset::from_pairs(
            vec![
                Pair::new("cat", "the cat sat", "the cat sat down"),
                Pair::new("sun", "sun and rain", "sun and heavy rain"),
            ],
            Alignment::Insert,
        ),
    }
}

fn batched_equals_unbatched<M: PatchModel>(model: &M) {
    let encode = EncodeConfig {
        query_max_length: 8,
        doc_max_length: 24,
        ..EncodeConfig::default()
    };
    for case in 0..3 {
        let pairs = mixed_pairs(case);
        let (want, positions) = unbatched_blocks(model, &pairs, &encode);
        // Small passes (several chunks per group), and one pass per group; skipping on and off.
        for (budget, skip) in [(37, true), (1 << 20, false), (200, true)] {
            let config = PatchConfig {
                encode: encode.clone(),
                token_budget: budget,
                skip_no_ops: skip,
                ..PatchConfig::default()
            };
            let got = sweep_blocks(model, &pairs, &config).unwrap();
            assert_eq!(got.positions, positions);
            let (d, i) = max_diff(&got.values, &want);
            assert!(
                d < 1e-5,
                "{} case {case} budget {budget}: blocks differ by {d} at {i}",
                model.kind()
            );
            let heads = sweep_heads(model, &pairs, None, &config).unwrap();
            let want_h = unbatched_heads(model, &pairs, &encode, None);
            let (d, i) = max_diff(&heads.values, &want_h);
            assert!(
                d < 1e-5,
                "{} case {case}: heads differ by {d} at {i}",
                model.kind()
            );
            let ps = [0, 2, 5, positions - 1, positions + 3];
            let by_pos = sweep_heads(model, &pairs, Some(&ps), &config).unwrap();
            let want_p = unbatched_heads(model, &pairs, &encode, Some(&ps));
            let (d, i) = max_diff(&by_pos.values, &want_p);
            assert!(
                d < 1e-5,
                "{} case {case}: heads by position differ by {d} at {i}",
                model.kind()
            );
        }
    }
}

#[test]
fn batched_sweeps_equal_the_unbatched_reference_cat() {
    let cat = Cat::from_pretrained(&model_fixture("bert-cat"), &device()).unwrap();
    batched_equals_unbatched(&cat);
}

#[test]
fn batched_sweeps_equal_the_unbatched_reference_dot() {
    let dot = Dot::from_pretrained(&model_fixture("bert-dot-bin"), &device()).unwrap();
    batched_equals_unbatched(&dot);
}

#[test]
fn pair_batches_average_over_all_pairs() {
    // Splitting pairs into batches changes nothing but the padding: with every batch padded to the
    // maximum length, the sweep over batches of 1 equals the sweep over one batch.
    let cat = Cat::from_pretrained(&model_fixture("bert-cat"), &device()).unwrap();
    let pairs = mixed_pairs(0);
    let encode = EncodeConfig {
        query_max_length: 8,
        doc_max_length: 24,
        pad_to_max_length: true,
        ..EncodeConfig::default()
    };
    let one = PatchConfig {
        encode: encode.clone(),
        ..PatchConfig::default()
    };
    let many = PatchConfig {
        encode,
        pair_batch: 1,
        ..PatchConfig::default()
    };
    let a = sweep_blocks(&cat, &pairs, &one).unwrap();
    let b = sweep_blocks(&cat, &pairs, &many).unwrap();
    assert_eq!(a.positions, 32);
    let (d, _) = max_diff(&a.values, &b.values);
    assert!(d < 1e-5, "{d}");
}

/// A model folder's tokenizer usually truncates (all-MiniLM-L6-v2 at 256 tokens): documents are aligned whole,
/// as MechIR's `tokenizer.tokenize` does, and cut to length only afterwards. Before, both sides of a long pair
/// were cut first, so an appended term vanished and a deletion shifted every later position.
#[test]
fn documents_are_aligned_before_they_are_cut() {
    use genir_mechir::align::{align_texts, tokenize};
    use genir_model::tokenizer::TextTokenizer;
    let path = model_fixture("bert-dot-bin").join("tokenizer.json");
    let tok = TextTokenizer::from_file(&path, usize::MAX)
        .unwrap()
        .with_max_length(Some(6))
        .unwrap();
    let doc = "the base of the integer is given by the string and the number is returned";
    let whole = tokenize(&tok, doc).unwrap();
    assert!(whole.len() > 6, "{whole:?}");
    let (a, b) = align_texts(&tok, doc, &format!("{doc} file"), Alignment::Append, "a").unwrap();
    let (ta, tb) = (tokenize(&tok, &a).unwrap(), tokenize(&tok, &b).unwrap());
    assert_eq!(ta.len(), whole.len() + 1, "{ta:?}");
    assert_eq!(tb.len(), ta.len(), "{tb:?}");
    assert_eq!(ta.last().map(String::as_str), Some("a"));
    assert_eq!(tb.last().map(String::as_str), Some("file"));
}
