//! The analyses' invariants on tiny models trained in the test.

mod common;

use burn::prelude::*;
use genir_data::Table;
use genir_data::{Queries, QuerySet};
use genir_interp::ablation::{ablation_study, Ablation, AblationConfig, AblationMode};
use genir_interp::figures;
use genir_interp::heads::{head_contributions, head_vocab_projection, HeadProjectionConfig};
use genir_interp::lens::{component_contributions, encoder_lens, logit_lens, LensConfig};
use genir_interp::patching::{
    activation_patching, make_pairs, make_pairs_at, prefix_pairs, relevant_term_pairs, Corruption,
    PatchConfig, PatchMetric, PatchPair, PatchTarget, PATCH_COMPONENTS,
};
use genir_interp::swap::{EncoderSwap, RankOver, SwapNorm};
use genir_interp::{lens_logits, write_table, InterpError, Probe};
use genir_model::hooks::{
    AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Selection, Site, Stack,
};
use genir_model::t5::Seq2SeqInput;
use genir_model::ModelError;
use genir_train::bundle::GenirModel;

use common::*;

type Figure<'a> = Box<dyn Fn(&std::path::Path) -> genir_interp::Result<()> + 'a>;

fn probes() -> Vec<Probe> {
    Probe::from_query_set(&train_set())
}

fn f64s(df: &Table, name: &str) -> Vec<f64> {
    df.f64s(name).unwrap()
}

fn strs(df: &Table, name: &str) -> Vec<String> {
    df.strs(name).unwrap()
}

fn i64s(df: &Table, name: &str) -> Vec<i64> {
    let c = df.column(name).unwrap();
    assert_eq!(c.null_count(), 0, "column {name} has nulls");
    c.i64s().unwrap()
}

