//! The whole study at smoke scale: every step runs, the report is complete, a second run comes from the cache,
//! and the page renders in headless Chromium with every figure loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use genir_model::device::Backend;
use genir_train::bundle::GenirModel;
use genir_train::train::Init;
use xtask::{reproduce, Options, Scale};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GENIR_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Opens `index.html` from disk in headless Chromium and returns (figures loaded, figures failed).
fn render(report: &Path, browser: &Path) -> (usize, usize, usize) {
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    // the same page plus a script that records, after load, whether every image decoded
    let probe = r#"<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const d = document.createElement('div');
  d.id = 'figure-check';
  d.textContent = 'loaded=' + ok + ' failed=' + (imgs.length - ok) + ' total=' + imgs.length;
  document.body.appendChild(d);
});</script></body>"#;
    let check = report.join("check.html");
    std::fs::write(&check, html.replace("</body>", probe)).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
        ])
        .arg(format!(
            "file://{}",
            check.canonicalize().unwrap().display()
        ))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let line = dom
        .split("id=\"figure-check\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| {
            panic!(
                "no figure check in the rendered page; chromium stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let num = |k: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line:?}"))
    };
    (num("loaded"), num("failed"), num("total"))
}

/// The smoke study on the mini corpus, report and work folders under `tmp`, no MechIR models.
fn smoke_options(tmp: &Path) -> Options {
    Options {
        corpus: None,
        scale: Scale::Smoke,
        report: tmp.join("report"),
        work: tmp.join("work"),
        backend: Backend::Flex,
        bi_encoder: None,
        cross_encoder: None,
        force: false,
        progress: false,
        pretrained: None,
        epochs: None,
        lr: None,
    }
}

