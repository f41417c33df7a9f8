//! Activation patching: which activations of a clean run restore its docid inside a corrupted run.
//!
//! For each clean / corrupted query pair the encoder runs once (both queries in one batch, the shorter
//! right-padded with the pad token and masked), the clean decoder run is cached, and every patched variant of
//! the pair runs in batches: the corrupted input is repeated along the batch and row `i` gets the clean
//! activation of variant `i` (an [`Intervention::Patch`] with a [`Selection`] on batch row `i`). Row 0 of the
//! sweep patches nothing.
//!
//! The metric is read at the last decoder position and normalised, `(m - m_corrupt) / (m_clean - m_corrupt)`,
//! so 0 is the corrupted run and 1 the clean run.

use burn::prelude::*;
use genir_model::hooks::{
    Activation, ActivationCache, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention,
    Selection, Site, Stack,
};
use genir_model::t5::pad_batch;
use genir_train::bundle::GenirModel;
use polars::prelude::*;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::common::{col, docid_block, host, Probe};
use crate::error::{InterpError, Result};

/// How to build the corrupted query of each probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Another probe's query (drawn with a seeded RNG) whose document differs; its document is the corrupted
    /// docid.
    OtherQuery {
        /// RNG seed.
        seed: u64,
    },
    /// The clean query's words in a seeded random order; the corrupted docid is the corrupted run's top docid
    /// other than the clean one.
    Shuffle {
        /// RNG seed.
        seed: u64,
    },
}

/// A clean query, its corrupted counterpart and their documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPair {
    /// Id of the clean query (carried into the table).
    pub qid: String,
    /// Clean query text.
    pub clean: String,
    /// External id of the clean query's document.
    pub clean_docid: String,
    /// Corrupted query text.
    pub corrupt: String,
    /// The corrupted run's document; `None`: the corrupted run's top docid other than the clean one.
    pub corrupt_docid: Option<String>,
}

impl PatchPair {
    /// A user-supplied pair.
    pub fn new(
        qid: impl Into<String>,
        clean: impl Into<String>,
        clean_docid: impl Into<String>,
        corrupt: impl Into<String>,
        corrupt_docid: Option<String>,
    ) -> Self {
        Self {
            qid: qid.into(),
            clean: clean.into(),
            clean_docid: clean_docid.into(),
            corrupt: corrupt.into(),
            corrupt_docid,
        }
    }
}

/// Builds one pair per probe with the given corruption.
pub fn make_pairs(probes: &[Probe], corruption: &Corruption) -> Result<Vec<PatchPair>> {
    if probes.is_empty() {
        return Err(InterpError::Input("no queries to pair".into()));
    }
    match corruption {
        Corruption::OtherQuery { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            probes
                .iter()
                .map(|p| {
                    let others: Vec<&Probe> =
                        probes.iter().filter(|o| o.docid != p.docid).collect();
                    let o = others.choose(&mut rng).ok_or_else(|| {
                        InterpError::Input(format!(
                            "query {}: no other query with a different document to corrupt with",
                            p.qid
                        ))
                    })?;
                    Ok(PatchPair::new(
                        &p.qid,
                        &p.text,
                        &p.docid,
                        &o.text,
                        Some(o.docid.clone()),
                    ))
                })
                .collect()
        }
        Corruption::Shuffle { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            Ok(probes
                .iter()
                .map(|p| {
                    let words: Vec<&str> = p.text.split_whitespace().collect();
                    let mut shuffled = words.clone();
                    for _ in 0..16 {
                        shuffled.shuffle(&mut rng);
                        if shuffled != words {
                            break;
                        }
                    }
                    if shuffled == words {
                        tracing::warn!(qid = %p.qid, "query cannot be shuffled into another order");
                    }
                    PatchPair::new(&p.qid, &p.text, &p.docid, shuffled.join(" "), None)
                })
                .collect())
        }
    }
}

/// The patching metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PatchMetric {
    /// Logit of the clean docid token minus logit of the corrupted docid token.
    #[default]
    LogitDiff,
    /// Reciprocal rank of the clean docid token among the docid tokens.
    ReciprocalRank,
}

impl PatchMetric {
    fn name(self) -> &'static str {
        match self {
            PatchMetric::LogitDiff => "logit_diff",
            PatchMetric::ReciprocalRank => "reciprocal_rank",
        }
    }
}

