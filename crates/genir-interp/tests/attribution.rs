//! The fast patching sweep and path patching against naive ones (full forward passes with plain hooks),
//! attribution patching against exact patching, and the stage split, on a tiny model trained in the test.

mod common;

use std::collections::HashMap;

use genir_data::{Column, Table};
use genir_interp::ablation::{ablation_study, AblationConfig, AblationMode};
use genir_interp::attribution::{
    agreement, attribution_patching, attribution_patching_with, EncoderEstimate,
};
use genir_interp::lens::{logit_lens, LensConfig};
use genir_interp::patching::{
    activation_patching, make_pairs, Corruption, PatchConfig, PatchMetric, PatchPair, PatchTarget,
    PATCH_COMPONENTS,
};
use genir_interp::stages::{
    decoder_components, derive_stages, path_patching, sender_receiver_pairs, stage_analysis, Stage,
    StageConfig, StageSplit,
};
use genir_interp::{InterpError, Probe};
use genir_model::hooks::{
    Activation, ActivationCache, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention,
    Selection, Site, Stack,
};
use genir_model::t5::Seq2SeqInput;
use genir_train::bundle::GenirModel;

use common::*;

fn col_f64(df: &Table, name: &str) -> Vec<f64> {
    df.f64s(name).unwrap()
}

fn col_i64(df: &Table, name: &str) -> Vec<i64> {
    df.i64s(name).unwrap()
}

fn col_str(df: &Table, name: &str) -> Vec<String> {
    df.strs(name).unwrap()
}

/// The hook point and selection of a table row (what the naive loop must patch).
fn row_patch(target: &str, layer: i64, comp: &str, head: i64, pos: i64) -> (HookPoint, Selection) {
    let l = layer as usize;
    match target {
        "components" => {
            let site = PATCH_COMPONENTS
                .iter()
                .find(|(n, _)| *n == comp)
                .map(|(_, s)| *s)
                .expect("component name");
            (HookPoint::block(Stack::Decoder, l, site), Selection::all())
        }
        "heads" => {
            let kind = if comp == "self_attn" {
                AttnKind::SelfAttn
            } else {
                AttnKind::CrossAttn
            };
            (
                HookPoint::attn(Stack::Decoder, l, kind, AttnSite::Z),
                Selection::heads(vec![head as usize]),
            )
        }
        "encoder_positions" => (
            HookPoint::final_norm(Stack::Encoder),
            Selection::positions(vec![pos as usize]),
        ),
        "final_norm" => (HookPoint::final_norm(Stack::Decoder), Selection::all()),
        other => panic!("unexpected target {other}"),
    }
}

/// A pair run the naive way: each query encoded on its own (no padding), one full forward per patch.
struct Naive<'a> {
    gm: &'a GenirModel,
    clean: Seq2SeqInput,
    corrupt: Seq2SeqInput,
    cache: ActivationCache,
    clean_tok: usize,
    corrupt_tok: usize,
}

impl<'a> Naive<'a> {
    fn new(gm: &'a GenirModel, pair: &PatchPair) -> Self {
        let device = device();
        let s = gm.searcher().unwrap();
        let ids = s
            .encode_queries(&[pair.clean.clone(), pair.corrupt.clone()])
            .unwrap();
        let start = gm.model.config.decoder_start() as u32;
        let pad = gm.model.config.pad_token_id as u32;
        let input = |i: usize| {
            Seq2SeqInput::from_ids(&[ids[i].clone()], &[vec![start]], pad, &device).unwrap()
        };
        let (clean, corrupt) = (input(0), input(1));
        let (_, cache) = gm.model.run_with_cache(&clean, HookFilter::all()).unwrap();
        let tok = |docid: &str| {
            let d = gm.scheme.require(docid, "").unwrap();
            gm.scheme.target(d)[0] as usize
        };
        Self {
            gm,
            clean_tok: tok(&pair.clean_docid),
            corrupt_tok: tok(pair.corrupt_docid.as_deref().unwrap()),
            clean,
            corrupt,
            cache,
        }
    }

    fn same_length(&self) -> bool {
        self.clean.input_ids.dims() == self.corrupt.input_ids.dims()
    }

    fn metric(&self, hooks: &mut Hooks<'_>) -> f64 {
        let logits = self.gm.model.forward(&self.corrupt, hooks).unwrap();
        let v: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
        f64::from(v[self.clean_tok]) - f64::from(v[self.corrupt_tok])
    }