#[test]
fn smoke_study_writes_a_complete_report_that_renders_in_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let bi = workspace().join("models/all-MiniLM-L6-v2");
    let opts = Options {
        bi_encoder: Some(bi.clone()),
        cross_encoder: Some(tmp.path().join("no-cross-encoder")),
        ..smoke_options(tmp.path())
    };
    let s = reproduce(&opts).unwrap();
    let report = &opts.report;

    // every step ran, every figure and table is there
    assert!(s.steps.iter().all(|r| !r.cached));
    for name in [
        "train_base",
        "train_missing",
        "evaluate",
        "swap",
        "logit_lens",
        "encoder_lens",
        "contributions",
        "patching",
        "head_projection",
        "ablation",
        "stages",
        "multi_token",
        "edits",
    ] {
        assert!(
            s.steps.iter().any(|r| r.name == name),
            "step {name} missing"
        );
    }
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    let md = std::fs::read_to_string(report.join("README.md")).unwrap();
    // multi-token docids: the lens per step and both patching experiments
    let mt = &s.multi_token;
    assert!(mt.trained.is_some() && mt.probes >= 2, "{mt:?}");
    assert!(mt.lens.iter().any(|r| r.step == 1), "{:?}", mt.lens);
    for e in ["query", "prefix"] {
        assert!(
            mt.patching
                .iter()
                .any(|r| r.experiment == e && r.step == 1 && r.self_attn.is_finite()),
            "{e}: {:?}",
            mt.patching
        );
    }
    assert!(md.contains("7c. Multi-token docids"));
    assert!(md.contains(
        "is trained from scratch on the shipped mini corpus (179 passages, the smoke architecture"
    ));
    assert_eq!(
        s.multi_token.config.as_ref().map(|c| &c.init),
        Some(&Init::Scratch(Scale::Smoke.params().arch))
    );
    assert!(s.figures.len() >= 6);
    for f in &s.figures {
        for ext in ["svg", "png"] {
            let p = report.join("figures").join(format!("{}.{ext}", f.stem));
            assert!(
                std::fs::metadata(&p).unwrap().len() > 100,
                "{}",
                p.display()
            );
        }
        assert!(html.contains(&format!("figures/{}.svg", f.stem)));
        assert!(md.contains(&format!("figures/{}.svg", f.stem)));
    }
    for t in [
        "logit_lens",
        "contributions",
        "patching",
        "head_projection",
        "ablation",
        "encoder_swap",
        "stages",
        "path_patching",
        "minimal_circuit",
        "attribution",
        "attribution_agreement",
        "edits",
    ] {
        for ext in ["parquet", "csv"] {
            assert!(
                report.join("tables").join(format!("{t}.{ext}")).exists(),
                "{t}.{ext}"
            );
        }
    }
    // the numbers are the models': the base model memorises its training queries, the logit lens at the
    // last layer's output puts every probe's docid at rank 1 (the probes are queries it retrieves at rank 1)
    let train = s
        .models
        .iter()
        .find(|m| m.model == "base" && m.split == "train")
        .unwrap();
    assert!(
        train.hits_at_1 > 0.5,
        "base train Hits@1 {}",
        train.hits_at_1
    );
    let last = s.params.arch.layers as i64 - 1;
    let lens_last = s
        .lens
        .iter()
        .find(|r| r.layer == last && r.component == "resid_post")
        .unwrap();
    assert_eq!(lens_last.top1, 1.0);
    // the stage split is derived from the data and the minimal circuit evaluated on it
    let st = &s.stages;
    assert_eq!(st.layers, s.params.arch.layers);
    assert!(st.bridging_start <= st.interaction_start && st.interaction_start <= st.layers);
    assert_eq!(st.evidence.len(), st.layers);
    assert!(st.full_hits_at_1 > 0.99, "probes are retrieved at rank 1");
    assert!((0.0..=1.0).contains(&st.circuit_hits_at_1));
    assert!(!st.top_paths.is_empty());
    let all = st.attribution.iter().find(|r| r.target == "all").unwrap();
    assert!(all.n > 0 && (all.pearson.is_nan() || all.pearson.abs() <= 1.0 + 1e-9));
    let edits = &s.edits.as_ref().unwrap().report;
    assert!(edits.rows.len() >= 3);
    // the references: the base model on held-out queries of its documents, BM25 on those and on the success
    // queries; every one measured on some queries, and shown in the report
    assert_eq!(edits.references.len(), 3, "{:?}", edits.references);
    for r in &edits.references {
        assert!(r.queries > 0, "{r:?}");
        assert!(
            (0.0..=1.0).contains(&r.hits_at_1) && r.hits_at_1 <= r.hits_at_10,
            "{r:?}"
        );
    }
    assert!(md.contains("bm25: success queries of the added documents"));
    assert!(report.join("tables/edits_references.csv").exists());
    if bi.join("config.json").exists() {
        assert_eq!(
            s.mechir.len(),
            2,
            "TFC1 and TDC head patching of the bi-encoder"
        );
        // the bi-encoder's dense retrieval on the same two query sets, in the report's reference table
        assert!(s.steps.iter().any(|r| r.name == "edits_dense"));
        assert_eq!(s.edits_dense.len(), 2, "{:?}", s.edits_dense);
        for (d, bm25) in s.edits_dense.iter().zip(&edits.references[1..]) {
            assert_eq!(d.queries, bm25.queries, "{d:?} {bm25:?}");
            assert!((0.0..=1.0).contains(&d.hits_at_1) && d.hits_at_1 <= d.hits_at_10);
        }
        assert!(md.contains("dense all-MiniLM-L6-v2: success queries of the added documents"));
        assert!(report.join("tables/edits_dense.csv").exists());
    } else {
        eprintln!(
            "note: {} absent: MechIR and dense reference steps skipped",
            bi.display()
        );
        assert!(!s.mechir_skipped.is_empty());
        assert!(s.edits_dense.is_empty());
    }
    assert!(s
        .mechir_skipped
        .iter()
        .any(|r| r.contains("no-cross-encoder")));
    assert!(html.contains("Skipped: cat:"));

    // a second run takes every step from the cache and writes the same tables
    let again = reproduce(&opts).unwrap();
    assert!(again.steps.iter().all(|r| r.cached), "{:?}", again.steps);
    assert_eq!(again.models.len(), s.models.len());
    for (a, b) in again.models.iter().zip(&s.models) {
        // serde_json's default float parsing may differ in the last bit
        assert!(
            (a.hits_at_1 - b.hits_at_1).abs() < 1e-12 && (a.mrr_at_10 - b.mrr_at_10).abs() < 1e-12
        );
    }

    // the page opens from disk with every figure
    match chromium() {
        Some(browser) => {
            let (loaded, failed, total) = render(report, &browser);
            assert_eq!(failed, 0, "{failed} of {total} figures failed to load");
            assert_eq!(loaded, s.figures.len());
        }
        None if std::env::var_os("GENIR_REQUIRE_CHROMIUM").is_some() => {
            panic!("GENIR_REQUIRE_CHROMIUM is set but no chromium was found")
        }
        None => eprintln!("skipped the browser check: no chromium (apt-get install chromium)"),
    }
}

