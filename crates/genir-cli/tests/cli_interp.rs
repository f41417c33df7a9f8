//! `genir interp` and `genir edit` on a model trained by `genir train`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn genir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_genir"))
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "genir failed: {err}");
    err
}

fn interp(args: &[&str], model: &Path, out: &Path) -> Output {
    genir()
        .arg("interp")
        .args(args)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run genir")
}

/// A small model trained once for all tests of this file (read-only: edits work on copies).
fn trained() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        train(&tmp.path().join("dsi"));
        tmp
    });
    dir.path().join("dsi")
}

fn train(model: &Path) {
    ok(&genir()
        .args([
            "train",
            "--corpus",
            "wiki-genir-mini",
            "--d-model",
            "64",
            "--d-ff",
            "256",
            "--layers",
            "2",
            "--heads",
            "4",
            "--text-vocab",
            "1000",
            "--epochs",
            "12",
            "--out",
        ])
        .arg(model)
        .output()
        .unwrap());
}

#[test]
fn every_analysis_writes_tables_and_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained();
    let out = tmp.path().join("interp");
    let runs: [(&[&str], &str); 7] = [
        (&["lens", "--probes", "8", "--encoder"], "encoder_lens"),
        (&["contributions", "--probes", "8"], "contributions"),
        (
            &[
                "patch",
                "--probes",
                "8",
                "--pairs",
                "4",
                "--corruption",
                "relevant-terms",
            ],
            "patching",
        ),
        (
            &["patch", "--probes", "8", "--pairs", "3", "--attribution"],
            "attribution",
        ),
        (
            &["stages", "--probes", "8", "--pairs", "4"],
            "path_patching",
        ),
        (
            &["heads", "--probes", "4", "--top-k", "3"],
            "head_projection",
        ),
        (
            &[
                "ablate",
                "--probes",
                "8",
                "--points",
                "decoder.blocks.*.hook_self_attn_out",
                "--points",
                "decoder.blocks.1.hook_mlp_out",
                "--mode",
                "zero",
            ],
            "ablation",
        ),
    ];
    for (args, stem) in runs {
        let log = ok(&interp(args, &model, &out));
        assert!(log.contains("retrieved at rank 1"), "{log}");
        for ext in ["parquet", "csv", "svg", "png"] {
            let p = out.join(format!("{stem}.{ext}"));
            assert!(
                std::fs::metadata(&p).unwrap().len() > 0,
                "{} missing",
                p.display()
            );
        }
    }
    for stem in ["stages", "minimal_circuit", "logit_lens"] {
        assert!(out.join(format!("{stem}.png")).exists(), "{stem}");
    }
    let stages = std::fs::read_to_string(out.join("stages.csv")).unwrap();
    assert!(stages.starts_with("layer,stage,"), "{stages}");
    // a zero ablation saved as a model with the components removed (own output folder: the ablation table
    // of the runs above is checked below)
    let pruned = tmp.path().join("pruned");
    let out_pruned = tmp.path().join("interp-pruned");
    let log = ok(&interp(
        &[
            "ablate",
            "--probes",
            "4",
            "--points",
            "decoder.blocks.*.hook_self_attn_out",
            "--mode",
            "zero",
            "--save-removed",
            pruned.to_str().unwrap(),
        ],
        &model,
        &out_pruned,
    ));
    assert!(log.contains("components removed"), "{log}");
    let config = std::fs::read_to_string(pruned.join("config.json")).unwrap();
    assert!(config.contains("genir_removed_components"), "{config}");
    // a mean ablation saved: the means go into config.json
    let pruned_mean = tmp.path().join("pruned-mean");
    let log = ok(&interp(
        &[
            "ablate",
            "--probes",
            "4",
            "--points",
            "decoder.blocks.0.hook_mlp_out",
            "--save-removed",
            pruned_mean.to_str().unwrap(),
        ],
        &model,
        &out_pruned,
    ));
    assert!(log.contains("components removed"), "{log}");
    let config = std::fs::read_to_string(pruned_mean.join("config.json")).unwrap();
    assert!(config.contains("genir_removed_means"), "{config}");
    // an existing model folder is never overwritten
    let o = interp(
        &[
            "ablate",
            "--points",
            "decoder.blocks.0.hook_mlp_out",
            "--save-removed",
            pruned_mean.to_str().unwrap(),
        ],
        &model,
        &out_pruned,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("must be a new folder"));
    let fresh = out_pruned.join("fresh");
    let o = interp(
        &[
            "ablate",
            "--points",
            "decoder.blocks.0.hook_resid_post",
            "--save-removed",
            fresh.to_str().unwrap(),
        ],
        &model,
        &out_pruned,
    );
    assert!(!o.status.success(), "a residual stream is not a component");
    assert!(String::from_utf8_lossy(&o.stderr).contains("hook_resid_post"));
    let agreement = std::fs::read_to_string(out.join("attribution_agreement.csv")).unwrap();
    assert!(
        agreement.starts_with("target,n,pearson,mean_abs_diff") && agreement.contains("\nall,"),
        "{agreement}"
    );
    let o = interp(
        &["patch", "--attribution", "--metric", "reciprocal-rank"],
        &model,
        &out,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--attribution"));
    let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        4,
        "header + none + two ablations:\n{csv}"
    );
    let log = ok(&genir()
        .args(["interp", "swap", "--encoder"])
        .arg(&model)
        .arg("--decoder")
        .arg(&model)
        .args(["--unseen", "0,1", "--out"])
        .arg(&out)
        .output()
        .unwrap());
    assert!(log.contains("Hits@1"), "{log}");
    assert!(out.join("encoder_swap.png").exists());

    // clear errors
    let o = interp(&["patch", "--corruption", "prefix"], &model, &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--decoder-prefix"));
    let o = interp(&["lens", "--probes", "0"], &model, &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--probes"));
    let o = interp(
        &["ablate", "--points", "decoder.blocks.*.hook_nope"],
        &model,
        &out,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("hook_nope"));
    let o = interp(&["lens", "--split", "nope"], &model, &out);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--split") && e.contains("no query split `nope`"),
        "{e}"
    );
    let o = interp(&["lens"], &tmp.path().join("no-model"), &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-model"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn edit(args: &[&str], model: &Path) -> Output {
    genir()
        .arg("edit")
        .args(args)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap()
}

fn top(model: &Path, query: &str) -> String {
    let o = genir()
        .args(["search", "--model"])
        .arg(model)
        .args(["-k", "1", query])
        .output()
        .unwrap();
    ok(&o);
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn edits_add_delete_change_list_undo_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    copy_dir(&trained(), &model);
    let original = std::fs::read(model.join("model.safetensors")).unwrap();
    let text = "Zyxwv quorbl flanges are ceramic widgets made in Plimpton since 1907. \
                The flanges glow blue when cooled below freezing.";
    ok(&edit(
        &[
            "add",
            "--docid",
            "new-1",
            "--text",
            text,
            "--query",
            "zyxwv quorbl flanges",
        ],
        &model,
    ));
    let found = top(
        &model,
        "Zyxwv quorbl flanges are ceramic widgets made in Plimpton",
    );
    assert!(
        found.contains("new-1"),
        "the added document is found by its own text:\n{found}"
    );
    ok(&edit(&["delete", "--docid", "new-1"], &model));
    let found = top(
        &model,
        "Zyxwv quorbl flanges are ceramic widgets made in Plimpton",
    );
    assert!(!found.contains("new-1"), "deleted:\n{found}");
    let list = edit(&["list"], &model);
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listed.contains("add") && listed.contains("delete"),
        "{listed}"
    );
    // replay on a fresh copy of the base model gives the same bits
    let copy = tmp.path().join("copy");
    copy_dir(&trained(), &copy);
    ok(&genir()
        .args(["edit", "replay", "--from"])
        .arg(&model)
        .arg("--onto")
        .arg(&copy)
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read(copy.join("model.safetensors")).unwrap(),
        std::fs::read(model.join("model.safetensors")).unwrap()
    );
    // undo both: the original bits
    ok(&genir()
        .args(["edit", "undo", "-n", "2", "--model"])
        .arg(&model)
        .output()
        .unwrap());
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        original
    );
    // change twice (two runs): the second run knows the first one's text from the edit log, and the
    // content that went no longer finds the document
    let (first, second) = (
        "An entirely rewritten passage about glass blowing in Murano.",
        "Quorbl tides of the Fundy bay rise sixteen metres twice a day.",
    );
    let top_docid = |q: &str| {
        let out = top(&model, q);
        let line = out.lines().find(|l| l.trim_start().starts_with("1 "));
        line.and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    };
    ok(&edit(&["change", "--docid", "0", "--text", first], &model));
    assert_eq!(top_docid(first).as_deref(), Some("0"));
    ok(&edit(&["change", "--docid", "0", "--text", second], &model));
    assert_eq!(top_docid(second).as_deref(), Some("0"));
    assert_ne!(top_docid(first).as_deref(), Some("0"));
    let o = edit(&["add", "--docid", "0", "--text", "dup"], &model);
    assert!(!o.status.success());
    let o = edit(&["add", "--text", "no docid"], &model);
    assert!(!o.status.success());
    let o = edit(
        &["add", "--docid", "x", "--text", "t", "--method", "bogus"],
        &model,
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("bogus"));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"docid\": \"a\", \"text\": \"ok\"}\nnot json\n").unwrap();
    let o = genir()
        .args(["edit", "add", "--jsonl"])
        .arg(&bad)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.jsonl:2"));
}