    /// The metric with the encoder output at `pos` replaced by the clean run's at `pos`, for queries of any
    /// lengths (the patch source is the corrupted run's encoder output with that one row replaced).
    fn patched_encoder_position(&self, pos: usize) -> f64 {
        let point = HookPoint::final_norm(Stack::Encoder);
        let (_, base) = self
            .gm
            .model
            .run_with_cache(&self.corrupt, HookFilter::points(&[point]))
            .unwrap();
        let (clean, base) = (
            self.cache.require(&point).unwrap().rank3(&point).unwrap(),
            base.require(&point).unwrap().rank3(&point).unwrap(),
        );
        let [_, n_clean, d] = clean.dims();
        let [_, n_base, _] = base.dims();
        assert!(
            pos < n_clean.min(n_base),
            "position {pos} is not in both queries"
        );
        let row = clean.slice([0..1, pos..pos + 1, 0..d]);
        let source = base.slice_assign([0..1, pos..pos + 1, 0..d], row);
        let mut hooks = Hooks::none().with(
            point,
            Intervention::Patch {
                source: Activation::Rank3(source),
                selection: Selection::positions(vec![pos]),
            },
        );
        self.metric(&mut hooks)
    }

    fn patched(&self, point: HookPoint, sel: Selection) -> f64 {
        let mut hooks = Hooks::none().patch_from(&self.cache, point, sel).unwrap();
        self.metric(&mut hooks)
    }

    /// The metric with `a_base + eps (a_clean - a_base)` at the selected slice of `point`.
    fn scaled(&self, point: HookPoint, sel: &Selection, eps: f32) -> f64 {
        let (_, base) = self
            .gm
            .model
            .run_with_cache(&self.corrupt, HookFilter::points(&[point]))
            .unwrap();
        let source = match (
            base.require(&point).unwrap(),
            self.cache.require(&point).unwrap(),
        ) {
            (Activation::Rank3(b), Activation::Rank3(c)) => {
                Activation::Rank3(b.clone() + (c.clone() - b.clone()) * eps)
            }
            (Activation::Rank4(b), Activation::Rank4(c)) => {
                Activation::Rank4(b.clone() + (c.clone() - b.clone()) * eps)
            }
            _ => panic!("rank mismatch"),
        };
        let mut hooks = Hooks::none();
        hooks.add(
            point,
            Intervention::Patch {
                source,
                selection: sel.clone(),
            },
        );
        self.metric(&mut hooks)
    }
}

fn pairs() -> Vec<PatchPair> {
    let probes = Probe::from_query_set(&train_set());
    let mut pairs = make_pairs(&probes[..4], &Corruption::OtherQuery { seed: 11 }).unwrap();
    // the same words in reverse order: both queries have the same length, so every encoder position
    // has a counterpart in the naive run
    let reversed: Vec<&str> = probes[5].text.split_whitespace().rev().collect();
    pairs.push(PatchPair::new(
        "reversed",
        &probes[5].text,
        &probes[5].docid,
        reversed.join(" "),
        Some(probes[6].docid.clone()),
    ));
    pairs
}

fn all_targets() -> PatchConfig {
    PatchConfig {
        metric: PatchMetric::LogitDiff,
        targets: vec![
            PatchTarget::Components,
            PatchTarget::Heads,
            PatchTarget::EncoderPositions,
            PatchTarget::FinalNorm,
        ],
        batch_size: 7,
        ..PatchConfig::default()
    }
}

