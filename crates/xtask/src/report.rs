//! The report: `index.html` (opens from disk, no server) and `README.md` with the same content, every figure
//! as SVG and PNG under `figures/`, every raw table as Parquet and CSV under `tables/`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::study::Study;
use genir_io::write_atomic;
use genir_train::train::Init;

/// A block of a section.
enum Block {
    Text(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure(String, String),
}

struct Section {
    title: String,
    blocks: Vec<Block>,
}

impl Section {
    fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            blocks: Vec::new(),
        }
    }
    fn text(&mut self, t: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Text(t.into()));
        self
    }
    fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) -> &mut Self {
        self.blocks.push(Block::Table(
            header.iter().map(|s| s.to_string()).collect(),
            rows,
        ));
        self
    }
    fn figure(&mut self, study: &Study, stem: &str) -> &mut Self {
        if let Some(f) = study.figures.iter().find(|f| f.stem == stem) {
            self.blocks
                .push(Block::Figure(f.stem.clone(), f.caption.clone()));
        }
        self
    }
}

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "–".into()
    }
}

fn f1(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "–".into()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Inline markdown used in texts: `code` and **bold** only.
fn inline_html(s: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    let mut bold = false;
    let e = esc(s);
    let mut chars = e.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
            }
            '*' if chars.peek() == Some(&'*') && !code => {
                chars.next();
                out.push_str(if bold { "</strong>" } else { "<strong>" });
                bold = !bold;
            }
            c => out.push(c),
        }
    }
    out
}

/// The base model in words: its architecture and where it started.
fn model_description(s: &Study) -> String {
    match (&s.train_config.init, &s.model_config) {
        (Init::Pretrained(dir), c) => {
            let arch = c.as_ref().map_or_else(String::new, |c| {
                format!(
                    ": d_model {}, d_ff {} ({}), {} encoder + {} decoder layers, {} heads, {} output rows ({} head)",
                    c.d_model,
                    c.d_ff,
                    c.feed_forward_proj,
                    c.num_layers,
                    c.decoder_layers(),
                    c.num_heads,
                    c.vocab_size,
                    if c.tied_head() { "tied" } else { "untied" }
                )
            });
            format!(
                "T5 fine-tuned from the pretrained `{}`{arch}, with its own tokenizer and one new output row per docid",
                dir.display()
            )
        }
        (Init::Scratch(a), _) => format!(
            "T5 from scratch, d_model {}, d_ff {}, {} encoder + {} decoder layers, {} heads, a {}-token WordPiece vocabulary learned from the corpus",
            a.d_model, a.d_ff, a.layers, a.layers, a.heads, a.text_vocab
        ),
        (Init::ScratchWithTokenizer { arch: a, tokenizer }, _) => format!(
            "T5 from scratch, d_model {}, d_ff {}, {} encoder + {} decoder layers, {} heads, the tokenizer `{}`",
            a.d_model,
            a.d_ff,
            a.layers,
            a.layers,
            a.heads,
            tokenizer.display()
        ),
    }
}

