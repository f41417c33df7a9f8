//! `genir cache` end to end on the committed fixture model.

use std::path::Path;
use std::process::Command;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../genir-model/tests/fixtures/t5/relu-tied")
}

fn genir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_genir"))
}

#[test]
fn cache_writes_logits_and_hooks_matching_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("acts.safetensors");
    let status = genir()
        .args(["cache", "--model"])
        .arg(fixture())
        .args([
            "--source",
            "The quick brown fox.",
            "--target-ids",
            "0,5",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    assert!(names.contains(&"logits".to_string()));
    assert!(names.contains(&"decoder.blocks.2.cross_attn.hook_z".to_string()));
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.shape(), &[1, 2, 312]);
    assert_eq!(
        st.tensor("decoder.blocks.0.cross_attn.hook_z")
            .unwrap()
            .shape(),
        &[1, 2, 4, 8]
    );
    assert_eq!(
        st.tensor("decoder.blocks.0.cross_attn.hook_pattern")
            .unwrap()
            .shape()[..3],
        [1, 4, 2]
    );

    // Source 1 of the reference batch is "The quick brown fox."; its logits at the first position match
    // Hugging Face's (decoder input 0 in both).
    let reference = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&reference).unwrap();
    let want = reference.tensor("logits").unwrap();
    let f = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let want = f(want.data());
    let got = f(logits.data());
    let v = 312;
    let row = &want[32 * v..32 * v + v]; // batch 1, position 0
    let diff = got[..v]
        .iter()
        .zip(row)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn filters_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("acts.safetensors");
    let ok = genir()
        .args(["cache", "--model"])
        .arg(fixture())
        .args([
            "--source",
            "a",
            "--source",
            "b c d",
            "--target-ids",
            "0",
            "--hooks",
            "decoder.blocks.*.hook_resid_post",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 4); // logits + 3 decoder blocks
    assert_eq!(
        st.tensor("decoder.blocks.1.hook_resid_post")
            .unwrap()
            .shape(),
        &[2, 1, 32]
    );

    let bad = genir()
        .args(["cache", "--model"])
        .arg(fixture())
        .args([
            "--source",
            "a",
            "--target-ids",
            "0",
            "--hooks",
            "decoder.blocks.*.hook_resid_pst",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown hook point") && err.contains("hook_resid_post"),
        "{err}"
    );

    let bad = genir()
        .args([
            "cache",
            "--model",
            "/nonexistent/model",
            "--source",
            "a",
            "--target-ids",
            "0",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/model"));

    let bad = genir()
        .args(["cache", "--model"])
        .arg(fixture())
        .args(["--source", "a", "--target-ids", "0,99999", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("99999"));

    let bad = genir()
        .args(["--backend", "tpu", "cache"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

fn bert_fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../genir-model/tests/fixtures/bert")
        .join(name)
}

#[test]
fn cache_reads_bert_family_folders() {
    let dir = tempfile::tempdir().unwrap();
    // A sentence-transformers bi-encoder: no --target-ids, a pooled `embedding`.
    let out = dir.path().join("dot.safetensors");
    let run = genir()
        .args(["cache", "--model"])
        .arg(bert_fixture("bert-dot-bin"))
        .args(["--source", "the cat sat", "--source", "a dog", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let emb = st.tensor("embedding").unwrap();
    assert_eq!(emb.shape()[0], 2);
    let hidden = st.tensor("last_hidden_state").unwrap();
    assert_eq!(hidden.shape()[0], 2);
    assert_eq!(hidden.shape()[2], emb.shape()[1]);
    assert!(st.tensor("encoder.blocks.0.self_attn.hook_pattern").is_ok());
    // The embedding of a normalising bi-encoder has unit norm.
    let v: Vec<f32> = emb
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let d = emb.shape()[1];
    let norm: f32 = v[..d].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");

    // A cross-encoder: `logits`, hooks filtered.
    let out = dir.path().join("cat.safetensors");
    let run = genir()
        .args(["cache", "--model"])
        .arg(bert_fixture("bert-cat"))
        .args([
            "--source",
            "the cat sat",
            "--hooks",
            "encoder.blocks.*.hook_resid_post",
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
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("logits").unwrap().shape(), &[1, 1]);
    assert_eq!(st.len(), 2 + 3); // logits, last_hidden_state, 3 blocks
                                 // T5 still needs --target-ids.
    let bad = genir()
        .args(["cache", "--model"])
        .arg(fixture())
        .args(["--source", "a", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--target-ids"));
}