/// Every cell of the reusing, batched sweep (resume at the patched layer, shared cross-attention keys and
/// values, restricted head) equals a full forward pass with the same patch through plain hooks.
#[test]
fn the_sweep_equals_a_full_forward_per_patch() {
    let gm = atomic();
    let pairs = pairs();
    let df = activation_patching(&gm, &pairs, &all_targets()).unwrap();
    let (qid, target, comp) = (
        col_str(&df, "qid"),
        col_str(&df, "target"),
        col_str(&df, "component"),
    );
    let (layer, head, pos) = (
        col_i64(&df, "layer"),
        col_i64(&df, "head"),
        col_i64(&df, "position"),
    );
    let raw = col_f64(&df, "raw");
    let naive: HashMap<String, Naive> = pairs
        .iter()
        .map(|p| (p.qid.clone(), Naive::new(&gm, p)))
        .collect();
    let mut checked = HashMap::<String, usize>::new();
    let mut unequal = HashMap::<String, usize>::new();
    for i in 0..df.height() {
        let n = &naive[&qid[i]];
        let expected = if target[i] == "none" {
            n.metric(&mut Hooks::none())
        } else {
            if target[i] == "encoder_positions" {
                // queries of different lengths too: only the positions both have are patched
                *unequal.entry(qid[i].clone()).or_default() += usize::from(!n.same_length());
                n.patched_encoder_position(pos[i] as usize)
            } else {
                let (p, s) = row_patch(&target[i], layer[i], &comp[i], head[i], pos[i]);
                n.patched(p, s)
            }
        };
        assert!(
            (raw[i] - expected).abs() < 1e-4 * (1.0 + expected.abs()),
            "{} {} layer {} {} head {} pos {}: sweep {} vs naive {}",
            qid[i],
            target[i],
            layer[i],
            comp[i],
            head[i],
            pos[i],
            raw[i],
            expected
        );
        *checked.entry(target[i].clone()).or_default() += 1;
    }
    for t in [
        "none",
        "components",
        "heads",
        "encoder_positions",
        "final_norm",
    ] {
        assert!(
            checked.get(t).copied().unwrap_or(0) > 0,
            "no {t} row checked"
        );
    }
    // pairs of different lengths were checked, each at exactly the positions both queries have
    assert!(
        unequal.values().any(|&n| n > 0),
        "no pair of different lengths"
    );
    for p in &pairs {
        let n = &naive[&p.qid];
        let shared = n.clean.input_ids.dims()[1].min(n.corrupt.input_ids.dims()[1]);
        let rows = (0..df.height())
            .filter(|&i| qid[i] == p.qid && target[i] == "encoder_positions")
            .count();
        assert_eq!(rows, shared, "{}: encoder positions", p.qid);
    }
}

/// Attribution patching is exact where the metric is linear in the patched activation (the decoder's final
/// norm output feeds only the LM head), and elsewhere equals the derivative of exact patching along the
/// clean-minus-corrupted direction (a central finite difference of the naive patched run).
#[test]
fn attribution_is_exact_on_a_linear_path_and_first_order_elsewhere() {
    let gm = atomic();
    let pairs = pairs();
    let cfg = all_targets();
    let exact = activation_patching(&gm, &pairs, &cfg).unwrap();
    // the plain gradient estimate everywhere (the QK fix of encoder positions is checked below)
    let attr = attribution_patching_with(&gm, &pairs, &cfg, EncoderEstimate::Gradient).unwrap();
    assert_eq!(exact.height(), attr.height());
    let (target, qid, comp) = (
        col_str(&attr, "target"),
        col_str(&attr, "qid"),
        col_str(&attr, "component"),
    );
    let (layer, head, pos) = (
        col_i64(&attr, "layer"),
        col_i64(&attr, "head"),
        col_i64(&attr, "position"),
    );
    let (va, ve) = (col_f64(&attr, "value"), col_f64(&exact, "value"));
    let (raw, corrupt) = (col_f64(&attr, "raw"), col_f64(&attr, "corrupt"));
    let exact_raw = col_f64(&exact, "raw");
    let (mut linear, mut normalised) = (0, 0);
    for i in 0..attr.height() {
        if !va[i].is_finite() {
            continue;
        }
        match target[i].as_str() {
            "none" => assert!(va[i].abs() < 1e-9),
            "final_norm" => {
                // the attributed logit difference is the exactly patched one, to f32 rounding of logits
                assert!(
                    (raw[i] - exact_raw[i]).abs() < 1e-4 * exact_raw[i].abs().max(1.0),
                    "final norm: attributed logit difference {} exact {}",
                    raw[i],
                    exact_raw[i]
                );
                // and so the normalised value is 1, where the clean and corrupted runs differ enough for
                // the normalisation not to magnify that rounding (a gap of 1e-3 turns 1e-6 into 1e-3)
                if (exact_raw[i] - corrupt[i]).abs() > 0.05 {
                    normalised += 1;
                    assert!(
                        (va[i] - ve[i]).abs() < 1e-4 && (va[i] - 1.0).abs() < 1e-4,
                        "final norm: attribution {} exact {}",
                        va[i],
                        ve[i]
                    );
                }
                linear += 1;
            }
            _ => {}
        }
    }
    assert_eq!(linear, pairs.len());
    assert!(normalised > 0, "no pair's clean-corrupt gap exceeds 0.05");

    // finite differences on the first pair, every component and head and a few encoder positions
    let n = Naive::new(&gm, &pairs[0]);
    let eps = 1e-2f32;
    let mut fd_checked = 0;
    for i in 0..attr.height() {
        if qid[i] != pairs[0].qid || target[i] == "none" || target[i] == "final_norm" {
            continue;
        }
        if target[i] == "encoder_positions" && (!n.same_length() || pos[i] > 2) {
            continue;
        }
        let (p, s) = row_patch(&target[i], layer[i], &comp[i], head[i], pos[i]);
        let fd = (n.scaled(p, &s, eps) - n.scaled(p, &s, -eps)) / (2.0 * f64::from(eps));
        let grad_dot = raw[i] - corrupt[i];
        assert!(
            (fd - grad_dot).abs() < 2e-2 * (1.0 + grad_dot.abs()),
            "{} layer {} {} head {}: finite difference {fd} vs attribution {grad_dot}",
            target[i],
            layer[i],
            comp[i],
            head[i]
        );
        fd_checked += 1;
    }
    assert!(fd_checked >= 10, "{fd_checked}");

    // the agreement table: one row per target plus "all"
    let ag = agreement(&exact, &attr).unwrap();
    let t = col_str(&ag, "target");
    for want in [
        "all",
        "components",
        "heads",
        "encoder_positions",
        "final_norm",
    ] {
        assert!(t.iter().any(|x| x == want), "{want} missing from {t:?}");
    }
    let r = col_f64(&ag, "pearson");
    let nrows = col_i64(&ag, "n");
    for (k, x) in r.iter().enumerate() {
        assert!(nrows[k] > 0);
        assert!(x.is_nan() || (-1.0 - 1e-9..=1.0 + 1e-9).contains(x));
    }
    println!("{ag}");
}

