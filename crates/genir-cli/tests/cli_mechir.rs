//! `genir mechir patch` end to end on the committed tiny cross-encoder and the shipped collection.

use std::path::Path;
use std::process::Command;

#[test]
fn mechir_patch_writes_tables_and_figures() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../genir-model/tests/fixtures/bert/bert-cat");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let run = Command::new(env!("CARGO_BIN_EXE_genir"))
        .args(["mechir", "patch", "--model"])
        .arg(&model)
        .args([
            "--kind",
            "cat",
            "--dataset", // the spelling of --corpus
            "wiki-genir-mini",
            "--pairs",
            "3",
            "--perturbation",
            "tfc1",
            "--patch",
            "both",
            "--query-max-length",
            "8",
            "--doc-max-length",
            "48",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for f in [
        "blocks.parquet",
        "blocks.csv",
        "blocks.svg",
        "blocks.png",
        "heads.parquet",
        "heads.csv",
        "heads.svg",
        "heads.png",
        "pairs.parquet",
        "pairs.csv",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("heads.csv")).unwrap();
    assert!(csv.starts_with("layer,head,position,value"));
    assert_eq!(csv.lines().count(), 1 + 3 * 4);
    let bad = Command::new(env!("CARGO_BIN_EXE_genir"))
        .args(["mechir", "patch", "--model"])
        .arg(&model)
        .args(["--kind", "cat", "--perturbation", "nope", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown perturbation"));
}