fn sections(s: &Study) -> Vec<Section> {
    let mut out = Vec::new();
    let layers = s
        .model_config
        .as_ref()
        .map(|c| c.decoder_layers())
        .unwrap_or(s.params.arch.layers);

    let mut sec = Section::new("Setup");
    sec.text(format!(
        "Collection `{}` ({}). Scale `{:?}`, backend `{}`. GenIR model: {}, atomic docids; {} epochs of indexing (first chunks of each passage) + retrieval (training queries) examples, batch {}, AdamW lr {} with {} warm-up steps, seed {}.",
        s.corpus, s.collection_stats, s.scale, s.backend, model_description(s),
        s.train_config.epochs, s.train_config.batch_size, s.train_config.lr, s.train_config.warmup_steps,
        s.train_config.seed
    ));
    sec.text("The paper (Reusch & Belinkov, *Reverse-Engineering the Retrieval Process in GenIR Models*, SIGIR 2025) analyses T5-large DSI models (24 decoder layers) on NQ10k/NQ100k/NQ320k and Trivia-QA. Its stages are decoder layers 0–6 (I), 7–17 (II) and 18–23 (III). This model has only "
        .to_string() + &format!("{layers} decoder layers, so its first layer is compared with stages I–II and its last with stage III; numbers are not expected to match, the questions are the same."));
    sec.table(
        &["step", "seconds", "this run"],
        s.steps
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    f1(r.seconds),
                    if r.cached {
                        "cached".into()
                    } else {
                        "ran".into()
                    },
                ]
            })
            .collect(),
    );
    sec.text(format!(
        "This run took {:.1} s in all (cached steps cost nothing; their original time is shown).",
        s.total_seconds
    ));
    out.push(sec);

    let mut sec = Section::new("1. Retrieval quality (paper Table 1)");
    sec.table(
        &[
            "model",
            "documents trained",
            "split",
            "queries",
            "Hits@1",
            "Hits@10",
            "MRR@10",
        ],
        s.models
            .iter()
            .map(|m| {
                vec![
                    m.model.clone(),
                    m.trained_docs.to_string(),
                    m.split.clone(),
                    m.queries.to_string(),
                    f3(m.hits_at_1),
                    f3(m.hits_at_10),
                    f3(m.mrr_at_10),
                ]
            })
            .collect(),
    );
    let t = s.trained.get("base");
    let base_hits = |split: &str| {
        s.models
            .iter()
            .find(|m| m.model == "base" && m.split == split)
            .map(|m| f3(m.hits_at_1))
            .unwrap_or_else(|| "not measured".into())
    };
    sec.text(format!(
        "Training: base model {} steps ({:.0} examples/s, final loss {:.3}). Paper (T5-large, test): NQ10k Hits@1 40.4 / Hits@10 63.9; NQ100k 22.6 / 50.2; NQ320k 20.0 / 48.0; Trivia-QA 60.4 / 82.2. This model's Hits@1 is {} on its training queries and {} on the held-out inverse-cloze test queries, so the analyses below use the **training queries the base model retrieves at rank 1** (the paper analyses correctly answered queries too).",
        t.map(|t| t.steps).unwrap_or(0),
        t.map(|t| t.examples_per_sec).unwrap_or(f64::NAN),
        t.map(|t| t.final_loss).unwrap_or(f32::NAN),
        base_hits("train"),
        base_hits("test"),
    ));
    out.push(sec);

    let mut sec =
        Section::new("2. Encoder swap: which half identifies the document (paper Table 2)");
    sec.text(format!(
        "The missing-documents model is trained with the same recipe on the corpus without {} documents ({}); their docids exist but are never trained. Each row runs one model's encoder with another's decoder; \"blocks only\" rows run the encoder model's blocks under the decoder model's final encoder norm, as the paper's swap does (it patches the last encoder block's output).",
        s.removed.len(),
        s.removed.join(", ")
    ));
    sec.table(
        &[
            "encoder", "decoder", "queries", "n", "Hits@1", "Hits@10", "MRR@10",
        ],
        s.swap
            .iter()
            .map(|r| {
                vec![
                    r.encoder.clone(),
                    r.decoder.clone(),
                    r.subset.clone(),
                    r.queries.to_string(),
                    f3(r.hits_at_1),
                    f3(r.hits_at_10),
                    f3(r.mrr_at_10),
                ]
            })
            .collect(),
    );
    sec.text("Paper: the encoder of a model that never saw 10 documents, put on the full model's decoder, still retrieves 70–80% of them at rank 1 (MRR 0.75–0.87; the full model: 10 of 10, MRR 1): the decoder, not the encoder, holds the document identities.");
    sec.figure(s, "encoder_swap");
    out.push(sec);

    let mut sec = Section::new("3. Logit lens (paper Fig. 4)");
    sec.text(format!(
        "{} probes. Median rank of the correct docid (1 = top), share at rank 1, and mean rank of all docid and non-docid tokens, read through the final norm and the LM head.",
        s.probes
    ));
    sec.table(
        &[
            "layer",
            "read from",
            "median rank",
            "at rank 1",
            "mean rank docids",
            "mean rank non-docids",
        ],
        s.lens
            .iter()
            .map(|r| {
                vec![
                    r.layer.to_string(),
                    r.component.clone(),
                    f1(r.median_rank),
                    f3(r.top1),
                    f1(r.mean_rank_docids),
                    f1(r.mean_rank_non_docids),
                ]
            })
            .collect(),
    );
    sec.text("Paper: docid and non-docid tokens separate early; the correct docid improves gradually and reaches rank 1 only at the last layer; MLP outputs follow that trend, cross-attention outputs show no clear trend (alone they put every relevant document below rank 100).");
    sec.figure(s, "logit_lens");
    if !s.encoder_lens.is_empty() {
        sec.text("The encoder's residual stream read through the decoder's final norm and LM head (the paper's lens \"through the decoder's head where it makes sense\"): mean-pooled over the query's positions, and the best single position.");
        sec.table(
            &[
                "encoder layer",
                "point",
                "median rank (mean-pooled)",
                "median best rank (any position)",
                "rank 1 at some position",
            ],
            s.encoder_lens
                .iter()
                .map(|r| {
                    vec![
                        r.layer.to_string(),
                        r.component.clone(),
                        f1(r.median_rank),
                        f1(r.median_best_rank),
                        f3(r.top1_any_position),
                    ]
                })
                .collect(),
        );
        sec.figure(s, "encoder_lens");
    }
    out.push(sec);

    let mut sec = Section::new("4. Component contribution (paper Fig. 3)");
    sec.table(
        &[
            "layer",
            "component",
            "share of the change",
            "norm / |change|",
            "cosine with layer output",
        ],
        s.contrib
            .iter()
            .map(|r| {
                vec![
                    r.layer.to_string(),
                    r.component.clone(),
                    f3(r.share),
                    f3(r.ratio),
                    f3(r.cos),
                ]
            })
            .collect(),
    );
    sec.text("Paper: MLPs dominate stage I, cross-attention peaks in stage II, MLPs dominate stage III; in stage III every component has a negative cosine with the residual stream.");
    sec.figure(s, "contributions");
    out.push(sec);

    let mut sec = Section::new("5. Activation patching");
    sec.text(format!(
        "{} clean / corrupted pairs (corrupted = another probe's query). Mean normalised logit difference (0 = corrupted, 1 = clean) per decoder component; the strongest heads below.",
        s.patch_pairs
    ));
    sec.table(
        &["layer", "component", "patched value"],
        s.patching
            .iter()
            .filter(|r| r.target == "components")
            .map(|r| vec![r.layer.to_string(), r.component.clone(), f3(r.value)])
            .collect(),
    );
    let mut heads: Vec<_> = s.patching.iter().filter(|r| r.target == "heads").collect();
    heads.sort_by(|a, b| b.value.total_cmp(&a.value));
    sec.table(
        &["layer", "attention", "head", "patched value"],
        heads
            .iter()
            .take(8)
            .map(|r| {
                vec![
                    r.layer.to_string(),
                    r.component.clone(),
                    r.head.to_string(),
                    f3(r.value),
                ]
            })
            .collect(),
    );
    sec.text("Paper (patching with pre-trained T5 activations): stage I–II MLPs lose only 5–15% of correct queries; the largest losses come from stage III MLPs (74–93%), then stage III cross-attention (33–41%) and stage II cross-attention (18–25%).");
    sec.figure(s, "patching");
    out.push(sec);

    let mut sec =
        Section::new("6. Vocabulary projection of cross-attention heads (paper Tables 5–6)");
    sec.table(
        &[
            "layer",
            "head",
            "mean rank of correct docid",
            "most frequent top-5 text tokens",
            "example",
        ],
        s.heads
            .iter()
            .map(|r| {
                vec![
                    r.layer.to_string(),
                    r.head.to_string(),
                    f1(r.correct_rank),
                    r.frequent_tokens.clone(),
                    r.example.clone(),
                ]
            })
            .collect(),
    );
    sec.text("Paper: stage II cross-attention heads write almost no docid tokens (NQ10k: 0.00% of the top 10, 0.10% of the top 100) but words related to the query (layer 16 head 1: \"books, ouvrage, authors\" for a Harry Potter query): a form of query expansion.");
    sec.figure(s, "head_projection");
    out.push(sec);

    let mut sec = Section::new(
        "7. Removing components (paper Table 3) and the minimal circuit (paper Table 4)",
    );
    sec.text(
        "Hits@1 on the probes (all at rank 1 before) and the share of them no longer at rank 1.",
    );
    sec.table(
        &["ablation", "mode", "Hits@1", "% no longer at rank 1"],
        s.ablation
            .iter()
            .map(|r| {
                vec![
                    r.label.clone(),
                    r.mode.clone(),
                    f3(r.hits_at_1),
                    f1(r.lost_percent),
                ]
            })
            .collect(),
    );
    sec.text("Paper, NQ10k, % of correct queries lost per stage I / II / III: self-attention zeroed 1.52 / 2.27 / 6.57, mean 0.00 / 2.02 / 6.06; cross-attention zeroed 4.29 / 21.72 / 39.65, mean 4.55 / 20.45 / 42.93; MLP zeroed 92.86 / 7.83 / 96.72, mean 0.76 / 5.56 / 48.23. The minimal circuit, on the stage split derived from this model's data, is in section 7b.");
    sec.figure(s, "ablation");
    out.push(sec);

    let st = &s.stages;
    let mut sec = Section::new(
        "7b. Stages derived from the data, path patching, the minimal circuit, attribution patching",
    );
    sec.text(format!(
        "Derived split of the {} decoder layers (priming / bridging / interaction): **{}**. Interaction starts at the first layer whose residual stream (logit lens at resid_post) gives the correct docid at least half of its final reciprocal rank; bridging at the first earlier layer whose cross-attention output, patched from the clean run, restores at least a quarter of the largest cross-attention effect. Paper (T5-large, 24 layers): 0-6 / 7-17 / 18-23.",
        st.layers, st.split
    ));
    sec.table(
        &[
            "layer",
            "stage",
            "lens reciprocal rank",
            "self-attn patch",
            "cross-attn patch",
            "MLP patch",
        ],
        st.evidence
            .iter()
            .map(|r| {
                vec![
                    r.layer.to_string(),
                    r.stage.clone(),
                    f3(r.lens_reciprocal_rank),
                    f3(r.self_attn_patch),
                    f3(r.cross_attn_patch),
                    f3(r.mlp_patch),
                ]
            })
            .collect(),
    );
    sec.figure(s, "stages");
    sec.text(format!(
        "Minimal circuit on this split, as the paper's `eval_patching_all_stages.py` builds it (every self-attention output and the priming layers' cross-attention zeroed, the priming and bridging layers' MLP outputs mean-ablated): Hits@1 {} against {} for the full model on the probes = **{}%** kept (paper, NQ10k: 94%).",
        f3(st.circuit_hits_at_1),
        f3(st.full_hits_at_1),
        f1(100.0 * st.circuit_hits_at_1 / st.full_hits_at_1.max(1e-12))
    ));
    if st.interaction_start == 0 {
        sec.text("Every layer of this decoder falls in the interaction stage (the correct docid is already near its final rank after the first layer), so the circuit here only removes self-attention: a model this shallow has no room for the paper's priming and bridging stages.");
    }
    sec.figure(s, "minimal_circuit");
    sec.text("Path patching: which upstream components drive the cross-attention of the bridging and interaction layers and the MLPs of the interaction layers (the sender's clean output reaches the receiver only along the direct residual path). The ten strongest edges:");
    sec.table(
        &["sender", "receiver", "mean effect"],
        st.top_paths
            .iter()
            .map(|r| vec![r.sender.clone(), r.receiver.clone(), f3(r.value)])
            .collect(),
    );
    sec.figure(s, "path_patching");
    sec.text("Attribution patching (the gradient estimate of every patching cell from one backward pass per pair; encoder positions with the QK fix of AtP*, Kramár et al. 2024: each cross-attention pattern recomputed exactly with the patched key, then linearised) against exact activation patching on the same pairs; the plain gradient estimate of encoder positions is the last row:");
    sec.table(
        &["target", "cells", "Pearson r", "mean |difference|"],
        st.attribution
            .iter()
            .map(|r| {
                vec![
                    r.target.clone(),
                    r.n.to_string(),
                    f3(r.pearson),
                    f3(r.mean_abs_diff),
                ]
            })
            .collect(),
    );
    sec.figure(s, "attribution");
    out.push(sec);

    let mt = &s.multi_token;
    let mut sec = Section::new("7c. Multi-token docids: logit lens and patching per decoding step");
    match &mt.trained {
        None => {
            sec.text("Not run (a study cached before this step existed).");
        }
        Some(t) => {
            let how = match mt.config.as_ref().map(|c| (&c.init, c.epochs, c.lr)) {
                Some((Init::Pretrained(dir), epochs, lr)) => format!(
                    "fine-tuned from the pretrained `{}` (like the base model, with its tokenizer and a new token per digit) on the shipped mini corpus (179 passages, {epochs} epochs, AdamW lr {lr}, {} steps)",
                    dir.display(),
                    t.steps
                ),
                _ => format!(
                    "trained from scratch on the shipped mini corpus (179 passages, the smoke architecture, {} steps)",
                    t.steps
                ),
            };
            sec.text(format!(
                "A second model with naive docids (each digit of the docid a token, then `</s>`; the paper's multi-token setting) is {how}: training-query Hits@1 {}, {} training queries retrieved at rank 1 are the probes. Step k reads where the decoder, fed the start token and the correct docid's first k tokens, predicts token k; at each step the probes are those whose docid has a digit there (not the closing `</s>`).",
                f3(mt.train_hits_at_1),
                mt.probes
            ));
            if !mt.lens_at(1) {
                sec.text(format!(
                    "With {} probes, fewer than two have a docid with a second digit, so only the first step is analysed: the per-step experiments need a model that retrieves its training queries.",
                    mt.probes
                ));
            }
            sec.text("Logit lens (residual stream after each decoder layer): share of probes with the correct token at rank 1, and its median rank.");
            sec.table(
                &["step", "layer", "probes", "top-1 share", "median rank"],
                mt.lens
                    .iter()
                    .map(|r| {
                        vec![
                            r.step.to_string(),
                            r.layer.to_string(),
                            r.probes.to_string(),
                            f3(r.top1),
                            f1(r.median_rank),
                        ]
                    })
                    .collect(),
            );
            sec.figure(s, "mt_logit_lens_step1");
            sec.text("Two patching experiments per step (normalised logit difference of the token read, 0 = corrupted run, 1 = clean run; median over pairs, since a pair whose clean and corrupted runs score the token read almost alike has huge normalised values; every cell is in the step's Parquet/CSV table). **query**: the query is corrupted (another probe's query) and both runs are fed the clean docid's prefix, so patching shows where the decoder reads the query. **prefix**: the query is the same and the corrupted run is fed another document's prefix, so patching shows what the decoder carries from the earlier docid tokens (the encoder output is identical in both runs). Columns: a component's output patched at every position; the layer's residual stream (resid_pre) patched at the earlier positions only, or at the position read only.");
            sec.table(
                &[
                    "experiment",
                    "step",
                    "pairs",
                    "layer",
                    "self-attn",
                    "cross-attn",
                    "MLP",
                    "resid, earlier positions",
                    "resid, position read",
                ],
                mt.patching
                    .iter()
                    .map(|r| {
                        vec![
                            r.experiment.clone(),
                            r.step.to_string(),
                            r.pairs.to_string(),
                            r.layer.to_string(),
                            f3(r.self_attn),
                            f3(r.cross_attn),
                            f3(r.mlp),
                            f3(r.earlier_positions),
                            f3(r.read_position),
                        ]
                    })
                    .collect(),
            );
            sec.figure(s, "mt_patching_query_step1");
            sec.figure(s, "mt_patching_prefix_step1");
        }
    }
    out.push(sec);

    let mut sec =
        Section::new("8. MechIR: patching a bi-encoder and a cross-encoder under TFC1 / TDC");
    if s.mechir.is_empty() {
        sec.text("No ranker was available.");
    } else {
        sec.table(
            &[
                "model",
                "kind",
                "perturbation",
                "patch",
                "pairs",
                "mean score orig → perturbed",
                "strongest cells",
                "seconds",
            ],
            s.mechir
                .iter()
                .map(|r| {
                    vec![
                        r.model.clone(),
                        r.kind.clone(),
                        r.perturbation.clone(),
                        r.patch.clone(),
                        r.pairs.to_string(),
                        format!("{:.3} → {:.3}", r.mean_scores.0, r.mean_scores.1),
                        r.top.clone(),
                        f1(r.seconds),
                    ]
                })
                .collect(),
        );
        sec.text("Values are MechIR's: (patched − original) / (perturbed − original), the perturbed run's activations patched into the original run, averaged over pairs (genir-mechir matches the Python MechIR package to 1e-4 on the same model and inputs).");
    }
    for r in &s.mechir_skipped {
        sec.text(format!("Skipped: {r}."));
    }
    for r in &s.mechir {
        sec.figure(s, &r.figure);
    }
    out.push(sec);

    let mut sec = Section::new("9. Editing the corpus inside the model");
    if let Some(e) = &s.edits {
        sec.text(format!(
            "{} documents split off the collection; a base model is trained on the other {} ({:.0} s), then the documents are added back one at a time by each method. Success: Hits@1/@10 on the added documents' queries (never shown to the edit). Retention: Hits@1 of all other queries before → after. Locality: share of other queries whose top docid did not change.",
            e.report.rows.first().map(|r| r.docs).unwrap_or(0),
            e.report.base_docs,
            e.report.base_train_seconds
        ));
        sec.blocks.push(markdown_table(&e.markdown));
        for note in e.report.notes() {
            sec.text(note);
        }
        if !e.report.references.is_empty() {
            let refs: Vec<_> = e
                .report
                .references
                .iter()
                .chain(&s.edits_dense)
                .cloned()
                .collect();
            sec.text(if s.edits_dense.is_empty() {
                "References on the same queries (not edits): how far the base model generalises to held-out queries of documents it was trained on, and what BM25 gets on them and on the added documents' queries (a trained bi-encoder's rows need its folder, `--bi-encoder`)."
            } else {
                "References on the same queries (not edits): how far the base model generalises to held-out queries of documents it was trained on, and what BM25 and a trained bi-encoder (exact dense retrieval over every passage) get on them and on the added documents' queries."
            });
            sec.blocks
                .push(markdown_table(&genir_edit::eval::references_markdown(
                    &refs,
                )));
        }
    }
    out.push(sec);

    let mut sec = Section::new("Raw tables");
    sec.text("Every analysis's full table is under `tables/` as Parquet and CSV (one row per query × layer × component × …).");
    out.push(sec);
    out
}