#[test]
fn lens_at_the_last_resid_post_is_the_models_output() {
    let gm = atomic();
    let model = &gm.model;
    let searcher = gm.searcher().unwrap();
    let texts: Vec<String> = train_set().queries.iter().map(|q| q.text.clone()).collect();
    let ids = searcher.encode_queries(&texts).unwrap();
    let start = model.config.decoder_start() as u32;
    let dec: Vec<Vec<u32>> = ids.iter().map(|_| vec![start]).collect();
    let input = Seq2SeqInput::from_ids(&ids, &dec, 0, &device()).unwrap();
    let last = HookPoint::block(Stack::Decoder, 1, Site::ResidPost);
    let (logits, cache) = model
        .run_with_cache(&input, HookFilter::points(&[last]))
        .unwrap();
    let lens = lens_logits(model, cache.require(&last).unwrap().rank3(&last).unwrap());
    let diff: f32 = (lens - logits).abs().max().into_scalar();
    assert!(diff <= 1e-5, "lens vs logits: {diff}");

    let df = logit_lens(&gm, &probes(), &LensConfig::default()).unwrap();
    // 2 layers x 6 components + resid_pre of layer 0, per query
    assert_eq!(df.height(), 12 * 13);
    let comp = strs(&df, "component");
    let layer = i64s(&df, "layer");
    let rank_d = f64s(&df, "rank_in_docids");
    let qid = strs(&df, "qid");
    let hits = searcher.search(&texts, 1).unwrap();
    for i in 0..df.height() {
        if comp[i] == "resid_post" && layer[i] == 1 {
            let q: usize = qid[i].trim_start_matches("train-").parse().unwrap();
            let top1 = hits[q][0].docid == format!("{}", 100 + q * 7);
            assert_eq!(top1, rank_d[i] == 1.0, "query {q}: lens rank {}", rank_d[i]);
        }
    }
    let mean_d = f64s(&df, "mean_rank_docids");
    assert!(mean_d.iter().all(|v| v.is_finite() && *v >= 1.0));
    let prob = f64s(&df, "prob");
    assert!(prob.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn lens_reads_later_decoding_steps_of_multi_token_docids() {
    let gm = naive();
    let probes = probes();
    let model = &gm.model;
    for step in [1usize, 2] {
        let cfg = LensConfig {
            step,
            ..LensConfig::default()
        };
        let df = logit_lens(&gm, &probes, &cfg).unwrap();
        let (comp, qid) = (strs(&df, "component"), strs(&df, "qid"));
        let logit = f64s(&df, "logit");
        // at the last resid_post the lens logit of the correct token is the model's own logit at step `step`,
        // teacher-forced with the first `step` docid tokens
        let s = gm.searcher().unwrap();
        for (i, p) in probes.iter().enumerate().take(3) {
            let doc = gm.scheme.require(&p.docid, "").unwrap();
            let target = gm.scheme.target(doc);
            let mut dec = vec![model.config.decoder_start() as u32];
            dec.extend_from_slice(&target[..step]);
            let ids = s.encode_queries(std::slice::from_ref(&p.text)).unwrap();
            let input = Seq2SeqInput::from_ids(&ids, &[dec], 0, &device()).unwrap();
            let logits = model
                .forward(&input, &mut genir_model::hooks::Hooks::none())
                .unwrap();
            let v: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
            let vocab = v.len() / (step + 1);
            let want = f64::from(v[step * vocab + target[step] as usize]);
            let row = (0..df.height())
                .find(|&r| qid[r] == p.qid && comp[r] == "resid_post" && i64s(&df, "layer")[r] == 0)
                .unwrap();
            assert!(
                (logit[row] - want).abs() < 1e-4,
                "step {step} query {i}: {} vs {want}",
                logit[row]
            );
        }
    }
    // a step past the end of a docid is a clear error
    let err = logit_lens(
        &gm,
        &probes,
        &LensConfig {
            step: 50,
            ..LensConfig::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("decoding step 50"), "{err}");
}

/// The encoder lens reads every encoder layer (and the final norm) through the decoder's head; one cell
/// recomputed by hand from a cached forward pass: the encoder output mean-pooled over the query's positions,
/// the decoder's final norm, the LM head, the rank of the docid token.
#[test]
fn encoder_lens_reads_the_encoder_through_the_decoder_head() {
    let gm = atomic();
    let probes = probes();
    let df = encoder_lens(&gm, &probes[..4], &LensConfig::default()).unwrap();
    let (e, _) = gm.model.depth();
    assert_eq!(df.height(), 4 * (e + 2));
    let (qid, comp, rank, best) = (
        strs(&df, "qid"),
        strs(&df, "component"),
        i64s(&df, "rank"),
        i64s(&df, "best_rank"),
    );
    let best_pos = i64s(&df, "best_position");
    let searcher = gm.searcher().unwrap();
    for p in &probes[..4] {
        let ids = searcher
            .encode_queries(std::slice::from_ref(&p.text))
            .unwrap();
        let s = ids[0].len();
        let start = gm.model.config.decoder_start() as u32;
        let input = Seq2SeqInput::from_ids(&ids, &[vec![start]], 0, &device()).unwrap();
        let point = HookPoint::final_norm(Stack::Encoder);
        let (_, cache) = gm
            .model
            .run_with_cache(&input, HookFilter::points(&[point]))
            .unwrap();
        let a = match cache.require(&point).unwrap() {
            genir_model::hooks::Activation::Rank3(t) => t.clone(),
            _ => panic!("rank 3"),
        };
        let logits = gm
            .model
            .lm_logits(gm.model.decoder.final_norm.forward(a.mean_dim(1)));
        let row: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
        let doc = gm.scheme.require(&p.docid, "").unwrap();
        let t = gm.scheme.target(doc)[0] as usize;
        let expected = 1 + row.iter().filter(|&&v| v > row[t]).count() as i64;
        let i = (0..df.height())
            .find(|&i| qid[i] == p.qid && comp[i] == "final_norm")
            .unwrap();
        assert_eq!(rank[i], expected, "{}", p.qid);
        for i in (0..df.height()).filter(|&i| qid[i] == p.qid) {
            assert!(best[i] >= 1 && (best_pos[i] as usize) < s);
        }
    }
    assert!(encoder_lens(&gm, &[], &LensConfig::default()).is_err());
}

#[test]
fn contributions_sum_to_the_residual_change() {
    let gm = atomic();
    let df = component_contributions(&gm, &probes(), &LensConfig::default()).unwrap();
    assert_eq!(df.height(), 12 * 2 * 6);
    let err = f64s(&df, "decomposition_error");
    let worst = err.iter().copied().fold(0f64, f64::max);
    assert!(
        worst < 1e-5,
        "resid_post - resid_pre != attn + cross + mlp: {worst}"
    );
    let comp = strs(&df, "component");
    let share = f64s(&df, "share");
    let cos = f64s(&df, "cos_resid_post");
    // the three shares of one (query, layer) add up to 1
    for start in (0..df.height()).step_by(6) {
        let s: f64 = (start..start + 3).map(|i| share[i]).sum();
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        assert_eq!(comp[start + 4], "resid_post");
        assert!((cos[start + 4] - 1.0).abs() < 1e-6);
    }
}

fn patch_cfg(into_clean: bool) -> PatchConfig {
    PatchConfig {
        into_clean,
        ..PatchConfig::default()
    }
}

#[test]
fn patching_the_clean_run_into_itself_gives_one_everywhere() {
    let gm = atomic();
    let pairs = make_pairs(&probes()[..4], &Corruption::OtherQuery { seed: 1 }).unwrap();
    for metric in [PatchMetric::LogitDiff, PatchMetric::ReciprocalRank] {
        let cfg = PatchConfig {
            metric,
            ..patch_cfg(true)
        };
        let df = activation_patching(&gm, &pairs, &cfg).unwrap();
        let v = f64s(&df, "value");
        let clean = f64s(&df, "clean");
        let corrupt = f64s(&df, "corrupt");
        for i in 0..v.len() {
            if (clean[i] - corrupt[i]).abs() > 1e-9 {
                assert!((v[i] - 1.0).abs() < 1e-4, "{metric:?} row {i}: {}", v[i]);
            } else {
                assert!(v[i].is_nan());
            }
        }
    }
}

#[test]
fn patching_the_last_resid_post_gives_one_and_nothing_gives_zero() {
    let gm = atomic();
    let pairs = make_pairs(&probes()[..3], &Corruption::OtherQuery { seed: 7 }).unwrap();
    let df = activation_patching(&gm, &pairs, &patch_cfg(false)).unwrap();
    let target = strs(&df, "target");
    let comp = strs(&df, "component");
    let layer = i64s(&df, "layer");
    let v = f64s(&df, "value");
    let raw = f64s(&df, "raw");
    let clean = f64s(&df, "clean");
    let (mut ones, mut zeros) = (0, 0);
    for i in 0..v.len() {
        if target[i] == "none" {
            assert!(v[i].abs() < 1e-4, "patching nothing: {}", v[i]);
            zeros += 1;
        }
        if target[i] == "components" && comp[i] == "resid_post" && layer[i] == 1 {
            assert!((v[i] - 1.0).abs() < 1e-5, "last resid_post: {}", v[i]);
            assert!((raw[i] - clean[i]).abs() < 1e-4);
            ones += 1;
        }
        // the decoder's first resid_pre is the embedded start token in both runs
        if target[i] == "components" && comp[i] == "resid_pre" && layer[i] == 0 {
            assert!(v[i].abs() < 1e-4);
        }
    }
    assert_eq!((ones, zeros), (3, 3));
    // rows per pair: none + 2 layers x 5 components + 2 layers x 2 kinds x 2 heads + source positions
    let per_pair = df.height() / 3;
    let enc_rows = target.iter().filter(|t| *t == "encoder_positions").count() / 3;
    assert_eq!(per_pair, 1 + 10 + 8 + enc_rows);
    assert!(enc_rows >= 2);
    // patching every encoder position of the clean run restores it: no single position can exceed it by
    // much, and at least one position carries signal
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn batched_patching_equals_one_variant_per_pass() {
    let gm = atomic();
    let pairs = make_pairs(&probes()[2..4], &Corruption::Shuffle { seed: 5 }).unwrap();
    let mut cfg = patch_cfg(false);
    cfg.metric = PatchMetric::LogitDiff;
    let a = activation_patching(&gm, &pairs, &cfg).unwrap();
    cfg.batch_size = 1;
    let b = activation_patching(&gm, &pairs, &cfg).unwrap();
    let (va, vb) = (f64s(&a, "raw"), f64s(&b, "raw"));
    assert_eq!(va.len(), vb.len());
    for (x, y) in va.iter().zip(&vb) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
}

#[test]
fn pairs_are_seeded_and_lengths_may_differ() {
    let p = probes();
    let a = make_pairs(&p, &Corruption::Shuffle { seed: 3 }).unwrap();
    let b = make_pairs(&p, &Corruption::Shuffle { seed: 3 }).unwrap();
    assert_eq!(a, b);
    assert!(a.iter().all(|x| x.corrupt != x.clean));
    let o = make_pairs(&p, &Corruption::OtherQuery { seed: 3 }).unwrap();
    assert!(o
        .iter()
        .all(|x| x.corrupt_docid.as_deref() != Some(x.clean_docid.as_str())));
    assert!(matches!(
        make_pairs(&[], &Corruption::Shuffle { seed: 1 }),
        Err(InterpError::Input(_))
    ));
    // a user pair whose queries tokenize to different lengths: the shorter is padded and masked
    let gm = atomic();
    let pair = PatchPair::new(
        "long",
        "volcano lava volcano lava eruption magma",
        "100",
        "chess",
        Some("170".into()),
    );
    let cfg = PatchConfig {
        targets: vec![PatchTarget::Components, PatchTarget::EncoderPositions],
        ..patch_cfg(false)
    };
    let df = activation_patching(&gm, &[pair], &cfg).unwrap();
    let target = strs(&df, "target");
    let lens: Vec<usize> = gm
        .searcher()
        .unwrap()
        .encode_queries(&[
            "volcano lava volcano lava eruption magma".into(),
            "chess".into(),
        ])
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert!(lens[1] < lens[0], "{lens:?}");
    // encoder positions are patched where both queries have a token
    assert_eq!(
        target.iter().filter(|t| *t == "encoder_positions").count(),
        lens[1]
    );
    let v = f64s(&df, "value");
    let comp = strs(&df, "component");
    let layer = i64s(&df, "layer");
    for i in 0..v.len() {
        if comp[i] == "resid_post" && layer[i] == 1 {
            assert!((v[i] - 1.0).abs() < 1e-5);
        }
    }
    // unknown docids and impossible prefixes are clear errors
    let bad = PatchPair::new("x", "volcano", "nope", "chess", None);
    let err = activation_patching(&gm, &[bad], &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let cfg = PatchConfig {
        decoder_prefix: 1,
        ..patch_cfg(false)
    };
    let err = activation_patching(&gm, &a[..1], &cfg).unwrap_err();
    assert!(matches!(err, InterpError::Input(_)), "{err}");
    assert!(activation_patching(&gm, &[], &cfg).is_err());
}

#[test]
fn decoder_positions_are_patched_for_multi_token_docids() {
    let gm = naive();
    let pairs = make_pairs(&probes()[..3], &Corruption::OtherQuery { seed: 2 }).unwrap();
    for into_clean in [false, true] {
        let cfg = PatchConfig {
            decoder_prefix: 2,
            targets: vec![PatchTarget::DecoderPositions, PatchTarget::Components],
            ..patch_cfg(into_clean)
        };
        let df = activation_patching(&gm, &pairs, &cfg).unwrap();
        let target = strs(&df, "target");
        let comp = strs(&df, "component");
        let pos = i64s(&df, "position");
        let v = f64s(&df, "value");
        let n_pos = target.iter().filter(|t| *t == "decoder_positions").count();
        // (1 layer resid_pre + last resid_post) x 3 positions x 3 pairs
        assert_eq!(n_pos, 2 * 3 * 3);
        for i in 0..v.len() {
            if !v[i].is_finite() {
                continue; // clean and corrupted docids may share this character
            }
            if into_clean {
                assert!((v[i] - 1.0).abs() < 1e-4, "{}", v[i]);
            } else if target[i] == "decoder_positions" && comp[i] == "resid_post" && pos[i] == 2 {
                assert!((v[i] - 1.0).abs() < 1e-5, "{}", v[i]);
            } else if target[i] == "decoder_positions" && comp[i] == "resid_pre" && pos[i] < 2 {
                // the decoder's first residual stream is the same embedding in both runs
                assert!(v[i].abs() < 1e-4, "{}", v[i]);
            }
        }
    }
}

/// The "relevant terms replaced" corruption: every query word found in the relevant document is replaced by
/// another probe's term found in neither; seeded; the sweep runs on the pairs.
#[test]
fn relevant_terms_are_replaced_by_terms_absent_from_the_document() {
    let gm = atomic();
    let probes = probes();
    let corpus = tiny_collection().corpus;
    let pairs = relevant_term_pairs(&probes, &corpus, 4).unwrap();
    assert_eq!(pairs.len(), probes.len());
    assert_eq!(pairs, relevant_term_pairs(&probes, &corpus, 4).unwrap());
    for (pair, p) in pairs.iter().zip(&probes) {
        assert_eq!(pair.clean, p.text);
        assert_ne!(pair.corrupt, pair.clean);
        assert!(pair.corrupt_docid.is_none());
        let doc = corpus.get(&p.docid).unwrap().full_text().to_lowercase();
        let doc_terms: Vec<String> = genir_data::perturb::tokenize(&doc);
        for w in genir_data::perturb::tokenize(&pair.corrupt) {
            assert!(
                !doc_terms.contains(&w),
                "{w} of {:?} is in {}",
                pair.corrupt,
                p.docid
            );
        }
        assert_eq!(
            pair.corrupt.split_whitespace().count(),
            pair.clean.split_whitespace().count()
        );
    }
    let df = activation_patching(
        &gm,
        &pairs[..3],
        &PatchConfig {
            targets: vec![PatchTarget::Components],
            ..patch_cfg(false)
        },
    )
    .unwrap();
    assert!(f64s(&df, "value").iter().any(|v| v.is_finite()));
    // a query that shares no word with its document is left out; none left is an error
    let lonely = vec![Probe::new("x", "zebra quartz", &probes[0].docid)];
    assert!(matches!(
        relevant_term_pairs(&lonely, &corpus, 4),
        Err(InterpError::Input(_))
    ));
    let unknown = vec![Probe::new("y", "volcano lava", "no-such-doc")];
    let err = relevant_term_pairs(&unknown, &corpus, 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-doc"), "{err}");
}

/// The second multi-token experiment: the query is held fixed and only the docid prefix fed to the decoder
/// differs. The encoder output is then the same in both runs (patching it changes nothing), the decoder's
/// first residual stream at every position restores the clean run, and every cell equals a full forward
/// pass of the corrupted prefix with the same patch through plain hooks.
#[test]
fn prefix_patching_holds_the_query_and_swaps_the_docid_prefix() {
    let gm = naive();
    let probes = probes();
    let prefix = 2;
    let pairs = prefix_pairs(&gm, &probes[..4], prefix, 5).unwrap();
    let head = |d: &str| gm.scheme.target(gm.scheme.require(d, "").unwrap())[..=prefix].to_vec();
    for p in &pairs {
        assert_eq!(p.clean, p.corrupt);
        let (c, k) = (
            head(&p.clean_docid),
            head(p.corrupt_docid.as_deref().unwrap()),
        );
        assert_ne!(c[..prefix], k[..prefix]);
        // the compared tokens differ: the logit difference is not identically 0
        assert_ne!(c[prefix], k[prefix]);
    }
    assert_eq!(pairs, prefix_pairs(&gm, &probes[..4], prefix, 5).unwrap());
    assert!(matches!(
        prefix_pairs(&gm, &probes[..4], 0, 5),
        Err(InterpError::Input(_))
    ));
    assert!(matches!(
        prefix_pairs(&gm, &probes[..4], 9, 5),
        Err(InterpError::Input(_))
    ));
    let cfg = PatchConfig {
        decoder_prefix: prefix,
        corrupt_prefix: true,
        targets: vec![
            PatchTarget::Components,
            PatchTarget::DecoderPositions,
            PatchTarget::EncoderPositions,
        ],
        ..patch_cfg(false)
    };
    let unnamed = make_pairs(&probes[..3], &Corruption::Shuffle { seed: 1 }).unwrap();
    let err = activation_patching(&gm, &unnamed, &cfg).unwrap_err();
    assert!(err.to_string().contains("corrupted docid"), "{err}");

    let df = activation_patching(&gm, &pairs, &cfg).unwrap();
    let (qid, target, comp) = (
        strs(&df, "qid"),
        strs(&df, "target"),
        strs(&df, "component"),
    );
    let (layer, pos) = (i64s(&df, "layer"), i64s(&df, "position"));
    let (value, raw) = (f64s(&df, "value"), f64s(&df, "raw"));
    let layers = gm.model.decoder.blocks.len() as i64;
    let device = device();
    let searcher = gm.searcher().unwrap();
    let start = gm.model.config.decoder_start() as u32;
    let pad = gm.model.config.pad_token_id as u32;
    let mut checked = 0;
    for pair in &pairs {
        let ids = searcher
            .encode_queries(std::slice::from_ref(&pair.clean))
            .unwrap();
        let target_of = |d: &str| gm.scheme.target(gm.scheme.require(d, "").unwrap());
        let (ct, xt) = (
            target_of(&pair.clean_docid),
            target_of(pair.corrupt_docid.as_deref().unwrap()),
        );
        let dec = |t: &[u32]| {
            let mut v = vec![start];
            v.extend_from_slice(&t[..prefix]);
            v
        };
        let clean = Seq2SeqInput::from_ids(&ids, &[dec(&ct)], pad, &device).unwrap();
        let corrupt = Seq2SeqInput::from_ids(&ids, &[dec(&xt)], pad, &device).unwrap();
        let (_, cache) = gm.model.run_with_cache(&clean, HookFilter::all()).unwrap();
        let metric = |hooks: &mut genir_model::hooks::Hooks<'_>| {
            let logits = gm.model.forward(&corrupt, hooks).unwrap();
            let [_, t, v] = logits.dims();
            let last: Vec<f32> = logits
                .slice([0..1, t - 1..t, 0..v])
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .unwrap();
            f64::from(last[ct[prefix] as usize]) - f64::from(last[xt[prefix] as usize])
        };
        for i in (0..df.height()).filter(|&i| qid[i] == pair.qid) {
            let v = value[i];
            match target[i].as_str() {
                // same query: the encoder output is the same in both runs
                "encoder_positions" => assert!(v.abs() < 1e-3, "encoder position: {v}"),
                "components" if comp[i] == "resid_pre" && layer[i] == 0 => {
                    assert!((v - 1.0).abs() < 1e-4, "layer-0 residual stream: {v}")
                }
                "decoder_positions" if comp[i] == "resid_pre" && layer[i] == 0 && pos[i] == 0 => {
                    assert!(v.abs() < 1e-4, "start token: {v}")
                }
                "decoder_positions" if comp[i] == "resid_post" && pos[i] == prefix as i64 => {
                    assert!(
                        (v - 1.0).abs() < 1e-4,
                        "last position after the last layer: {v}"
                    )
                }
                _ => {}
            }
            let expected = match target[i].as_str() {
                "none" | "encoder_positions" => metric(&mut genir_model::hooks::Hooks::none()),
                "components" => {
                    let site = PATCH_COMPONENTS
                        .iter()
                        .find(|(n, _)| *n == comp[i])
                        .map(|(_, s)| *s)
                        .unwrap();
                    let point = HookPoint::block(Stack::Decoder, layer[i] as usize, site);
                    let mut hooks = genir_model::hooks::Hooks::none()
                        .patch_from(&cache, point, genir_model::hooks::Selection::all())
                        .unwrap();
                    metric(&mut hooks)
                }
                "decoder_positions" => {
                    let (l, site) = if comp[i] == "resid_post" {
                        (layers as usize - 1, Site::ResidPost)
                    } else {
                        (layer[i] as usize, Site::ResidPre)
                    };
                    let point = HookPoint::block(Stack::Decoder, l, site);
                    let sel = genir_model::hooks::Selection::positions(vec![pos[i] as usize]);
                    let mut hooks = genir_model::hooks::Hooks::none()
                        .patch_from(&cache, point, sel)
                        .unwrap();
                    metric(&mut hooks)
                }
                _ => continue,
            };
            assert!(
                (raw[i] - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                "{} {} layer {} {} pos {}: sweep {} vs full forward {}",
                qid[i],
                target[i],
                layer[i],
                comp[i],
                pos[i],
                raw[i],
                expected
            );
            checked += 1;
        }
    }
    assert!(checked >= pairs.len() * 4, "{checked} cells checked");
    let clean_cfg = PatchConfig {
        into_clean: true,
        ..cfg.clone()
    };
    let df = activation_patching(&gm, &pairs, &clean_cfg).unwrap();
    for v in f64s(&df, "value").into_iter().filter(|v| v.is_finite()) {
        assert!((v - 1.0).abs() < 1e-4, "{v}");
    }
}

#[test]
fn encoder_swap_checks_models_and_evaluates() {
    let a = atomic();
    let set = train_set();
    // a model's own encoder and decoder: the same results as its searcher
    let same = EncoderSwap::new(&a, &a)
        .unwrap()
        .evaluate(&set, None)
        .unwrap();
    let run = a
        .searcher()
        .unwrap()
        .run(&set.queries, 10, 64, "t")
        .unwrap();
    let own = genir_train::metrics::evaluate(&run, &set.qrels, None);
    assert!((same.all.hits_at_1 - own.hits_at_1).abs() < 1e-12);
    assert!(same.all.hits_at_1 >= 0.9, "{}", same.all.hits_at_1);
    // another model's decoder, restricted to the documents it never saw
    let b = atomic_other();
    let unseen = vec!["100".to_string(), "107".to_string()];
    let swapped = EncoderSwap::new(&a, &b)
        .unwrap()
        .evaluate(&set, Some(&unseen))
        .unwrap();
    let u = swapped.unseen.as_ref().unwrap();
    assert_eq!(u.per_query.len(), 2);
    assert!((0.0..=1.0).contains(&swapped.all.hits_at_1));
    let df = swapped.to_frame("a->b").unwrap();
    assert_eq!(df.height(), 2);
    // a mistyped unseen docid is an error, not an evaluation on no queries
    let typo = vec!["100".to_string(), "1o7".to_string()];
    let err = EncoderSwap::new(&a, &b)
        .unwrap()
        .evaluate(&set, Some(&typo))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"1o7\""), "{err}");
    // the paper's swap: A's encoder blocks under B's final encoder norm, which is B's run with A's last
    // encoder residual stream patched in (TransformerLens's hook_resid_post comes before encoder_final_ln)
    let mut paper = EncoderSwap::new(&a, &b).unwrap();
    paper.norm = SwapNorm::Decoder;
    let queries: Vec<String> = set.queries.iter().take(4).map(|q| q.text.clone()).collect();
    let hits = paper.search(&queries, 3, None).unwrap();
    let own_norm = EncoderSwap::new(&a, &b)
        .unwrap()
        .search(&queries, 3, None)
        .unwrap();
    let ids = a.searcher().unwrap().encode_queries(&queries).unwrap();
    let last = HookPoint::block(
        Stack::Encoder,
        a.model.encoder.blocks.len() - 1,
        Site::ResidPost,
    );
    let (start, pad) = (
        b.model.config.decoder_start() as u32,
        b.model.config.pad_token_id as u32,
    );
    let mut moved = 0f32;
    for ((src, got), other) in ids.iter().zip(&hits).zip(&own_norm) {
        let input =
            Seq2SeqInput::from_ids(std::slice::from_ref(src), &[vec![start]], pad, &device())
                .unwrap();
        let (_, cache) = a
            .model
            .run_with_cache(&input, HookFilter::points(&[last]))
            .unwrap();
        let mut hooks = Hooks::none()
            .patch_from(&cache, last, Selection::all())
            .unwrap();
        let logits = b.model.forward(&input, &mut hooks).unwrap();
        let v = logits.dims()[2];
        let lp: Vec<f32> = burn::tensor::activation::log_softmax(logits.reshape([1, v]), 1)
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .unwrap();
        for h in got {
            let row = b.scheme.target(h.doc)[0] as usize;
            assert!(
                (lp[row] - h.score).abs() < 1e-5,
                "{} vs {}",
                lp[row],
                h.score
            );
        }
        let best = (0..b.scheme.len())
            .map(|d| lp[b.scheme.target(d)[0] as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (best - got[0].score).abs() < 1e-5,
            "{best} vs {}",
            got[0].score
        );
        moved = moved.max((got[0].score - other[0].score).abs());
    }
    // the two models' final norms differ: so do the scores
    assert!(moved > 1e-4, "{moved}");
    // incompatible models
    let c = tiny_collection();
    let wide = tempfile::tempdir().unwrap();
    train(
        &c,
        config(genir_train::docid::DocidKind::Atomic, 1, 48, 1, 3),
        wide.path(),
    );
    let wide = GenirModel::load(wide.path(), &device()).unwrap();
    let err = EncoderSwap::new(&a, &wide).err().unwrap();
    assert!(matches!(err, InterpError::Incompatible(_)), "{err}");
    assert!(err.to_string().contains("d_model"), "{err}");
    let mut fewer = c.clone();
    fewer.corpus = genir_data::Corpus::new(c.corpus.iter().skip(1).cloned().collect());
    for s in fewer.splits.values_mut() {
        s.qrels = s.qrels.filter(|q| q.docid != "100");
    }
    let dir = tempfile::tempdir().unwrap();
    train(
        &fewer,
        config(genir_train::docid::DocidKind::Atomic, 1, 32, 2, 3),
        dir.path(),
    );
    let fewer = GenirModel::load(dir.path(), &device()).unwrap();
    let err = EncoderSwap::new(&a, &fewer).err().unwrap();
    assert!(err.to_string().contains("docid"), "{err}");
    let n = naive();
    assert!(EncoderSwap::new(&n, &n).is_err());
    let empty = QuerySet::default();
    assert!(EncoderSwap::new(&a, &a)
        .unwrap()
        .evaluate(&empty, None)
        .is_err());
}

#[test]
fn ablation_removes_what_the_model_needs() {
    let gm = atomic();
    let set = train_set();
    let cross = Ablation::parse(
        &gm,
        "cross",
        "decoder.blocks.*.hook_cross_attn_out",
        AblationMode::Zero,
    )
    .unwrap();
    assert_eq!(cross.points.len(), 2);
    let selfa = Ablation::decoder_self_attention(&gm, AblationMode::Mean).unwrap();
    let reference: Vec<String> = tiny_collection()
        .split("validation")
        .unwrap()
        .queries
        .iter()
        .map(|q| q.text.clone())
        .collect();
    let enc = Ablation::parse(
        &gm,
        "enc_mlp",
        "encoder.blocks.*.hook_mlp_out",
        AblationMode::Mean,
    )
    .unwrap();
    let df = ablation_study(
        &gm,
        &set,
        &[cross, selfa, enc],
        Some(&reference),
        &AblationConfig::default(),
    )
    .unwrap();
    assert_eq!(
        strs(&df, "label"),
        ["none", "cross", "decoder_self_attn", "enc_mlp"]
    );
    let h1 = f64s(&df, "hits_at_1");
    assert!(h1[0] >= 0.9, "{h1:?}");
    // without cross-attention the decoder cannot see the query: one answer for all
    assert!(h1[1] <= 2.0 / 12.0 + 1e-9, "{h1:?}");
    assert!(h1.iter().all(|h| (0.0..=1.0).contains(h)));
    // errors: unknown hook names, mean without reference, empty query sets
    let err = Ablation::parse(
        &gm,
        "x",
        "decoder.blocks.*.hook_crossattn_out",
        AblationMode::Zero,
    )
    .unwrap_err();
    assert!(
        matches!(err, InterpError::Model(ModelError::UnknownHook { .. })),
        "{err}"
    );
    let err = Ablation::parse(
        &gm,
        "x",
        "decoder.blocks.7.hook_mlp_out",
        AblationMode::Zero,
    )
    .unwrap_err();
    assert!(
        matches!(err, InterpError::Model(ModelError::UnknownHook { .. })),
        "{err}"
    );
    let selfa = Ablation::decoder_self_attention(&gm, AblationMode::Mean).unwrap();
    assert!(ablation_study(
        &gm,
        &set,
        std::slice::from_ref(&selfa),
        None,
        &AblationConfig::default()
    )
    .is_err());
    let empty = QuerySet {
        queries: Queries::new(vec![]),
        ..set.clone()
    };
    assert!(ablation_study(
        &gm,
        &empty,
        &[selfa],
        Some(&reference),
        &AblationConfig::default()
    )
    .is_err());
}

#[test]
fn multi_token_partners_differ_at_the_patched_step() {
    let gm = naive();
    let probes = probes();
    let step = 1;
    let tok = |d: &str| {
        gm.scheme
            .target(gm.scheme.index_of(d).unwrap())
            .get(step)
            .copied()
    };
    for seed in 0..10 {
        let c = Corruption::OtherQuery { seed };
        for p in make_pairs_at(&gm, &probes, &c, step).unwrap() {
            let other = tok(p.corrupt_docid.as_deref().unwrap());
            assert!(other.is_some() && other != tok(&p.clean_docid), "{p:?}");
        }
    }
    // make_pairs alone draws partners with the same token there (every cell of such a pair is 0 / 0)
    let same = (0..10).any(|seed| {
        make_pairs(&probes, &Corruption::OtherQuery { seed })
            .unwrap()
            .iter()
            .any(|p| tok(p.corrupt_docid.as_deref().unwrap()) == tok(&p.clean_docid))
    });
    assert!(same);
    // a step past the docids is an error naming a query; atomic step 0 draws make_pairs' pairs
    let err = make_pairs_at(&gm, &probes, &Corruption::OtherQuery { seed: 0 }, 40)
        .unwrap_err()
        .to_string();
    assert!(err.contains("decoding step 40"), "{err}");
    let c = Corruption::OtherQuery { seed: 5 };
    assert_eq!(
        make_pairs_at(&atomic(), &probes, &c, 0).unwrap(),
        make_pairs(&probes, &c).unwrap()
    );
}

#[test]
fn ranking_over_the_vocabulary_counts_text_tokens() {
    let gm = atomic();
    let set = train_set();
    let cross = Ablation::parse(
        &gm,
        "cross",
        "decoder.blocks.*.hook_cross_attn_out",
        AblationMode::Zero,
    )
    .unwrap();
    let cfg = |rank_over| AblationConfig {
        rank_over,
        ..AblationConfig::default()
    };
    let vocab = ablation_study(
        &gm,
        &set,
        std::slice::from_ref(&cross),
        None,
        &cfg(RankOver::Vocabulary),
    )
    .unwrap();
    let docids = ablation_study(
        &gm,
        &set,
        std::slice::from_ref(&cross),
        None,
        &cfg(RankOver::Docids),
    )
    .unwrap();
    // independently: the relevant docid's rank among every token of the full logit row (1 + tokens above)
    let searcher = gm.searcher().unwrap();
    let texts: Vec<String> = set.queries.iter().map(|q| q.text.clone()).collect();
    let ids = searcher.encode_queries(&texts).unwrap();
    let start = gm.model.config.decoder_start() as u32;
    let dec: Vec<Vec<u32>> = ids.iter().map(|_| vec![start]).collect();
    let input =
        Seq2SeqInput::from_ids(&ids, &dec, gm.model.config.pad_token_id as u32, &device()).unwrap();
    for (row, ablate) in [(0, false), (1, true)] {
        let mut hooks = Hooks::none();
        if ablate {
            for p in &cross.points {
                hooks.add(*p, genir_model::hooks::Intervention::Zero(Selection::all()));
            }
        }
        let logits = gm.model.forward(&input, &mut hooks).unwrap();
        let v = logits.dims()[2];
        let flat: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
        let (mut h1, mut h10, mut mrr) = (0.0, 0.0, 0.0);
        for (i, q) in set.queries.iter().enumerate() {
            let r = &flat[i * v..(i + 1) * v];
            let rel: Vec<usize> = set
                .qrels
                .relevant(&q.qid)
                .map(|d| gm.scheme.index_of(d).unwrap())
                .collect();
            let best = rel
                .iter()
                .map(|&d| {
                    let t = r[gm.scheme.target(d)[0] as usize];
                    1 + r.iter().filter(|&&x| x > t).count()
                })
                .min()
                .unwrap();
            h1 += f64::from(u8::from(best == 1));
            h10 += f64::from(u8::from(best <= 10));
            if best <= 10 {
                mrr += 1.0 / best as f64;
            }
        }
        let n = set.queries.len() as f64;
        for (col, want) in [
            ("hits_at_1", h1 / n),
            ("hits_at_10", h10 / n),
            ("mrr_at_10", mrr / n),
        ] {
            let got = f64s(&vocab, col)[row];
            assert!(
                (got - want).abs() < 1e-9,
                "{col} row {row}: {got} vs {want}"
            );
            // text tokens can only push documents down
            assert!(got <= f64s(&docids, col)[row] + 1e-12);
        }
    }
    // without cross-attention, text tokens outrank the documents somewhere (the two modes differ)
    assert!(
        f64s(&vocab, "mrr_at_10")[1] < f64s(&docids, "mrr_at_10")[1],
        "{vocab}\n{docids}"
    );
}

#[test]
fn head_projection_and_contributions() {
    let gm = atomic();
    let model = &gm.model;
    let texts = vec![
        "volcano lava".to_string(),
        "chess bishop knight".to_string(),
    ];
    let ids = gm.searcher().unwrap().encode_queries(&texts).unwrap();
    let start = model.config.decoder_start() as u32;
    let input =
        Seq2SeqInput::from_ids(&ids, &[vec![start, 5], vec![start, 9]], 0, &device()).unwrap();
    for kind in [AttnKind::SelfAttn, AttnKind::CrossAttn] {
        for l in 0..2 {
            let z = HookPoint::attn(Stack::Decoder, l, kind, AttnSite::Z);
            let out = HookPoint::block(
                Stack::Decoder,
                l,
                if kind == AttnKind::CrossAttn {
                    Site::CrossAttnOut
                } else {
                    Site::SelfAttnOut
                },
            );
            let (_, cache) = model
                .run_with_cache(&input, HookFilter::points(&[z, out]))
                .unwrap();
            let per_head = head_contributions(
                model,
                l,
                kind,
                cache.require(&z).unwrap().rank4(&z).unwrap(),
            )
            .unwrap();
            assert_eq!(per_head.dims()[2], 2);
            let sum: Tensor<3> = per_head.sum_dim(2).squeeze_dim(2);
            let diff: f32 = (sum - cache.require(&out).unwrap().rank3(&out).unwrap())
                .abs()
                .max()
                .into_scalar();
            assert!(diff < 1e-5, "{kind:?} layer {l}: {diff}");
        }
    }
    assert!(head_contributions(
        model,
        5,
        AttnKind::CrossAttn,
        Tensor::zeros([1, 1, 2, 16], &device())
    )
    .is_err());
    let cfg = HeadProjectionConfig {
        top_k: 3,
        ..Default::default()
    };
    let df = head_vocab_projection(&gm, &probes()[..4], &cfg).unwrap();
    // 4 queries x 2 layers x 2 heads x (3 text + 3 docid + 1 correct)
    assert_eq!(df.height(), 4 * 2 * 2 * 7);
    let part = strs(&df, "part");
    let tok = i64s(&df, "token_id");
    let off = i64::from(gm.scheme.token_offset);
    for i in 0..part.len() {
        match part[i].as_str() {
            "text" => assert!(tok[i] < off),
            "docid" | "correct" => assert!(tok[i] >= off),
            p => panic!("{p}"),
        }
    }
}

#[test]
fn tables_and_figures_are_written() {
    let gm = atomic();
    let dir = tempfile::tempdir().unwrap();
    let p = &probes()[..3];
    let lens = logit_lens(&gm, p, &LensConfig::default()).unwrap();
    let (pq, csv) = write_table(&lens, &dir.path().join("lens")).unwrap();
    assert!(pq.exists());
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("qid,docid,layer,component,rank,"),
        "{text}"
    );
    assert_eq!(text.lines().count(), lens.height() + 1);
    let back = Table::read_parquet(&pq).unwrap();
    assert_eq!(back, lens, "the table round-trips through Parquet");
    let contrib = component_contributions(&gm, p, &LensConfig::default()).unwrap();
    let pairs = make_pairs(p, &Corruption::OtherQuery { seed: 1 }).unwrap();
    let patch = activation_patching(&gm, &pairs, &PatchConfig::default()).unwrap();
    let heads = head_vocab_projection(&gm, p, &HeadProjectionConfig::default()).unwrap();
    let swap = EncoderSwap::new(&gm, &gm)
        .unwrap()
        .evaluate(&train_set(), Some(&["100".into()]))
        .unwrap();
    let swap = swap.to_frame("self").unwrap();
    let abl = ablation_study(
        &gm,
        &train_set(),
        &[Ablation::decoder_self_attention(&gm, AblationMode::Zero).unwrap()],
        None,
        &AblationConfig::default(),
    )
    .unwrap();
    let figs: Vec<(&str, Figure)> = vec![
        (
            "lens.svg",
            Box::new(|p| figures::logit_lens_figure(&lens, p)),
        ),
        (
            "contrib.svg",
            Box::new(|p| figures::contribution_figure(&contrib, p)),
        ),
        (
            "patch.svg",
            Box::new(|p| figures::patching_figure(&patch, p)),
        ),
        (
            "heads.svg",
            Box::new(|p| figures::head_projection_figure(&heads, p)),
        ),
        ("swap.svg", Box::new(|p| figures::swap_figure(&swap, p))),
        (
            "ablation.svg",
            Box::new(|p| figures::ablation_figure(&abl, p)),
        ),
    ];
    for (name, draw) in &figs {
        let path = dir.path().join("figs").join(name);
        draw(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.len() > 1000, "{name}");
    }
    let err = figures::logit_lens_figure(&lens, &dir.path().join("lens.png")).unwrap_err();
    assert!(err.to_string().contains("SVG"), "{err}");
    // a table without the expected columns is an error, not a panic
    assert!(figures::patching_figure(&lens, &dir.path().join("x.svg")).is_err());
}

#[test]
fn empty_inputs_are_errors() {
    let gm = atomic();
    for r in [
        logit_lens(&gm, &[], &LensConfig::default()).err(),
        component_contributions(&gm, &[], &LensConfig::default()).err(),
        head_vocab_projection(&gm, &[], &HeadProjectionConfig::default()).err(),
    ] {
        assert!(matches!(r, Some(InterpError::Input(_))), "{r:?}");
    }
    let unknown = [Probe::new("q", "volcano", "no-such-doc")];
    let err = logit_lens(&gm, &unknown, &LensConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-doc"), "{err}");
}

#[test]
fn correctly_retrieved_keeps_the_queries_found_at_rank_one() {
    let gm = atomic();
    let set = train_set();
    let ok = genir_interp::correctly_retrieved(&gm, &set, 1000).unwrap();
    assert!(!ok.queries.is_empty());
    let searcher = gm.searcher().unwrap();
    let texts: Vec<String> = ok.queries.iter().map(|q| q.text.clone()).collect();
    for (q, hits) in ok.queries.iter().zip(searcher.search(&texts, 1).unwrap()) {
        assert!(
            ok.qrels.relevant(&q.qid).any(|d| d == hits[0].docid),
            "{}",
            q.qid
        );
    }
    // a query with two relevant documents: the probe names the one the model retrieves, not the first
    // judged (so the lens's "correct docid" is the retrieved one)
    let q0 = set.queries.iter().next().unwrap().clone();
    let two = QuerySet {
        queries: Queries::new(vec![q0.clone()]),
        qrels: genir_data::Qrels::new(vec![
            genir_data::Qrel::new(&q0.qid, "107", 1),
            genir_data::Qrel::new(&q0.qid, "100", 1),
        ]),
    };
    let probes = Probe::from_query_set(&genir_interp::correctly_retrieved(&gm, &two, 10).unwrap());
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].docid, "100");
    let first = genir_interp::correctly_retrieved(&gm, &set, 1).unwrap();
    assert_eq!(first.queries.len(), 1);
    assert_eq!(first.queries.iter().next(), ok.queries.iter().next());
    let none = QuerySet {
        queries: Queries::new(vec![genir_data::Query::new("x", "zzzz qqqq")]),
        qrels: genir_data::Qrels::new(vec![genir_data::Qrel::new("x", "no-such-doc", 1)]),
    };
    assert!(genir_interp::correctly_retrieved(&gm, &none, 10).is_err());
}

#[test]
fn removed_components_equal_zero_ablation_and_survive_saving() {
    use genir_model::hooks::{Hooks, Intervention, Selection};
    let gm = atomic();
    let patterns = "decoder.blocks.*.hook_self_attn_out,decoder.blocks.0.hook_mlp_out,encoder.blocks.1.hook_self_attn_out";
    let abl = Ablation::parse(&gm, "removed", patterns, AblationMode::Zero).unwrap();
    let texts: Vec<String> = train_set().queries.iter().map(|q| q.text.clone()).collect();
    let pruned = abl.prune(&gm, &texts).unwrap();
    let ids = gm.searcher().unwrap().encode_queries(&texts).unwrap();
    let start = gm.model.config.decoder_start() as u32;
    let dec: Vec<Vec<u32>> = ids.iter().map(|_| vec![start]).collect();
    let input = Seq2SeqInput::from_ids(&ids, &dec, 0, &device()).unwrap();
    let mut hooks = Hooks::none();
    for p in &abl.points {
        hooks.add(*p, Intervention::Zero(Selection::all()));
    }
    let ablated = gm.model.forward(&input, &mut hooks).unwrap();
    let removed = pruned.model.forward(&input, &mut Hooks::none()).unwrap();
    let diff: f32 = (ablated.clone() - removed.clone())
        .abs()
        .max()
        .into_scalar();
    assert!(diff <= 1e-5, "removed vs zero-ablated: {diff}");
    assert!(pruned
        .model
        .decoder
        .blocks
        .iter()
        .all(|b| b.removed.self_attn));
    assert!(
        pruned.model.decoder.blocks[0].removed.mlp && !pruned.model.decoder.blocks[1].removed.mlp
    );
    assert!(
        pruned.model.encoder.blocks[1].removed.self_attn
            && !pruned.model.encoder.blocks[0].removed.self_attn
    );
    // saved and reloaded, the components stay removed and the outputs are the same
    let dir = tempfile::tempdir().unwrap();
    pruned.save(dir.path()).unwrap();
    let back = GenirModel::load(dir.path(), &device()).unwrap();
    assert_eq!(
        back.model.removed_components(),
        pruned.model.removed_components()
    );
    assert_eq!(back.model.removed_components().len(), 4);
    assert!(back
        .model
        .decoder
        .blocks
        .iter()
        .all(|b| b.removed.self_attn));
    let again = back.model.forward(&input, &mut Hooks::none()).unwrap();
    let diff: f32 = (again - removed).abs().max().into_scalar();
    assert!(diff <= 1e-6, "reloaded: {diff}");
    // the analyses run on it: the removed self-attentions have no heads to patch or project
    let pairs = make_pairs(&probes()[..3], &Corruption::OtherQuery { seed: 1 }).unwrap();
    let cfg = PatchConfig {
        targets: vec![PatchTarget::Components, PatchTarget::Heads],
        ..PatchConfig::default()
    };
    let df = activation_patching(&back, &pairs, &cfg).unwrap();
    let (target, comp) = (strs(&df, "target"), strs(&df, "component"));
    let heads: Vec<&String> = (0..df.height())
        .filter(|&i| target[i] == "heads")
        .map(|i| &comp[i])
        .collect();
    assert!(
        !heads.is_empty() && heads.iter().all(|c| *c == "cross_attn"),
        "{heads:?}"
    );
    let projected = head_vocab_projection(
        &back,
        &probes()[..2],
        &HeadProjectionConfig {
            kind: AttnKind::SelfAttn,
            top_k: 3,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(projected.height(), 0);
    let lens = logit_lens(&back, &probes()[..2], &LensConfig::default()).unwrap();
    let lens_comp = strs(&lens, "component");
    assert!(!lens_comp.iter().any(|c| c == "self_attn_out"));
    assert!(lens_comp.iter().any(|c| c == "cross_attn_out"));
    // a mean ablation baked in: each removed output is its mean over the reference queries, equal to mean
    // ablation through hooks, kept through saving (config.json)
    let mean_patterns = "decoder.blocks.0.hook_mlp_out,decoder.blocks.1.hook_cross_attn_out,encoder.blocks.0.hook_self_attn_out";
    let mean = Ablation::parse(&gm, "m", mean_patterns, AblationMode::Mean).unwrap();
    let reference = &texts[..5];
    let mean_pruned = mean.prune(&gm, reference).unwrap();
    let mut hooks = Hooks::none();
    for (p, m) in
        genir_interp::ablation::mean_activations(&gm, reference, &mean.points, 64).unwrap()
    {
        hooks.add(
            p,
            Intervention::Mean {
                mean: m,
                selection: Selection::all(),
            },
        );
    }
    let ablated = gm.model.forward(&input, &mut hooks).unwrap();
    let removed = mean_pruned
        .model
        .forward(&input, &mut Hooks::none())
        .unwrap();
    let diff: f32 = (ablated - removed.clone()).abs().max().into_scalar();
    assert!(diff <= 1e-5, "mean-removed vs mean-ablated: {diff}");
    let plain = gm.model.forward(&input, &mut Hooks::none()).unwrap();
    let moved: f32 = (plain - removed.clone()).abs().max().into_scalar();
    assert!(moved > 1e-3, "the mean ablation changes the output");
    assert!(mean_pruned.model.decoder.blocks[1].removed.cross_attn);
    assert!(mean_pruned.model.decoder.blocks[1].removed.means[1].is_some());
    let dir = tempfile::tempdir().unwrap();
    mean_pruned.save(dir.path()).unwrap();
    let back = GenirModel::load(dir.path(), &device()).unwrap();
    let again = back.model.forward(&input, &mut Hooks::none()).unwrap();
    let diff: f32 = (again - removed).abs().max().into_scalar();
    assert!(diff <= 1e-6, "mean-removed, reloaded: {diff}");
    // zero-removing a mean-replaced component outputs zero (the mean is dropped), also after a reload
    let zero = Ablation::parse(&gm, "z", mean_patterns, AblationMode::Zero).unwrap();
    let zero_of_gm = zero.prune(&gm, &[]).unwrap();
    let zero_of_mean = zero.prune(&back, &[]).unwrap();
    assert!(zero_of_mean.model.decoder.blocks[1].removed.means[1].is_none());
    let want = zero_of_gm
        .model
        .forward(&input, &mut Hooks::none())
        .unwrap();
    let got = zero_of_mean
        .model
        .forward(&input, &mut Hooks::none())
        .unwrap();
    let diff: f32 = (want.clone() - got).abs().max().into_scalar();
    assert!(diff <= 1e-6, "zero after mean: {diff}");
    let dir2 = tempfile::tempdir().unwrap();
    zero_of_mean.save(dir2.path()).unwrap();
    let reloaded = GenirModel::load(dir2.path(), &device()).unwrap();
    let got = reloaded.model.forward(&input, &mut Hooks::none()).unwrap();
    let diff: f32 = (want - got).abs().max().into_scalar();
    assert!(diff <= 1e-6, "zero after mean, reloaded: {diff}");
    // only whole components can be removed, and a mean needs reference queries
    assert!(matches!(mean.prune(&gm, &[]), Err(InterpError::Input(_))));
    for mode in [AblationMode::Zero, AblationMode::Mean] {
        let resid = Ablation::parse(&gm, "r", "decoder.blocks.0.hook_resid_post", mode).unwrap();
        let err = resid.prune(&gm, &texts).unwrap_err().to_string();
        assert!(err.contains("hook_resid_post"), "{err}");
    }
}