/// The gradients of the metric at every decoder cross-attention's pattern and values on `input`'s decoder
/// over the encoder output `enc` (`[1, h, t, s]` and `[1, s, h, dk]`, with the activations themselves).
type Grads = Vec<(HookPoint, Vec<f32>, Vec<f32>)>;

fn cross_attention_grads(n: &Naive<'_>, enc: &burn::prelude::Tensor<3>) -> Grads {
    use burn::prelude::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    let model = &n.gm.model;
    let layers = model.decoder.blocks.len();
    let leaves: Rc<RefCell<Vec<(HookPoint, Activation, Tensor<4>)>>> = Default::default();
    let mut hooks = Hooks::none();
    for l in 0..layers {
        for site in [AttnSite::Pattern, AttnSite::V] {
            let leaves = leaves.clone();
            hooks.add(
                HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, site),
                Intervention::Custom(Box::new(move |point, x| {
                    let Activation::Rank4(x) = x else {
                        panic!("rank")
                    };
                    let z = Tensor::<4>::zeros(x.dims(), &x.device())
                        .autodiff()
                        .require_grad();
                    leaves
                        .borrow_mut()
                        .push((*point, Activation::Rank4(x.clone()), z.clone()));
                    Ok(Activation::Rank4(x + z))
                })),
            );
        }
    }
    let h = model
        .decode_hidden(
            &enc.clone().autodiff(),
            n.corrupt.attention_mask.clone(),
            n.corrupt.decoder_input_ids.clone(),
            None,
            &mut hooks,
        )
        .unwrap();
    drop(hooks);
    let logits = model.lm_logits(h);
    let [_, t, v] = logits.dims();
    let last = logits.slice([0..1, t - 1..t, 0..v]).reshape([1, v]);
    let (c, x) = (n.clean_tok, n.corrupt_tok);
    let m = (last.clone().slice([0..1, c..c + 1]) - last.slice([0..1, x..x + 1])).sum();
    let grads = m.backward();
    let host4 =
        |t: Tensor<4>| -> Vec<f32> { t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap() };
    let out = leaves
        .borrow()
        .iter()
        .map(|(p, a, z)| {
            let Activation::Rank4(a) = a else { panic!() };
            (*p, host4(a.clone()), host4(z.grad(&grads).unwrap()))
        })
        .collect();
    out
}