#[test]
fn a_pretrained_study_fine_tunes_that_folder_and_describes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = workspace().join("crates/genir-model/tests/fixtures/t5/gated-untied");
    let opts = Options {
        pretrained: Some(fixture.clone()),
        epochs: Some(14),
        lr: Some(2e-3),
        ..smoke_options(tmp.path())
    };
    let s = reproduce(&opts).unwrap();
    // the models are the pretrained architecture (3 encoder + 2 decoder layers, gated GELU, untied head) with
    // its own 300-token tokenizer and a row per docid, trained with this run's epochs and learning rate
    assert_eq!(s.train_config.init, Init::Pretrained(fixture.clone()));
    assert_eq!((s.train_config.epochs, s.train_config.lr), (14, 2e-3));
    let c = s.model_config.as_ref().unwrap();
    assert_eq!((c.d_model, c.num_layers, c.decoder_layers()), (32, 3, 2));
    assert!(c.gated() && !c.tied_head());
    let base = GenirModel::load(&s.trained["base"].dir, &Device::flex()).unwrap();
    assert_eq!(base.model.config.d_model, 32);
    assert_eq!(base.scheme.token_offset as usize, 300);
    // the analyses ran on its 2 decoder layers: the logit lens of the last one ranks every probe's docid first
    assert_eq!(s.stages.layers, 2);
    let lens_last = s
        .lens
        .iter()
        .find(|r| r.layer == 1 && r.component == "resid_post")
        .unwrap();
    assert_eq!(lens_last.top1, 1.0);
    assert!(s.edits.as_ref().unwrap().report.rows.len() >= 3);
    // the multi-token model is the same folder fine-tuned with naive docids (a token per digit after its
    // 300-token vocabulary), with this run's learning rate and at least 30 epochs
    let mt = &s.multi_token;
    let mt_cfg = mt.config.as_ref().unwrap();
    assert_eq!(mt_cfg.init, Init::Pretrained(fixture.clone()));
    assert_eq!((mt_cfg.epochs, mt_cfg.lr), (30, 2e-3));
    let mt_model = GenirModel::load(&mt.trained.as_ref().unwrap().dir, &Device::flex()).unwrap();
    assert_eq!(mt_model.model.config.d_model, 32);
    assert!(!mt_model.scheme.is_atomic());
    assert_eq!(mt_model.scheme.token_offset as usize, 300);
    let md = std::fs::read_to_string(opts.report.join("README.md")).unwrap();
    assert!(
        md.contains(&format!(
            "naive docids (each digit of the docid a token, then `</s>`; the paper's multi-token setting) is fine-tuned from the pretrained `{}`",
            fixture.display()
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "T5 fine-tuned from the pretrained `{}`: d_model 32, d_ff 64 (gated-gelu), 3 encoder + 2 decoder layers",
            fixture.display()
        )),
        "{md}"
    );
    assert!(md.contains("AdamW lr 0.002"));
    // both MechIR models were left out, with the reason
    assert_eq!(s.mechir_skipped.len(), 2, "{:?}", s.mechir_skipped);
}

#[test]
fn a_pretrained_study_works_in_its_own_folder_and_needs_a_model_folder() {
    let flan = Path::new("models/flan-t5-small-traceforge");
    assert_eq!(
        Options::default_work(Scale::Default, Some(flan), Backend::Flex),
        Path::new("target/reproduce/default-flan-t5-small-traceforge")
    );
    assert_eq!(
        Options::default_work(Scale::Paper, None, Backend::Flex),
        Path::new("target/reproduce/paper")
    );
    // another backend's numbers and times are kept apart
    assert_eq!(
        Options::default_work(Scale::Paper, None, Backend::Wgpu),
        Path::new("target/reproduce/paper-wgpu")
    );
    // a folder that is not a model is refused before any step runs
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        pretrained: Some(tmp.path().join("no-model")),
        ..smoke_options(tmp.path())
    };
    let err = format!("{:#}", reproduce(&opts).unwrap_err());
    assert!(
        err.contains("--pretrained") && err.contains("no-model") && err.contains("no config.json"),
        "{err}"
    );
    assert!(!tmp.path().join("work/steps").exists());
}
