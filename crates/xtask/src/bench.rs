//! `cargo xtask bench`: runs the criterion benchmarks on every backend asked for (and built), the PyTorch
//! baselines where a Python with torch + transformers is given, and writes the results as a Markdown section
//! (ratios against the PyTorch run of the same session).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One criterion benchmark that `cargo xtask bench` runs.
#[derive(Clone, Copy, Debug)]
pub struct BenchTarget {
    /// Package.
    pub package: &'static str,
    /// `[[bench]]` name.
    pub bench: &'static str,
    /// Whether `--quick` (CI) runs it.
    pub quick: bool,
}

/// The workspace's benchmarks.
pub const TARGETS: [BenchTarget; 4] = [
    BenchTarget {
        package: "genir-model",
        bench: "forward",
        quick: true,
    },
    BenchTarget {
        package: "genir-train",
        bench: "train_search",
        quick: true,
    },
    BenchTarget {
        package: "genir-mechir",
        bench: "patching",
        quick: false,
    },
    BenchTarget {
        package: "genir-interp",
        bench: "sweep",
        quick: false,
    },
];

/// The PyTorch baseline script of each benchmark that has one (`tools/reference/`).
pub const BASELINES: [(&str, &str); 3] = [
    ("forward", "bench_t5_forward.py"),
    ("train_search", "bench_train_search.py"),
    ("sweep", "bench_patching_sweep.py"),
];

/// Options of `cargo xtask bench`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Backends (flex, wgpu, cuda).
    pub backends: Vec<String>,
    /// Criterion's quick mode and only the quick targets.
    pub quick: bool,
    /// Only these `[[bench]]` targets (all when empty).
    pub only: Vec<String>,
    /// Python with torch + transformers for the baselines.
    pub python: Option<PathBuf>,
    /// Where criterion writes (`CRITERION_HOME`).
    pub criterion_home: PathBuf,
    /// Markdown file whose generated section is (re)written.
    pub out: PathBuf,
    /// Workspace root.
    pub root: PathBuf,
    /// Extra cargo features for every `cargo bench` (to reuse a build made with them, e.g. `genir-model/wgpu`).
    pub cargo_features: Vec<String>,
}

/// One measured benchmark.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    /// Criterion group.
    pub group: String,
    /// Function id (`backend/name`).
    pub function: String,
    /// Median time per iteration, ns.
    pub median_ns: f64,
    /// 95% confidence interval of the median, ns.
    pub ci_ns: (f64, f64),
    /// Elements per iteration (criterion throughput), if set.
    pub elements: Option<f64>,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}
#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}
#[derive(Deserialize)]
struct BenchmarkJson {
    group_id: String,
    function_id: Option<String>,
    throughput: Option<serde_json::Value>,
}

/// Reads every `new/estimates.json` + `new/benchmark.json` pair under a criterion folder.
pub fn read_criterion(home: &Path) -> Result<Vec<Measured>> {
    let mut out = Vec::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    let est = p.join("estimates.json");
                    let bj = p.join("benchmark.json");
                    if est.exists() && bj.exists() {
                        let e: Estimates = serde_json::from_str(&std::fs::read_to_string(&est)?)
                            .with_context(|| format!("parsing {}", est.display()))?;
                        let b: BenchmarkJson = serde_json::from_str(&std::fs::read_to_string(&bj)?)
                            .with_context(|| format!("parsing {}", bj.display()))?;
                        let elements = b.throughput.as_ref().and_then(|t| {
                            t.get("Elements")
                                .or_else(|| t.get("Bytes"))
                                .and_then(|v| v.as_f64())
                        });
                        out.push(Measured {
                            group: b.group_id,
                            function: b.function_id.unwrap_or_default(),
                            median_ns: e.median.point_estimate,
                            ci_ns: (
                                e.median.confidence_interval.lower_bound,
                                e.median.confidence_interval.upper_bound,
                            ),
                            elements,
                        });
                    }
                } else {
                    stack.push(p);
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.group, &a.function).cmp(&(&b.group, &b.function)));
    Ok(out)
}

fn python_json(python: &Path, script: &Path) -> Result<serde_json::Value> {
    let out = Command::new(python)
        .arg(script)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{} printed no JSON line", script.display()))?;
    Ok(serde_json::from_str(line)?)
}

const BEGIN: &str = "<!-- cargo xtask bench: begin (generated; edits here are overwritten) -->";
const END: &str = "<!-- cargo xtask bench: end -->";

/// Replaces the generated section of `doc` (or appends one).
pub fn splice(doc: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{section}\n{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &doc[..a], block, &doc[b + END.len()..]),
        _ => format!("{}\n\n{}\n", doc.trim_end(), block),
    }
}

fn ms(ns: f64) -> String {
    format!("{:.2} ms", ns / 1e6)
}