/// What a sweep patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchTarget {
    /// Each decoder layer's `hook_resid_pre`, `hook_self_attn_out`, `hook_cross_attn_out`, `hook_mlp_out`,
    /// `hook_resid_post` (all positions).
    Components,
    /// Each head of each decoder self- and cross-attention (`hook_z`, all positions).
    Heads,
    /// The encoder output (`encoder.ln_final.hook_normalized`) one source position at a time.
    EncoderPositions,
    /// Each decoder layer's `hook_resid_pre` (and the last `hook_resid_post`) one decoder position at a time;
    /// only when the decoder input has more than one position (`decoder_prefix > 0`).
    DecoderPositions,
}

impl PatchTarget {
    fn name(self) -> &'static str {
        match self {
            PatchTarget::Components => "components",
            PatchTarget::Heads => "heads",
            PatchTarget::EncoderPositions => "encoder_positions",
            PatchTarget::DecoderPositions => "decoder_positions",
        }
    }
}

/// Settings of a patching sweep.
#[derive(Clone, Debug)]
pub struct PatchConfig {
    /// The metric.
    pub metric: PatchMetric,
    /// What to patch.
    pub targets: Vec<PatchTarget>,
    /// Clean docid tokens fed to the decoder after the start token (teacher forcing); the metric is read at
    /// the position that predicts docid token `decoder_prefix`. 0 for atomic docids.
    pub decoder_prefix: usize,
    /// Most patched variants per forward pass.
    pub batch_size: usize,
    /// Patch into the clean run instead of the corrupted one (a sanity check: every value must be 1).
    pub into_clean: bool,
}

impl Default for PatchConfig {
    fn default() -> Self {
        Self {
            metric: PatchMetric::LogitDiff,
            targets: vec![
                PatchTarget::Components,
                PatchTarget::Heads,
                PatchTarget::EncoderPositions,
                PatchTarget::DecoderPositions,
            ],
            decoder_prefix: 0,
            batch_size: 64,
            into_clean: false,
        }
    }
}

/// The decoder components patched by [`PatchTarget::Components`], with their table names.
pub const PATCH_COMPONENTS: [(&str, Site); 5] = [
    ("resid_pre", Site::ResidPre),
    ("self_attn_out", Site::SelfAttnOut),
    ("cross_attn_out", Site::CrossAttnOut),
    ("mlp_out", Site::MlpOut),
    ("resid_post", Site::ResidPost),
];

/// One patched variant of a pair.
#[derive(Clone, Debug)]
struct Variant {
    target: &'static str,
    layer: i64,
    component: String,
    head: i64,
    position: i64,
    patch: Option<(HookPoint, Selection)>,
}

impl Variant {
    fn none() -> Self {
        Self {
            target: "none",
            layer: -1,
            component: "none".into(),
            head: -1,
            position: -1,
            patch: None,
        }
    }
}

fn decoder_variants(layers: usize, heads: usize, t: usize, cfg: &PatchConfig) -> Vec<Variant> {
    let mut v = vec![Variant::none()];
    for target in &cfg.targets {
        match target {
            PatchTarget::Components => {
                for l in 0..layers {
                    for (name, site) in PATCH_COMPONENTS {
                        v.push(Variant {
                            target: target.name(),
                            layer: l as i64,
                            component: name.into(),
                            head: -1,
                            position: -1,
                            patch: Some((
                                HookPoint::block(Stack::Decoder, l, site),
                                Selection::all(),
                            )),
                        });
                    }
                }
            }
            PatchTarget::Heads => {
                for l in 0..layers {
                    for (name, kind) in [
                        ("self_attn", AttnKind::SelfAttn),
                        ("cross_attn", AttnKind::CrossAttn),
                    ] {
                        for h in 0..heads {
                            v.push(Variant {
                                target: target.name(),
                                layer: l as i64,
                                component: name.into(),
                                head: h as i64,
                                position: -1,
                                patch: Some((
                                    HookPoint::attn(Stack::Decoder, l, kind, AttnSite::Z),
                                    Selection::heads(vec![h]),
                                )),
                            });
                        }
                    }
                }
            }
            PatchTarget::DecoderPositions if t > 1 => {
                let mut points: Vec<(i64, &str, HookPoint)> = (0..layers)
                    .map(|l| {
                        (
                            l as i64,
                            "resid_pre",
                            HookPoint::block(Stack::Decoder, l, Site::ResidPre),
                        )
                    })
                    .collect();
                if layers > 0 {
                    points.push((
                        layers as i64 - 1,
                        "resid_post",
                        HookPoint::block(Stack::Decoder, layers - 1, Site::ResidPost),
                    ));
                }
                for (l, name, p) in points {
                    for pos in 0..t {
                        v.push(Variant {
                            target: target.name(),
                            layer: l,
                            component: name.into(),
                            head: -1,
                            position: pos as i64,
                            patch: Some((p, Selection::positions(vec![pos]))),
                        });
                    }
                }
            }
            PatchTarget::DecoderPositions => {
                tracing::debug!("decoder has one position: no per-position decoder patching");
            }
            PatchTarget::EncoderPositions => {}
        }
    }
    v
}

