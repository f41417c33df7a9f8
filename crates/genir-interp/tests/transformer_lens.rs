//! genir's logit lens, component measures and zero / mean ablations against TransformerLens, the tool of the
//! paper's code (technion-cs-nlp/re-gen-ir), on the same checkpoint: a small ReLU T5 with atomic docid tokens
//! added the paper's way. `tools/reference/make_tl_interp_fixture.py` (run by hand) built the checkpoint and
//! computed `expected.json` with TransformerLens's `HookedEncoderDecoder`, as the paper's
//! `eval_residual_rank.py` and its zero and mean patching scripts do (decoder input [[0]]; the lens reads each
//! hook through the final norm, the tied head's d_model^-0.5 and the unembedding; a mean ablation puts each
//! output's mean over reference queries at the first position). Ranks and ablation results must be equal; the
//! measures agree within 1e-4 (relative).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use genir_data::{Qrel, Qrels, Queries, Query, QuerySet, Table};
use genir_interp::ablation::{ablation_study, Ablation, AblationConfig, AblationMode};
use genir_interp::lens::{component_contributions, logit_lens, LensConfig};
use genir_interp::Probe;
use genir_train::bundle::GenirModel;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tl-dsi")
}

#[derive(serde::Deserialize)]
struct Expected {
    pattern: String,
    probes: Vec<ExpectedProbe>,
    lens: Vec<LensRow>,
    contributions: Vec<ContributionRow>,
    reference: Vec<String>,
    ablations: Vec<AblationRow>,
}

#[derive(serde::Deserialize)]
struct ExpectedProbe {
    qid: String,
    text: String,
    docid: String,
}

#[derive(serde::Deserialize)]
struct LensRow {
    qid: String,
    layer: i64,
    component: String,
    rank: i64,
}

#[derive(serde::Deserialize)]
struct ContributionRow {
    qid: String,
    layer: i64,
    component: String,
    norm: f64,
    ratio_to_delta: f64,
    cos_resid_post: f64,
}

/// Reads one measure of a row.
type Measure = fn(&ContributionRow) -> f64;

#[derive(serde::Deserialize)]
struct AblationRow {
    mode: String,
    points: Vec<String>,
    hits_at_1: f64,
    hits_at_10: f64,
    mrr_at_10: f64,
}

fn setup() -> (GenirModel, Expected, Vec<Probe>) {
    let exp: Expected =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let gm = GenirModel::import_atomic(&fixture(), &exp.pattern.parse().unwrap(), &Device::flex())
        .unwrap();
    let probes = exp
        .probes
        .iter()
        .map(|p| Probe::new(&p.qid, &p.text, &p.docid))
        .collect();
    (gm, exp, probes)
}

/// `(qid, layer, component)` of each row, and the table's `column`.
fn keyed(df: &Table, column: &str) -> HashMap<(String, i64, String), f64> {
    let qid = df.strs("qid").unwrap();
    let layer = df.column("layer").unwrap().i64s().unwrap();
    let comp = df.strs("component").unwrap();
    let values = df.f64s(column).unwrap();
    qid.into_iter()
        .zip(layer)
        .zip(comp)
        .zip(values)
        .map(|(((q, l), c), v)| ((q, l, c), v))
        .collect()
}

#[test]
fn the_logit_lens_ranks_are_transformer_lens_ranks() {
    let (gm, exp, probes) = setup();
    // genir's own retrieval agrees on the probes: each is its query's top docid
    let hits = gm
        .searcher()
        .unwrap()
        .search(
            &probes.iter().map(|p| p.text.clone()).collect::<Vec<_>>(),
            1,
        )
        .unwrap();
    for (p, h) in probes.iter().zip(&hits) {
        assert_eq!(h[0].docid, p.docid, "{}", p.qid);
    }
    let df = logit_lens(&gm, &probes, &LensConfig::default()).unwrap();
    let got = keyed(&df, "rank");
    assert_eq!(
        got.len(),
        exp.lens.len(),
        "one genir row per TransformerLens row"
    );
    for r in &exp.lens {
        let g = got[&(r.qid.clone(), r.layer, r.component.clone())];
        assert_eq!(
            g, r.rank as f64,
            "{} layer {} {}: genir rank {g}, TransformerLens {}",
            r.qid, r.layer, r.component, r.rank
        );
    }
    // not a degenerate fixture: the ranks vary across components
    let distinct: std::collections::BTreeSet<i64> = exp.lens.iter().map(|r| r.rank).collect();
    assert!(distinct.len() > 10, "{distinct:?}");
}

#[test]
fn component_measures_are_transformer_lens_measures() {
    let (gm, exp, probes) = setup();
    let df = component_contributions(&gm, &probes, &LensConfig::default()).unwrap();
    let columns: [(&str, Measure); 3] = [
        ("norm", |r| r.norm),
        ("ratio_to_delta", |r| r.ratio_to_delta),
        ("cos_resid_post", |r| r.cos_resid_post),
    ];
    for (column, want) in columns {
        let got = keyed(&df, column);
        for r in &exp.contributions {
            let g = got[&(r.qid.clone(), r.layer, r.component.clone())];
            let w = want(r);
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{} layer {} {} {column}: genir {g}, TransformerLens {w}",
                r.qid,
                r.layer,
                r.component
            );
        }
    }
}

#[test]
fn zero_and_mean_ablations_give_transformer_lens_results() {
    let (gm, exp, probes) = setup();
    let set = QuerySet {
        queries: Queries::new(probes.iter().map(|p| Query::new(&p.qid, &p.text)).collect()),
        qrels: Qrels::new(
            probes
                .iter()
                .map(|p| Qrel::new(&p.qid, &p.docid, 1))
                .collect(),
        ),
    };
    let ablations: Vec<Ablation> = exp
        .ablations
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mode = match a.mode.as_str() {
                "zero" => AblationMode::Zero,
                _ => AblationMode::Mean,
            };
            Ablation::parse(&gm, &format!("a{i}"), &a.points.join(","), mode).unwrap()
        })
        .collect();
    assert!(exp.ablations.iter().any(|a| a.mode == "mean"));
    let df = ablation_study(
        &gm,
        &set,
        &ablations,
        Some(&exp.reference),
        &AblationConfig::default(),
    )
    .unwrap();
    let labels = df.strs("label").unwrap();
    for (i, a) in exp.ablations.iter().enumerate() {
        let row = labels.iter().position(|l| *l == format!("a{i}")).unwrap();
        for (column, want) in [
            ("hits_at_1", a.hits_at_1),
            ("hits_at_10", a.hits_at_10),
            ("mrr_at_10", a.mrr_at_10),
        ] {
            let g = df.f64s(column).unwrap()[row];
            assert!(
                (g - want).abs() < 1e-9,
                "{} {:?} {column}: genir {g}, TransformerLens {want}",
                a.mode,
                a.points
            );
        }
    }
    // the fixture's ablations differ from each other (not all 0 or all 1)
    let distinct: std::collections::BTreeSet<u64> = exp
        .ablations
        .iter()
        .map(|a| (a.hits_at_1 * 1e6) as u64)
        .collect();
    assert!(distinct.len() >= 3, "{distinct:?}");
}