/// The Markdown section for the measured benchmarks and baselines.
pub fn section(
    measured: &[Measured],
    torch: &[(String, serde_json::Value)],
    quick: bool,
    when: &str,
) -> String {
    let mut s = format!(
        "## Latest `cargo xtask bench` run\n\n{when}{}. Median per iteration with criterion's 95% interval; \
         throughput from criterion's element count (FLOP for the forward pass, examples for a training step, \
         queries for search, patched cells for the sweep).\n\n| group | benchmark | median | 95% CI | throughput |\n|---|---|---|---|---|\n",
        if quick {
            " (quick mode: few samples, for CI; not for citing)"
        } else {
            ""
        }
    );
    for m in measured {
        let thr = m
            .elements
            .map(|e| {
                let per_s = e / (m.median_ns / 1e9);
                if e > 1e6 {
                    format!("{:.1} GFLOP/s", per_s / 1e9)
                } else {
                    format!("{per_s:.1} /s")
                }
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} | {} | {}–{} | {} |\n",
            m.group,
            m.function,
            ms(m.median_ns),
            ms(m.ci_ns.0),
            ms(m.ci_ns.1),
            thr
        ));
    }
    if torch.is_empty() {
        s.push_str("\nNo PyTorch baseline in this run (pass `--python` with a Python that has torch and transformers, e.g. the venv of `../shared/tools/reference-venv.sh`).\n");
        return s;
    }
    s.push_str("\n| workload | PyTorch (same session) | genir | genir / PyTorch speed |\n|---|---|---|---|\n");
    let find = |g: &str, f: &str| {
        measured
            .iter()
            .find(|m| m.group == g && m.function.ends_with(f))
    };
    for (script, v) in torch {
        if script.contains("t5_forward") {
            if let (Some(t), Some(g)) = (
                v["median_ms"].as_f64(),
                find("t5_forward_b32_s64_t1", "/no_hooks"),
            ) {
                s.push_str(&format!(
                    "| T5 forward, batch 32 x 64 tokens ({}) | {t:.1} ms | {} | {:.2}x |\n",
                    g.function,
                    ms(g.median_ns),
                    t * 1e6 / g.median_ns
                ));
            }
        }
        if script.contains("patching_sweep") {
            let g = "interp_sweep_p8_s64_117cells";
            if let Some(t) = v["median_ms"].as_f64() {
                for (f, label) in [
                    ("/sweep", "activation-patching sweep, 8 pairs x 117 cells"),
                    (
                        "/naive_full_forward_per_patch",
                        "the same cells, one full forward per cell (TransformerLens style)",
                    ),
                    (
                        "/attribution",
                        "attribution patching of the same cells (estimate, vs the exact PyTorch sweep)",
                    ),
                ] {
                    if let Some(m) = find(g, f) {
                        s.push_str(&format!(
                            "| {label} ({}) | {t:.1} ms | {} | {:.2}x |\n",
                            m.function,
                            ms(m.median_ns),
                            t * 1e6 / m.median_ns
                        ));
                    }
                }
            }
        }
        if script.contains("train_search") {
            let rows = [
                (
                    "train_examples_per_s",
                    "dsi_train_step_b32_s64",
                    "/adamw_step",
                    "training, examples/s",
                ),
                (
                    "atomic_search_queries_per_s",
                    "dsi_search_q64_k10",
                    "/atomic",
                    "atomic search k=10, queries/s",
                ),
                (
                    "multi_search_queries_per_s",
                    "dsi_search_q64_k10",
                    "/multi_token_beam10",
                    "multi-token beam search k=10, queries/s",
                ),
            ];
            for (key, g, f, label) in rows {
                if let (Some(t), Some(m)) = (v[key].as_f64(), find(g, f)) {
                    let ours = m.elements.unwrap_or(1.0) / (m.median_ns / 1e9);
                    s.push_str(&format!(
                        "| {label} ({}) | {t:.1} | {ours:.1} | {:.2}x |\n",
                        m.function,
                        ours / t
                    ));
                }
            }
        }
    }
    s
}

/// The benchmarks `opts` asks for; an unknown name, or a selection left empty (e.g. `--quick` with only slow
/// benchmarks), is an error: the section of `docs/benchmarks.md` is never replaced by an empty table.
fn select(opts: &BenchOptions) -> Result<Vec<&'static BenchTarget>> {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.bench).collect();
    if let Some(bad) = opts.only.iter().find(|o| !names.contains(&o.as_str())) {
        bail!(
            "--bench {bad:?}: no such benchmark (there are {})",
            names.join(", ")
        );
    }
    let targets: Vec<&BenchTarget> = TARGETS
        .iter()
        .filter(|t| !opts.quick || t.quick)
        .filter(|t| opts.only.is_empty() || opts.only.iter().any(|o| o == t.bench))
        .collect();
    if targets.is_empty() {
        bail!(
            "no benchmark selected: {} {} not among the quick ones (drop --quick)",
            opts.only.join(", "),
            if opts.only.len() == 1 { "is" } else { "are" }
        );
    }
    Ok(targets)
}