/// One result row.
struct Row {
    variant: Variant,
    raw: f64,
}

/// Repeats an activation `n` times along the batch axis.
fn repeat(act: &Activation, n: usize) -> Activation {
    match act {
        Activation::Rank3(t) => Activation::Rank3(t.clone().repeat_dim(0, n)),
        Activation::Rank4(t) => Activation::Rank4(t.clone().repeat_dim(0, n)),
    }
}

/// Everything about one pair that the patched runs need.
struct PairRun<'m> {
    gm: &'m GenirModel,
    enc_clean: Tensor<3>,
    enc_base: Tensor<3>,
    mask_base: Tensor<2, Int>,
    dec_ids: Tensor<2, Int>,
    cache: ActivationCache,
    clean_tok: usize,
    corrupt_tok: usize,
    metric: PatchMetric,
}

impl PairRun<'_> {
    fn metric_of(&self, row: &[f32]) -> f64 {
        match self.metric {
            PatchMetric::LogitDiff => {
                f64::from(row[self.clean_tok]) - f64::from(row[self.corrupt_tok])
            }
            PatchMetric::ReciprocalRank => {
                let t = row[self.clean_tok];
                let block = docid_block(self.gm);
                let better = row[block].iter().filter(|&&v| v > t).count();
                1.0 / (1 + better) as f64
            }
        }
    }

    /// Metric per row of logits `[n, t, vocab]` at the last position.
    fn metrics(&self, logits: Tensor<3>) -> Result<Vec<f64>> {
        let [n, t, v] = logits.dims();
        let last = logits.slice([0..n, t - 1..t, 0..v]);
        let values = host(last)?;
        Ok((0..n)
            .map(|i| self.metric_of(&values[i * v..(i + 1) * v]))
            .collect())
    }

    fn decode(&self, enc: &Tensor<3>, n: usize, hooks: &mut Hooks<'_>) -> Result<Vec<f64>> {
        let logits = self.gm.model.decode(
            enc,
            self.mask_base.clone().repeat_dim(0, n),
            self.dec_ids.clone().repeat_dim(0, n),
            None,
            hooks,
        )?;
        self.metrics(logits)
    }

    fn run_decoder(&self, variants: &[Variant], batch: usize) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(variants.len());
        for chunk in variants.chunks(batch.max(1)) {
            let n = chunk.len();
            let enc = self.enc_base.clone().repeat_dim(0, n);
            let mut hooks = Hooks::none();
            let mut sources: std::collections::HashMap<HookPoint, Activation> = Default::default();
            for (i, v) in chunk.iter().enumerate() {
                if let Some((point, sel)) = &v.patch {
                    let source = match sources.get(point) {
                        Some(s) => s.clone(),
                        None => {
                            let s = repeat(self.cache.require(point)?, n);
                            sources.insert(*point, s.clone());
                            s
                        }
                    };
                    let selection = Selection {
                        batch: Some(vec![i]),
                        ..sel.clone()
                    };
                    hooks.add(*point, Intervention::Patch { source, selection });
                }
            }
            let m = self.decode(&enc, n, &mut hooks)?;
            rows.extend(chunk.iter().zip(m).map(|(v, raw)| Row {
                variant: v.clone(),
                raw,
            }));
        }
        Ok(rows)
    }

    fn run_encoder_positions(&self, batch: usize) -> Result<Vec<Row>> {
        let src = self.enc_base.dims()[1];
        let point = HookPoint::final_norm(Stack::Encoder);
        let positions: Vec<usize> = (0..src).collect();
        let mut rows = Vec::with_capacity(src);
        for chunk in positions.chunks(batch.max(1)) {
            let n = chunk.len();
            let source = Activation::Rank3(self.enc_clean.clone().repeat_dim(0, n));
            let mut hooks = Hooks::none();
            for (i, &p) in chunk.iter().enumerate() {
                hooks.add(
                    point,
                    Intervention::Patch {
                        source: source.clone(),
                        selection: Selection {
                            positions: Some(vec![p]),
                            heads: None,
                            batch: Some(vec![i]),
                        },
                    },
                );
            }
            // The encoder ran once; its output is patched at its hook point directly.
            let enc = hooks.apply3(point, self.enc_base.clone().repeat_dim(0, n))?;
            let m = self.decode(&enc, n, &mut Hooks::none())?;
            rows.extend(chunk.iter().zip(m).map(|(&p, raw)| Row {
                variant: Variant {
                    target: PatchTarget::EncoderPositions.name(),
                    layer: -1,
                    component: point.to_string(),
                    head: -1,
                    position: p as i64,
                    patch: None,
                },
                raw,
            }));
        }
        Ok(rows)
    }
}