/// AtP*'s QK fix of encoder positions against a naive computation with public hooks only: for every decoder
/// layer, the cross-attention pattern of the corrupted run with position `p`'s key patched from the clean run
/// (an extra decoder pass per layer and position), the gradients at patterns and values by autodiff, and
/// `Σ_l ∂m/∂A · (A' - A) + ∂m/∂V_p · ΔV_p`.
#[test]
fn the_qk_fix_of_encoder_positions_equals_a_naive_atp_star() {
    qk_fix_equals_naive(&atomic(), false);
    // cross-attention queries scaled up: score gaps beyond ~100, where keys' f32 weights underflow to 0 and
    // patching them still moves the pattern (the fix recomputes the pattern from the scores in f64)
    let mut saturated = atomic();
    for b in saturated.model.decoder.blocks.iter_mut() {
        let a = b.cross_attn.as_mut().unwrap();
        a.q = burn::module::Param::initialized(a.q.id, a.q.val() * 60.0);
    }
    qk_fix_equals_naive(&saturated, true);
}

fn qk_fix_equals_naive(gm: &GenirModel, expect_underflow: bool) {
    let pairs = pairs();
    let cfg = PatchConfig {
        targets: vec![PatchTarget::EncoderPositions],
        ..all_targets()
    };
    let fixed = attribution_patching(gm, &pairs, &cfg).unwrap();
    let plain = attribution_patching_with(gm, &pairs, &cfg, EncoderEstimate::Gradient).unwrap();
    assert_eq!(fixed.height(), plain.height());
    let pair = pairs.iter().find(|p| p.qid == "reversed").unwrap();
    let n = Naive::new(gm, pair);
    assert!(n.same_length());
    let model = &gm.model;
    let layers = model.decoder.blocks.len();
    let encode = |x: &Seq2SeqInput| {
        model
            .encode(
                x.input_ids.clone(),
                x.attention_mask.clone(),
                &mut Hooks::none(),
            )
            .unwrap()
    };
    let (enc_clean, enc_base) = (encode(&n.clean), encode(&n.corrupt));
    let s = enc_base.dims()[1];
    let kv_points: Vec<HookPoint> = (0..layers)
        .flat_map(|l| {
            [AttnSite::K, AttnSite::V]
                .map(|site| HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, site))
        })
        .collect();
    let run = |enc: &burn::prelude::Tensor<3>, mut hooks: Hooks<'_>| {
        model
            .decode_hidden(
                enc,
                n.corrupt.attention_mask.clone(),
                n.corrupt.decoder_input_ids.clone(),
                None,
                &mut hooks,
            )
            .unwrap();
        hooks.take_cache()
    };
    let clean_kv = run(&enc_clean, Hooks::caching(HookFilter::points(&kv_points)));
    let base_kv = run(&enc_base, Hooks::caching(HookFilter::points(&kv_points)));
    let grads = cross_attention_grads(&n, &enc_base);
    let find = |l: usize, site: AttnSite| {
        let p = HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, site);
        grads.iter().find(|(q, _, _)| *q == p).unwrap()
    };
    let mut naive = vec![0f64; s];
    let mut underflowed = 0;
    for l in 0..layers {
        let pat = HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, AttnSite::Pattern);
        let k = HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, AttnSite::K);
        let v = HookPoint::attn(Stack::Decoder, l, AttnKind::CrossAttn, AttnSite::V);
        let (_, a, ga) = find(l, AttnSite::Pattern);
        underflowed += a.iter().filter(|&&x| x == 0.0).count();
        let (_, _, gv) = find(l, AttnSite::V);
        let vc = clean_kv.require(&v).unwrap().to_vec().unwrap();
        let vb = base_kv.require(&v).unwrap().to_vec().unwrap();
        for (p, out) in naive.iter_mut().enumerate() {
            let hooks = Hooks::caching(HookFilter::points(&[pat]))
                .patch_from(&clean_kv, k, Selection::positions(vec![p]))
                .unwrap();
            let a2 = run(&enc_base, hooks)
                .require(&pat)
                .unwrap()
                .to_vec()
                .unwrap();
            *out += (0..a.len())
                .map(|j| f64::from(ga[j]) * (f64::from(a2[j]) - f64::from(a[j])))
                .sum::<f64>();
            let row = vc.len() / s; // values [1, s, h, dk]: one row per position
            *out += (p * row..(p + 1) * row)
                .map(|j| f64::from(gv[j]) * f64::from(vc[j] - vb[j]))
                .sum::<f64>();
        }
    }
    let (qid, target, pos) = (
        col_str(&fixed, "qid"),
        col_str(&fixed, "target"),
        col_i64(&fixed, "position"),
    );
    let (raw, corrupt) = (col_f64(&fixed, "raw"), col_f64(&fixed, "corrupt"));
    let plain_raw = col_f64(&plain, "raw");
    let (mut checked, mut differs) = (0, 0);
    for i in 0..fixed.height() {
        if target[i] != "encoder_positions" {
            continue;
        }
        if (raw[i] - plain_raw[i]).abs() > 1e-3 {
            differs += 1;
        }
        if qid[i] != pair.qid {
            continue;
        }
        let (got, want) = (raw[i] - corrupt[i], naive[pos[i] as usize]);
        assert!(
            (got - want).abs() < 1e-5 * (1.0 + want.abs()),
            "position {}: QK-fixed attribution {got} vs naive {want}",
            pos[i]
        );
        checked += 1;
    }
    assert_eq!(checked, s);
    // both queries have s tokens: a zero weight is an underflow, not a mask
    assert_eq!(
        underflowed > 0,
        expect_underflow,
        "{underflowed} zero weights"
    );
    // the fix changes the estimate (the patterns move; it is not the plain gradient again)
    assert!(differs > 0);
    let exact = activation_patching(gm, &pairs, &cfg).unwrap();
    for (name, t) in [("gradient", &plain), ("qk_fix", &fixed)] {
        let ag = agreement(&exact, t).unwrap();
        println!("{name}: {ag}");
    }
}