/// Runs the benchmarks and writes the section; returns the measured rows.
pub fn run(opts: &BenchOptions) -> Result<Vec<Measured>> {
    let targets = select(opts)?;
    let _ = std::fs::remove_dir_all(&opts.criterion_home);
    for backend in &opts.backends {
        let b: genir_model::device::Backend = backend.parse()?;
        for t in &targets {
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(&opts.root)
                // --workspace (not -p): the features unify as in `cargo test --workspace`, so the test build
                // is reused
                .args(["bench", "--workspace", "--bench", t.bench]);
            let mut features = opts.cargo_features.clone();
            if b != genir_model::device::Backend::Flex {
                features.push(format!("genir-model/{}", b.name()));
            }
            if !features.is_empty() {
                cmd.args(["--features", &features.join(",")]);
            }
            cmd.arg("--");
            if opts.quick {
                cmd.arg("--quick");
            }
            cmd.env("GENIR_BENCH_BACKEND", b.name())
                .env("CRITERION_HOME", &opts.criterion_home);
            tracing::info!("{} {} on {}", t.package, t.bench, b.name());
            let status = cmd
                .status()
                .with_context(|| format!("running cargo bench for {}", t.bench))?;
            if !status.success() {
                bail!(
                    "cargo bench -p {} --bench {} failed on {}",
                    t.package,
                    t.bench,
                    b.name()
                );
            }
        }
    }
    let measured = read_criterion(&opts.criterion_home)?;
    let mut torch = Vec::new();
    if let Some(py) = &opts.python {
        for (_, script) in BASELINES
            .iter()
            .filter(|(bench, _)| targets.iter().any(|t| t.bench == *bench))
        {
            let path = opts.root.join("tools/reference").join(script);
            tracing::info!("PyTorch baseline {script}");
            torch.push((script.to_string(), python_json(py, &path)?));
        }
    }
    let when = format!(
        "Backends {}; {} benchmarks",
        opts.backends.join(", "),
        measured.len()
    );
    let sec = section(&measured, &torch, opts.quick, &when);
    let doc = std::fs::read_to_string(&opts.out).unwrap_or_else(|_| "# Benchmarks\n".into());
    genir_io::write_atomic(&opts.out, splice(&doc, &sec).as_bytes())?;
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_or_empty_selections_are_errors() {
        let opts = |quick: bool, only: &[&str]| BenchOptions {
            backends: vec!["flex".into()],
            quick,
            only: only.iter().map(|s| s.to_string()).collect(),
            python: None,
            criterion_home: PathBuf::from("/nonexistent"),
            out: PathBuf::from("/nonexistent/benchmarks.md"),
            root: PathBuf::from("/nonexistent"),
            cargo_features: Vec::new(),
        };
        assert_eq!(select(&opts(false, &[])).unwrap().len(), TARGETS.len());
        assert_eq!(select(&opts(false, &["forward"])).unwrap().len(), 1);
        let e = select(&opts(false, &["foward"])).unwrap_err().to_string();
        assert!(e.contains("foward") && e.contains("sweep"), "{e}");
        let slow: Vec<&str> = TARGETS
            .iter()
            .filter(|t| !t.quick)
            .map(|t| t.bench)
            .collect();
        assert!(!slow.is_empty());
        let e = select(&opts(true, &slow)).unwrap_err().to_string();
        assert!(e.contains("--quick"), "{e}");
    }

    #[test]
    fn reads_criterion_output_and_writes_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("t5_forward_b32_s64_t1/flex_no_hooks/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":1.2e8,"confidence_interval":{"lower_bound":1.0e8,"upper_bound":1.3e8,"confidence_level":0.95},"standard_error":1.0},
               "median":{"point_estimate":1.0e8,"confidence_interval":{"lower_bound":0.9e8,"upper_bound":1.1e8,"confidence_level":0.95},"standard_error":1.0}}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"t5_forward_b32_s64_t1","function_id":"flex/no_hooks","value_str":null,"throughput":{"Elements":15960000000},"full_id":"x","directory_name":"x","title":"x"}"#,
        )
        .unwrap();
        let m = read_criterion(dir.path()).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].function, "flex/no_hooks");
        assert_eq!(m[0].median_ns, 1.0e8);
        let torch = vec![(
            "bench_t5_forward.py".to_string(),
            serde_json::json!({"median_ms": 110.0}),
        )];
        let s = section(&m, &torch, false, "test");
        assert!(
            s.contains("| t5_forward_b32_s64_t1 | flex/no_hooks | 100.00 ms"),
            "{s}"
        );
        assert!(s.contains("159.6 GFLOP/s"), "{s}");
        assert!(s.contains("1.10x"), "{s}");
        // splicing replaces the generated section and keeps the rest
        let doc = splice("# B\n\nhand-written\n", "one");
        let doc2 = splice(&doc, "two");
        assert!(doc2.contains("hand-written") && doc2.contains("two") && !doc2.contains("one"));
        assert_eq!(doc2.matches(BEGIN).count(), 1);
    }
}