/// Columns of the patching table being built.
#[derive(Default)]
struct Table {
    qid: Vec<String>,
    clean_docid: Vec<String>,
    corrupt_docid: Vec<String>,
    target: Vec<String>,
    layer: Vec<i64>,
    component: Vec<String>,
    head: Vec<i64>,
    position: Vec<i64>,
    metric: Vec<String>,
    raw: Vec<f64>,
    clean: Vec<f64>,
    corrupt: Vec<f64>,
    value: Vec<f64>,
}

/// Runs the patching sweep of [`PatchConfig::targets`] over every pair.
///
/// One row per pair x patched variant: `qid, clean_docid, corrupt_docid, target` (`none`, `components`,
/// `heads`, `encoder_positions`, `decoder_positions`), `layer` (-1 where none applies), `component`, `head`
/// (-1 where none), `position` (-1 for all positions), `metric`, `raw` (the metric of the patched run),
/// `clean`, `corrupt` (the metric of the clean / corrupted run), and `value`, the normalised metric (0 =
/// corrupted, 1 = clean; NaN when the clean and corrupted runs score the same).
pub fn activation_patching(
    gm: &GenirModel,
    pairs: &[PatchPair],
    cfg: &PatchConfig,
) -> Result<DataFrame> {
    if pairs.is_empty() {
        return Err(InterpError::Input("no query pairs to patch".into()));
    }
    let model = &gm.model;
    let device = model.shared.val().device();
    let searcher = gm.searcher()?;
    let pad = model.config.pad_token_id as u32;
    let start = model.config.decoder_start() as u32;
    let layers = model.decoder.blocks.len();
    let heads = model.config.num_heads;
    let block = docid_block(gm);
    let mut table = Table::default();
    for pair in pairs {
        let ctx = |what: &str| format!(" ({what} of pair {})", pair.qid);
        let clean_doc = gm.scheme.require(&pair.clean_docid, &ctx("clean docid"))?;
        let clean_target = gm.scheme.target(clean_doc);
        let prefix = cfg.decoder_prefix;
        let clean_tok = *clean_target.get(prefix).ok_or_else(|| {
            InterpError::Input(format!(
                "decoder_prefix {prefix} is not shorter than the docid target of {} ({} tokens)",
                pair.clean_docid,
                clean_target.len()
            ))
        })? as usize;
        let mut dec = vec![start];
        dec.extend_from_slice(&clean_target[..prefix]);
        let t = dec.len();
        let dec_ids: Tensor<2, Int> = Tensor::from_data(
            TensorData::new(
                dec.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
                [1, t],
            ),
            &device,
        );
        let ids = searcher.encode_queries(&[pair.clean.clone(), pair.corrupt.clone()])?;
        if ids[0].len() != ids[1].len() {
            tracing::debug!(qid = %pair.qid, clean = ids[0].len(), corrupt = ids[1].len(),
                "query lengths differ: the shorter is padded and masked");
        }
        // One encoder pass for both queries of the pair.
        let (src, mask) = pad_batch(&ids, pad, &device)?;
        let enc = model.encode(src, mask.clone(), &mut Hooks::none())?;
        let [_, s, d] = enc.dims();
        let enc_clean = enc.clone().slice([0..1, 0..s, 0..d]);
        let enc_corrupt = enc.slice([1..2, 0..s, 0..d]);
        let mask_clean = mask.clone().slice([0..1, 0..s]);
        let mask_corrupt = mask.slice([1..2, 0..s]);
        let mut hooks = Hooks::caching(HookFilter::parse("decoder.*"));
        let clean_logits = model.decode(
            &enc_clean,
            mask_clean.clone(),
            dec_ids.clone(),
            None,
            &mut hooks,
        )?;
        let cache = hooks.take_cache();
        let corrupt_logits = model.decode(
            &enc_corrupt,
            mask_corrupt.clone(),
            dec_ids.clone(),
            None,
            &mut Hooks::none(),
        )?;
        let v = clean_logits.dims()[2];
        let corrupt_row = host(corrupt_logits.clone().slice([0..1, t - 1..t, 0..v]))?;
        let (corrupt_tok, corrupt_label) = match &pair.corrupt_docid {
            Some(docid) => {
                let doc = gm.scheme.require(docid, &ctx("corrupted docid"))?;
                let tok = *gm.scheme.target(doc).get(prefix).ok_or_else(|| {
                    InterpError::Input(format!(
                        "decoder_prefix {prefix} is not shorter than the docid target of {docid}"
                    ))
                })? as usize;
                (tok, docid.clone())
            }
            None => {
                let tok = block
                    .clone()
                    .filter(|&id| id != clean_tok)
                    .max_by(|&a, &b| corrupt_row[a].total_cmp(&corrupt_row[b]).then(b.cmp(&a)))
                    .ok_or_else(|| {
                        InterpError::Input("the scheme has a single docid token".into())
                    })?;
                (tok, token_label(gm, tok))
            }
        };
        let (enc_base, mask_base) = if cfg.into_clean {
            (enc_clean.clone(), mask_clean)
        } else {
            (enc_corrupt, mask_corrupt)
        };
        let run = PairRun {
            gm,
            enc_clean,
            enc_base,
            mask_base,
            dec_ids,
            cache,
            clean_tok,
            corrupt_tok,
            metric: cfg.metric,
        };
        let m_clean = run.metrics(clean_logits)?[0];
        let m_corrupt = run.metrics(corrupt_logits)?[0];
        let denom = m_clean - m_corrupt;
        if denom.abs() < 1e-9 {
            tracing::warn!(qid = %pair.qid, "clean and corrupted runs have the same metric: values are NaN");
        }
        let variants = decoder_variants(layers, heads, t, cfg);
        let mut rows = run.run_decoder(&variants, cfg.batch_size)?;
        if cfg.targets.contains(&PatchTarget::EncoderPositions) {
            rows.extend(run.run_encoder_positions(cfg.batch_size)?);
        }
        for r in rows {
            table.qid.push(pair.qid.clone());
            table.clean_docid.push(pair.clean_docid.clone());
            table.corrupt_docid.push(corrupt_label.clone());
            table.target.push(r.variant.target.to_string());
            table.layer.push(r.variant.layer);
            table.component.push(r.variant.component);
            table.head.push(r.variant.head);
            table.position.push(r.variant.position);
            table.metric.push(cfg.metric.name().to_string());
            table.raw.push(r.raw);
            table.clean.push(m_clean);
            table.corrupt.push(m_corrupt);
            table.value.push(if denom.abs() < 1e-9 {
                f64::NAN
            } else {
                (r.raw - m_corrupt) / denom
            });
        }
        tracing::debug!(qid = %pair.qid, m_clean, m_corrupt, "patched pair");
    }
    let h = table.qid.len();
    Ok(DataFrame::new(
        h,
        vec![
            col("qid", table.qid),
            col("clean_docid", table.clean_docid),
            col("corrupt_docid", table.corrupt_docid),
            col("target", table.target),
            col("layer", table.layer),
            col("component", table.component),
            col("head", table.head),
            col("position", table.position),
            col("metric", table.metric),
            col("raw", table.raw),
            col("clean", table.clean),
            col("corrupt", table.corrupt),
            col("value", table.value),
        ],
    )?)
}

/// The external docid an atomic docid token stands for, else the token's name.
pub(crate) fn token_label(gm: &GenirModel, tok: usize) -> String {
    let off = gm.scheme.token_offset as usize;
    if gm.scheme.is_atomic() {
        if let Some(d) = (0..gm.scheme.len()).find(|&d| gm.scheme.target(d)[0] as usize == tok) {
            return gm.scheme.docids[d].clone();
        }
    }
    tok.checked_sub(off)
        .and_then(|i| gm.scheme.token_names.get(i).cloned())
        .or_else(|| gm.tok.id_to_token(tok as u32))
        .unwrap_or_else(|| format!("<{tok}>"))
}
