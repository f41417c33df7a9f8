//! `genir train / search / eval` end to end on the shipped mini corpus, including a run killed with SIGKILL
//! and resumed.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn genir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_genir"))
}

const TINY: [&str; 22] = [
    "--corpus",
    "wiki-genir-mini",
    "--d-model",
    "48",
    "--d-ff",
    "96",
    "--layers",
    "1",
    "--heads",
    "2",
    "--text-vocab",
    "600",
    "--batch-size",
    "16",
    "--max-source-len",
    "32",
    "--warmup",
    "10",
    "--lr",
    "0.005",
    "--checkpoint-every",
    "8",
];

fn train(out: &Path, extra: &[&str]) -> Output {
    genir()
        .arg("train")
        .args(TINY)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run genir")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "genir failed: {err}");
    String::from_utf8_lossy(&o.stdout).to_string() + &err
}

#[test]
fn a_killed_run_resumes_to_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(&train(&straight, &["--epochs", "3"]));

    let killed = tmp.path().join("killed");
    let mut child = genir()
        .arg("train")
        .args(TINY)
        .arg("--out")
        .arg(&killed)
        .args(["--epochs", "3"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let t0 = Instant::now();
    while !latest.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(still_running, "the run finished before it could be killed");
    assert!(
        !killed.join("model.safetensors").exists(),
        "killed before the end"
    );

    ok(&train(&killed, &["--epochs", "3", "--resume"]));
    let a = std::fs::read(straight.join("model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed run's weights differ from the uninterrupted run's"
    );

    // search prints ranked docids with titles; eval writes a TREC run and per-query Parquet
    let out = ok(&genir()
        .args(["search", "--model"])
        .arg(&straight)
        .args(["-k", "3", "anarchism political philosophy"])
        .output()
        .unwrap());
    assert!(
        out.contains("query: anarchism political philosophy"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  ")).count(),
        3,
        "{out}"
    );
    let run = tmp.path().join("test.run");
    let pq = tmp.path().join("test.parquet");
    let out = ok(&genir()
        .args(["eval", "--model"])
        .arg(&straight)
        .args(["--split", "test", "-k", "10", "--run-out"])
        .arg(&run)
        .arg("--parquet")
        .arg(&pq)
        .output()
        .unwrap());
    assert!(out.contains("Hits@1") && out.contains("MRR@10"), "{out}");
    let lines = std::fs::read_to_string(&run).unwrap();
    assert!(lines.lines().count() >= 10, "{lines}");
    assert!(pq.exists());
}

#[test]
fn bad_arguments_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train(&tmp.path().join("x"), &["--docids", "bogus"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("unknown docid scheme \"bogus\""), "{e}");

    let o = genir()
        .args(["train", "--corpus", "no-such-corpus", "--out"])
        .arg(tmp.path().join("y"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("no-such-corpus"), "{e}");

    let o = genir()
        .args(["eval", "--model"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("docids.json"), "{e}");

    let o = genir().args(["train", "--help"]).output().unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    assert!(h.contains("Examples:") && h.contains("--resume"), "{h}");
}