/// Parses a markdown table (header, separator, rows) into a table block; other lines become text.
fn markdown_table(md: &str) -> Block {
    let rows: Vec<Vec<String>> = md
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    if rows.len() < 2 {
        return Block::Text(md.to_string());
    }
    let header = rows[0].clone();
    let body = rows[2..].to_vec();
    Block::Table(header, body)
}

fn render_md(s: &Study, secs: &[Section]) -> String {
    let mut o = format!(
        "# GenIR study: `{}`, scale `{:?}`\n\nWritten by `cargo xtask reproduce`. Open `index.html` for the same report in a browser.\n\n",
        s.corpus, s.scale
    );
    for sec in secs {
        o.push_str(&format!("## {}\n\n", sec.title));
        for b in &sec.blocks {
            match b {
                Block::Text(t) => o.push_str(&format!("{t}\n\n")),
                Block::Table(h, rows) => {
                    o.push_str(&format!(
                        "| {} |\n|{}\n",
                        h.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "),
                        "---|".repeat(h.len())
                    ));
                    for r in rows {
                        o.push_str(&format!(
                            "| {} |\n",
                            r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                    o.push('\n');
                }
                Block::Figure(stem, caption) => o.push_str(&format!(
                    "![{stem}](figures/{stem}.svg)\n\n*{caption}* ([PNG](figures/{stem}.png))\n\n"
                )),
            }
        }
    }
    o
}

fn render_html(s: &Study, secs: &[Section]) -> String {
    let mut o = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>GenIR study: {}</title>\n<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.45}}table{{border-collapse:collapse;margin:1em 0;font-size:90%}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left}}th{{background:#f3f3f3}}figure{{margin:1.5em 0}}figure img{{max-width:100%;border:1px solid #eee}}figcaption{{font-size:90%;color:#444}}code{{background:#f5f5f5;padding:0 .2em}}</style></head><body>\n<h1>GenIR study: <code>{}</code>, scale <code>{:?}</code></h1>\n<p>Written by <code>cargo xtask reproduce</code>. Figures are SVG (PNG beside them); raw tables are in <code>tables/</code>.</p>\n",
        esc(&s.corpus),
        esc(&s.corpus),
        s.scale
    );
    for sec in secs {
        o.push_str(&format!("<h2>{}</h2>\n", esc(&sec.title)));
        for b in &sec.blocks {
            match b {
                Block::Text(t) => o.push_str(&format!("<p>{}</p>\n", inline_html(t))),
                Block::Table(h, rows) => {
                    o.push_str("<table><thead><tr>");
                    for c in h {
                        o.push_str(&format!("<th>{}</th>", inline_html(c)));
                    }
                    o.push_str("</tr></thead><tbody>\n");
                    for r in rows {
                        o.push_str("<tr>");
                        for c in r {
                            o.push_str(&format!("<td>{}</td>", inline_html(c)));
                        }
                        o.push_str("</tr>\n");
                    }
                    o.push_str("</tbody></table>\n");
                }
                Block::Figure(stem, caption) => o.push_str(&format!(
                    "<figure><img src=\"figures/{stem}.svg\" alt=\"{stem}\"><figcaption>{} (<a href=\"figures/{stem}.png\">PNG</a>)</figcaption></figure>\n",
                    inline_html(caption)
                )),
            }
        }
    }
    o.push_str("</body></html>\n");
    o
}

/// Copies the steps' figures and tables into the report folder and writes `index.html`, `README.md` and
/// `study.json`.
pub fn write(s: &Study, work: &Path, report: &Path) -> Result<()> {
    let figs = report.join("figures");
    let tables = report.join("tables");
    for d in [&figs, &tables] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    for r in &s.steps {
        let dir = work.join(&r.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            let to = match ext {
                "svg" | "png" => &figs,
                "parquet" | "csv" => &tables,
                _ => continue,
            };
            let name = p.file_name().context("file name")?;
            std::fs::copy(&p, to.join(name)).with_context(|| format!("copying {}", p.display()))?;
        }
    }
    for f in &s.figures {
        for ext in ["svg", "png"] {
            let p = figs.join(format!("{}.{ext}", f.stem));
            if !p.exists() {
                anyhow::bail!("figure {} is missing", p.display());
            }
        }
    }
    let secs = sections(s);
    write_atomic(&report.join("README.md"), render_md(s, &secs).as_bytes())?;
    write_atomic(&report.join("index.html"), render_html(s, &secs).as_bytes())?;
    write_atomic(
        &report.join("study.json"),
        serde_json::to_string_pretty(s)?.as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_and_markdown_tables() {
        assert_eq!(
            inline_html("a `b<c>` **d**"),
            "a <code>b&lt;c&gt;</code> <strong>d</strong>"
        );
        match markdown_table("| a | b |\n|---|---|\n| 1 | 2 |\n") {
            Block::Table(h, r) => {
                assert_eq!(h, ["a", "b"]);
                assert_eq!(r, vec![vec!["1".to_string(), "2".to_string()]]);
            }
            _ => panic!("not a table"),
        }
    }
}