#[test]
fn attribution_needs_a_differentiable_metric() {
    let gm = atomic();
    let cfg = PatchConfig {
        metric: PatchMetric::ReciprocalRank,
        ..all_targets()
    };
    let err = attribution_patching(&gm, &pairs(), &cfg).unwrap_err();
    assert!(matches!(err, InterpError::Input(_)), "{err}");
    assert!(err.to_string().contains("logit_diff"), "{err}");
    assert!(attribution_patching(&gm, &[], &all_targets()).is_err());
}

#[test]
fn path_patching_equals_two_naive_runs_per_edge() {
    let gm = atomic();
    let pairs = pairs();
    let comps = decoder_components(2);
    let cfg = PatchConfig {
        batch_size: 5,
        ..all_targets()
    };
    let df = path_patching(&gm, &pairs[..3], &comps, &comps, &cfg).unwrap();
    let edges = sender_receiver_pairs(&comps, &comps);
    // 6 components in order: 5 + 4 + ... + 0 edges
    assert_eq!(edges.len(), 15);
    assert_eq!(df.height(), 3 * edges.len());
    let raw = col_f64(&df, "raw");
    let (snd, rcv) = (col_str(&df, "sender"), col_str(&df, "receiver"));
    for (k, pair) in pairs[..3].iter().enumerate() {
        let n = Naive::new(&gm, pair);
        let (_, base) = gm
            .model
            .run_with_cache(&n.corrupt, HookFilter::all())
            .unwrap();
        for (e, (s, r)) in edges.iter().enumerate() {
            let i = k * edges.len() + e;
            assert_eq!(
                (snd[i].as_str(), rcv[i].as_str()),
                (s.to_string().as_str(), r.to_string().as_str())
            );
            // step 1: sender clean, everything strictly between frozen to the corrupted run, receiver cached
            let mut hooks = Hooks::none()
                .patch_from(&n.cache, *s, Selection::all())
                .unwrap();
            for p in &comps {
                let order = |q: &HookPoint| {
                    let site = [Site::SelfAttnOut, Site::CrossAttnOut, Site::MlpOut]
                        .iter()
                        .position(|x| *x == q.site)
                        .unwrap();
                    (q.layer.unwrap(), site)
                };
                if order(s) < order(p) && order(p) < order(r) {
                    hooks = hooks.patch_from(&base, *p, Selection::all()).unwrap();
                }
            }
            let mut hooks = hooks.with_cache(HookFilter::points(&[*r]));
            gm.model.forward(&n.corrupt, &mut hooks).unwrap();
            let step1 = hooks.take_cache();
            // step 2: only the receiver patched
            let mut hooks = Hooks::none()
                .patch_from(&step1, *r, Selection::all())
                .unwrap();
            let expected = n.metric(&mut hooks);
            assert!(
                (raw[i] - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                "{s} -> {r}: batched {} vs naive {expected}",
                raw[i]
            );
        }
    }
    // patching the clean run into itself: every edge gives 1
    let cfg_clean = PatchConfig {
        into_clean: true,
        ..cfg.clone()
    };
    let df = path_patching(&gm, &pairs[..2], &comps, &comps, &cfg_clean).unwrap();
    for v in col_f64(&df, "value") {
        assert!(v.is_nan() || (v - 1.0).abs() < 1e-4, "{v}");
    }
    // bad senders and receivers
    let resid = HookPoint::block(Stack::Decoder, 0, Site::ResidPost);
    let err = path_patching(&gm, &pairs[..1], &[resid], &comps, &cfg).unwrap_err();
    assert!(err.to_string().contains("hook_resid_post"), "{err}");
    let last = [HookPoint::block(Stack::Decoder, 1, Site::MlpOut)];
    let first = [HookPoint::block(Stack::Decoder, 0, Site::SelfAttnOut)];
    assert!(path_patching(&gm, &pairs[..1], &last, &first, &cfg).is_err());
    assert!(path_patching(&gm, &[], &first, &last, &cfg).is_err());
}

fn frame(columns: Vec<Column>) -> Table {
    Table::new(columns).unwrap()
}

#[test]
fn stages_are_derived_from_the_lens_and_patching_tables() {
    // synthetic tables: 6 layers, two probes with the same numbers
    let rr_rank = [100i64, 50, 20, 10, 2, 1]; // reciprocal rank 0.01 .. 1
    let cross = [0.0, 0.05, 0.4, 0.8, 0.3, 0.1];
    let mut lens = (vec![], vec![], vec![]);
    let mut patch = (vec![], vec![], vec![], vec![]);
    for _probe in 0..2 {
        for l in 0..6 {
            for (comp, rank) in [("resid_post", rr_rank[l]), ("mlp_out", 1)] {
                lens.0.push(l as i64);
                lens.1.push(comp.to_string());
                lens.2.push(rank);
            }
            for (comp, v) in [
                ("cross_attn_out", cross[l]),
                ("mlp_out", 0.9),
                ("self_attn_out", 0.0),
            ] {
                patch.0.push(l as i64);
                patch.1.push("components".to_string());
                patch.2.push(comp.to_string());
                patch.3.push(v);
            }
        }
    }
    let lens = frame(vec![
        Column::new("layer", lens.0),
        Column::new("component", lens.1),
        Column::new("rank_in_docids", lens.2),
    ]);
    let patching = frame(vec![
        Column::new("layer", patch.0),
        Column::new("target", patch.1),
        Column::new("component", patch.2),
        Column::new("value", patch.3),
    ]);
    let (split, evidence) = derive_stages(&lens, &patching, &StageConfig::default()).unwrap();
    // interaction: first reciprocal rank >= 0.5 (layer 4); bridging: first cross-attention >= 0.25 x 0.8
    assert_eq!(split, StageSplit::new(6, 2, 4).unwrap());
    assert_eq!(split.describe(), "0-1 / 2-3 / 4-5");
    assert_eq!(evidence.height(), 6);
    assert_eq!(
        col_str(&evidence, "stage"),
        [
            "priming",
            "priming",
            "bridging",
            "bridging",
            "interaction",
            "interaction"
        ]
    );
    assert_eq!(
        (split.stage(0), split.stage(3), split.stage(5)),
        (Stage::Priming, Stage::Bridging, Stage::Interaction)
    );
    let p = StageSplit::paper_t5_large();
    assert_eq!(p.describe(), "0-6 / 7-17 / 18-23");
    assert!(StageSplit::new(4, 3, 2).is_err());
    assert!(StageSplit::new(4, 1, 5).is_err());
    // the patching table must have components
    let empty = frame(vec![
        Column::new("layer", vec![0i64]),
        Column::new("target", vec!["heads".to_string()]),
        Column::new("component", vec!["self_attn".to_string()]),
        Column::new("value", vec![0.5f64]),
    ]);
    assert!(derive_stages(&lens, &empty, &StageConfig::default()).is_err());

    // on the trained tiny model: a valid split, its minimal circuit ablates the right points
    let gm = atomic();
    let probes = Probe::from_query_set(&train_set());
    let lens = logit_lens(&gm, &probes, &LensConfig::default()).unwrap();
    let cfg = PatchConfig {
        targets: vec![PatchTarget::Components],
        ..all_targets()
    };
    let patching = activation_patching(&gm, &pairs(), &cfg).unwrap();
    let (split, evidence) = derive_stages(&lens, &patching, &StageConfig::default()).unwrap();
    assert_eq!(split.layers, 2);
    assert_eq!(evidence.height(), 2);
    let circuit = split.minimal_circuit(&gm).unwrap();
    let expected = 2 + split.bridging_start + split.interaction_start;
    assert_eq!(
        circuit.all_points().len(),
        expected,
        "{:?}",
        circuit.all_points()
    );
    assert!(circuit.label.contains(&split.describe()));

    // the paper's circuit: self-attention and priming cross-attention zeroed, priming and bridging MLPs
    // mean-ablated (eval_patching_all_stages.py)
    let split = StageSplit::new(2, 1, 2).unwrap();
    let circuit = split.minimal_circuit(&gm).unwrap();
    let names = |v: &[HookPoint]| {
        let mut n: Vec<String> = v.iter().map(|p| p.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(circuit.mode, AblationMode::Mean);
    assert_eq!(circuit.mode_label(), "mean+zero");
    assert_eq!(
        names(&circuit.points),
        [
            "decoder.blocks.0.hook_mlp_out",
            "decoder.blocks.1.hook_mlp_out"
        ]
    );
    assert_eq!(
        names(&circuit.also_zero),
        [
            "decoder.blocks.0.hook_cross_attn_out",
            "decoder.blocks.0.hook_self_attn_out",
            "decoder.blocks.1.hook_self_attn_out"
        ]
    );
    // through hooks and baked into the model (zeroed projections, stored means): the same retrieval
    let set = train_set();
    let reference: Vec<String> = set.queries.iter().map(|q| q.text.clone()).collect();
    let cfg = AblationConfig::default();
    let hooked = ablation_study(
        &gm,
        &set,
        std::slice::from_ref(&circuit),
        Some(&reference),
        &cfg,
    )
    .unwrap();
    let pruned = circuit.prune(&gm, &reference).unwrap();
    let baked = ablation_study(&pruned, &set, &[], None, &cfg).unwrap();
    let mrr = |t: &Table| col_f64(t, "mrr_at_10");
    assert!((mrr(&hooked)[1] - mrr(&baked)[0]).abs() < 1e-9);
    assert_eq!(col_str(&hooked, "mode")[1], "mean+zero");
    // every layer interacting: self-attention zeroed only
    let all = StageSplit::new(2, 0, 0)
        .unwrap()
        .minimal_circuit(&gm)
        .unwrap();
    assert_eq!((all.mode, all.points.len()), (AblationMode::Zero, 2));
    // the whole analysis on multi-token docids stops before its lens and patching
    let err = stage_analysis(&naive(), &probes, &pairs(), &set, &StageConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("atomic docids"), "{err}");
}

#[test]
fn agreement_matches_pairs_that_share_a_qid_in_order() {
    // two pairs of query q1 (two corruptions) and one of q2, two cells each
    let table = |values: [f64; 6]| {
        Table::new(vec![
            Column::new(
                "qid",
                ["q1", "q1", "q1", "q1", "q2", "q2"]
                    .map(String::from)
                    .to_vec(),
            ),
            Column::new("target", vec!["heads".to_string(); 6]),
            Column::new("layer", vec![0i64, 1, 0, 1, 0, 1]),
            Column::new("component", vec!["self_attn".to_string(); 6]),
            Column::new("head", vec![0i64; 6]),
            Column::new("position", vec![-1i64; 6]),
            Column::new("value", values.to_vec()),
        ])
        .unwrap()
    };
    let exact = table([0.1, 0.9, 0.5, 0.2, 0.3, 0.7]);
    let ag = agreement(&exact, &exact).unwrap();
    let t = col_str(&ag, "target");
    let all = t.iter().position(|x| x == "all").unwrap();
    assert_eq!(col_i64(&ag, "n")[all], 6);
    // every row matched with itself: no difference (keyed on qid alone, q1's first pair met the second's)
    assert!(col_f64(&ag, "mean_abs_diff")[all].abs() < 1e-12);
    assert!((col_f64(&ag, "pearson")[all] - 1.0).abs() < 1e-9);
}
