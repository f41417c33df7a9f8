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
use genir_data::Table;
use genir_model::hooks::{
    Activation, ActivationCache, AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Intervention,
    Selection, Site, Stack,
};
use genir_model::t5::{pad_batch, KvPair, T5Model};
use genir_train::bundle::GenirModel;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::common::{cached3, col, docid_block, host, Probe};
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

/// A probe drawn with `rng` among those whose index `differs` accepts (`None`: none does).
fn pick_other<'p>(
    probes: &'p [Probe],
    differs: impl Fn(usize) -> bool,
    rng: &mut ChaCha8Rng,
) -> Option<&'p Probe> {
    let others: Vec<&Probe> = (0..probes.len())
        .filter(|&j| differs(j))
        .map(|j| &probes[j])
        .collect();
    others.choose(rng).copied()
}

/// Builds one pair per probe with the given corruption.
pub fn make_pairs(probes: &[Probe], corruption: &Corruption) -> Result<Vec<PatchPair>> {
    pairs_where(probes, corruption, |p, o| o.docid != p.docid, false)
}

/// [`make_pairs`] for patching decoding step `step` of `gm`'s docids (`PatchConfig::decoder_prefix`): an
/// [`Corruption::OtherQuery`] partner's docid must have a token at that step, and another one than the clean
/// docid's (the compared token: with the same one, every cell of the pair would be 0 / 0); a probe no other
/// probe can be paired with that way is left out (a warning), and none left is an error. Step 0 of atomic
/// docids is [`make_pairs`]. A probe whose own docid is too short is an error naming it.
pub fn make_pairs_at(
    gm: &GenirModel,
    probes: &[Probe],
    corruption: &Corruption,
    step: usize,
) -> Result<Vec<PatchPair>> {
    let token = |docid: &str| {
        gm.scheme
            .index_of(docid)
            .and_then(|d| gm.scheme.target(d).get(step).copied())
    };
    if let Some(p) = probes.iter().find(|p| token(&p.docid).is_none()) {
        return Err(InterpError::Input(format!(
            "query {}: docid {} has no token at decoding step {step} (or is not the model's)",
            p.qid, p.docid
        )));
    }
    let pairs = pairs_where(
        probes,
        corruption,
        |p, o| o.docid != p.docid && token(&o.docid).is_some_and(|t| Some(t) != token(&p.docid)),
        true,
    )?;
    if pairs.is_empty() {
        return Err(InterpError::Input(format!(
            "no two queries' docids have different tokens at decoding step {step}"
        )));
    }
    Ok(pairs)
}

/// One pair per probe; `OtherQuery` partners are drawn among the probes `accept(clean, other)` takes (a
/// probe without one is an error, or with `skip_unpaired` left out with a warning).
fn pairs_where(
    probes: &[Probe],
    corruption: &Corruption,
    accept: impl Fn(&Probe, &Probe) -> bool,
    skip_unpaired: bool,
) -> Result<Vec<PatchPair>> {
    if probes.is_empty() {
        return Err(InterpError::Input("no queries to pair".into()));
    }
    match corruption {
        Corruption::OtherQuery { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let mut pairs = Vec::with_capacity(probes.len());
            for p in probes {
                let Some(o) = pick_other(probes, |j| accept(p, &probes[j]), &mut rng) else {
                    if skip_unpaired {
                        tracing::warn!(qid = %p.qid, "no partner for this query: left out");
                        continue;
                    }
                    return Err(InterpError::Input(format!(
                        "query {}: no other query with a different document to corrupt with",
                        p.qid
                    )));
                };
                pairs.push(PatchPair::new(
                    &p.qid,
                    &p.text,
                    &p.docid,
                    &o.text,
                    Some(o.docid.clone()),
                ));
            }
            Ok(pairs)
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

/// Pairs whose corrupted query has its relevant terms replaced: every word of the query that shares a term
/// with the relevant document (title or text, [`genir_data::perturb::tokenize`]d) is replaced by a term drawn
/// with a seeded RNG from the other probes' queries that occurs neither in that document nor in the query.
/// The corrupted docid is the corrupted run's top docid other than the clean one. A probe none of whose words
/// occur in its document is left out with a warning (its corrupted query would be the clean one); an unknown
/// document, or no pair left, is an error.
pub fn relevant_term_pairs(
    probes: &[Probe],
    corpus: &genir_data::Corpus,
    seed: u64,
) -> Result<Vec<PatchPair>> {
    use genir_data::perturb::tokenize;
    use std::collections::BTreeSet;
    if probes.is_empty() {
        return Err(InterpError::Input("no queries to pair".into()));
    }
    let pool: BTreeSet<String> = probes.iter().flat_map(|p| tokenize(&p.text)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pairs = Vec::new();
    for p in probes {
        let doc = corpus.get(&p.docid).ok_or_else(|| {
            InterpError::Input(format!(
                "query {}: its relevant document {} is not in the corpus",
                p.qid, p.docid
            ))
        })?;
        let doc_terms: BTreeSet<String> = tokenize(&doc.full_text()).into_iter().collect();
        let query_terms: BTreeSet<String> = tokenize(&p.text).into_iter().collect();
        let candidates: Vec<&String> = pool
            .iter()
            .filter(|t| !doc_terms.contains(*t) && !query_terms.contains(*t))
            .collect();
        let mut replaced = 0;
        let words: Vec<String> = p
            .text
            .split_whitespace()
            .map(|w| {
                if tokenize(w).iter().any(|t| doc_terms.contains(t)) {
                    if let Some(t) = candidates.choose(&mut rng) {
                        replaced += 1;
                        return (*t).clone();
                    }
                }
                w.to_string()
            })
            .collect();
        if replaced == 0 {
            tracing::warn!(qid = %p.qid, "no query word occurs in the relevant document (or nothing to replace it with): pair left out");
            continue;
        }
        pairs.push(PatchPair::new(
            &p.qid,
            &p.text,
            &p.docid,
            words.join(" "),
            None,
        ));
    }
    if pairs.is_empty() {
        return Err(InterpError::Input(
            "no query shares a word with its relevant document: no relevant-term pairs".into(),
        ));
    }
    Ok(pairs)
}

/// Pairs for the second multi-token experiment (use with [`PatchConfig::corrupt_prefix`]): each probe's
/// query is both the clean and the corrupted query, and the corrupted docid is another probe's whose first
/// `prefix` docid tokens differ from the clean docid's and whose next token (the one compared) differs too
/// (drawn with a seeded RNG), so the two runs differ only in the docid prefix fed to the decoder and the
/// compared tokens have a logit difference.
pub fn prefix_pairs(
    gm: &GenirModel,
    probes: &[Probe],
    prefix: usize,
    seed: u64,
) -> Result<Vec<PatchPair>> {
    if prefix == 0 {
        return Err(InterpError::Input(
            "prefix pairs need a docid prefix of at least one token (decoder_prefix >= 1)".into(),
        ));
    }
    if probes.is_empty() {
        return Err(InterpError::Input("no queries to pair".into()));
    }
    let head = |docid: &str, qid: &str| -> Result<Vec<u32>> {
        let doc = gm
            .scheme
            .require(docid, &format!(" (document of query {qid})"))?;
        let target = gm.scheme.target(doc);
        if target.len() <= prefix {
            return Err(InterpError::Input(format!(
                "query {qid}: docid {docid} has {} tokens, not more than the prefix of {prefix}",
                target.len()
            )));
        }
        Ok(target[..=prefix].to_vec())
    };
    let heads: Vec<Vec<u32>> = probes
        .iter()
        .map(|p| head(&p.docid, &p.qid))
        .collect::<Result<_>>()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    probes
        .iter()
        .zip(&heads)
        .map(|(p, h)| {
            // `h` is the prefix and the compared token after it
            let differs = |j: usize| heads[j][..prefix] != h[..prefix] && heads[j][prefix] != h[prefix];
            let o = pick_other(probes, differs, &mut rng).ok_or_else(|| {
                InterpError::Input(format!(
                    "query {}: no other query's docid starts with different {prefix} token(s) and has a \
                     different token after them",
                    p.qid
                ))
            })?;
            Ok(PatchPair::new(
                &p.qid,
                &p.text,
                &p.docid,
                &p.text,
                Some(o.docid.clone()),
            ))
        })
        .collect()
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
    /// The decoder's final norm output (`decoder.ln_final.hook_normalized`, all positions): the metric is a
    /// linear function of it, so exact and attribution patching must agree there (a check row).
    FinalNorm,
}

impl PatchTarget {
    /// The name used in the `target` column.
    pub fn name(self) -> &'static str {
        match self {
            PatchTarget::Components => "components",
            PatchTarget::Heads => "heads",
            PatchTarget::EncoderPositions => "encoder_positions",
            PatchTarget::DecoderPositions => "decoder_positions",
            PatchTarget::FinalNorm => "final_norm",
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
    /// Feed the corrupted run the first `decoder_prefix` tokens of the pair's corrupted docid instead of the
    /// clean docid's (every pair must name its `corrupt_docid`). With the query held fixed ([`prefix_pairs`])
    /// this is the second multi-token experiment: what the decoder carries from the earlier docid tokens,
    /// as opposed to what it reads from the query (clean prefix, corrupted query).
    pub corrupt_prefix: bool,
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
            corrupt_prefix: false,
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
pub(crate) struct Variant {
    pub(crate) target: &'static str,
    pub(crate) layer: i64,
    pub(crate) component: String,
    pub(crate) head: i64,
    pub(crate) position: i64,
    pub(crate) patch: Option<(HookPoint, Selection)>,
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

/// Whether decoder block `l`'s attention of `kind` is absent or was removed (a model saved with components
/// removed, `genir interp ablate --save-removed`): its heads never run, so they have nothing to patch or read.
pub(crate) fn attention_removed(model: &T5Model, l: usize, kind: AttnKind) -> bool {
    model.decoder.blocks.get(l).is_none_or(|b| match kind {
        AttnKind::SelfAttn => b.removed.self_attn,
        AttnKind::CrossAttn => b.removed.cross_attn || b.cross_attn.is_none(),
    })
}

/// The variants of a sweep; heads of removed attentions are left out.
pub(crate) fn decoder_variants(
    model: &T5Model,
    heads: usize,
    t: usize,
    cfg: &PatchConfig,
) -> Vec<Variant> {
    let layers = model.decoder.blocks.len();
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
                        if attention_removed(model, l, kind) {
                            continue;
                        }
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
            PatchTarget::FinalNorm => {
                let point = HookPoint::final_norm(Stack::Decoder);
                v.push(Variant {
                    target: target.name(),
                    layer: layers as i64,
                    component: point.to_string(),
                    head: -1,
                    position: -1,
                    patch: Some((point, Selection::all())),
                });
            }
            PatchTarget::EncoderPositions => {}
        }
    }
    v
}

/// One result row.
pub(crate) struct Row {
    pub(crate) variant: Variant,
    pub(crate) raw: f64,
}

/// Repeats an activation `n` times along the batch axis.
fn repeat(act: &Activation, n: usize) -> Activation {
    match act {
        Activation::Rank3(t) => Activation::Rank3(t.clone().repeat_dim(0, n)),
        Activation::Rank4(t) => Activation::Rank4(t.clone().repeat_dim(0, n)),
    }
}

fn repeat_kv(kv: &[KvPair], n: usize) -> Vec<KvPair> {
    kv.iter()
        .map(|p| KvPair {
            k: p.k.clone().map(|t| t.repeat_dim(0, n)),
            v: p.v.clone().map(|t| t.repeat_dim(0, n)),
        })
        .collect()
}

/// The layer a variant's patched run starts at: its hook point's decoder block, or past the last block
/// (only the final norm runs) for the decoder's final norm and for the unpatched row.
fn start_layer(v: &Variant, layers: usize) -> usize {
    match &v.patch {
        Some((p, _)) => p.layer.unwrap_or(layers),
        None => layers,
    }
}

/// Everything about one pair that the patched runs need.
///
/// The sweep reuses all it can: the encoder ran once for both queries; the cross-attention keys and values
/// of every decoder layer are computed once per run and repeated along the batch; a variant patched at
/// decoder layer `l` starts from the base run's cached residual stream at `l`; and the metric needs only the
/// LM head's rows of the docid tokens (and of the two compared tokens), not the whole vocabulary.
pub(crate) struct PairRun<'m> {
    pub(crate) gm: &'m GenirModel,
    pub(crate) enc_clean: Tensor<3>,
    pub(crate) enc_base: Tensor<3>,
    pub(crate) mask_base: Tensor<2, Int>,
    pub(crate) dec_ids: Tensor<2, Int>,
    /// Cache of the clean run (`decoder.*`): the patch sources.
    pub(crate) cache: ActivationCache,
    /// Cache of the run patched into (`decoder.*`): where patched runs resume.
    pub(crate) base_cache: ActivationCache,
    /// Cross-attention keys/values of every decoder layer over the clean encoder output.
    pub(crate) cross_clean: Vec<KvPair>,
    /// The same over the encoder output of the run patched into.
    pub(crate) cross_base: Vec<KvPair>,
    /// Encoder positions both queries have (the shorter query's length): the positions patched one at a
    /// time. Past it one of the two runs has padding, whose encoder output is no token's.
    pub(crate) shared_positions: usize,
    self_bias: Tensor<4>,
    enc_bias: Tensor<4>,
    /// `[k, d_model]`: the LM head rows of `tokens`, with the output scaling folded in.
    head_rows: Tensor<2>,
    /// Docid-block tokens first (`block_len` of them), then the compared tokens outside it.
    tokens: Vec<usize>,
    block_len: usize,
    pub(crate) clean_tok: usize,
    pub(crate) corrupt_tok: usize,
    pub(crate) metric: PatchMetric,
}

impl PairRun<'_> {
    fn index_of(&self, tok: usize) -> usize {
        self.tokens
            .iter()
            .position(|&t| t == tok)
            .unwrap_or_default()
    }

    fn metric_of(&self, row: &[f32]) -> f64 {
        let c = row[self.index_of(self.clean_tok)];
        match self.metric {
            PatchMetric::LogitDiff => {
                f64::from(c) - f64::from(row[self.index_of(self.corrupt_tok)])
            }
            PatchMetric::ReciprocalRank => {
                let better = row[..self.block_len].iter().filter(|&&v| v > c).count();
                1.0 / (1 + better) as f64
            }
        }
    }

    /// Logits of `tokens` at the last position of final-normed decoder states `[n, t, d] -> [n, k]`.
    fn token_logits(&self, h: Tensor<3>) -> Result<(Vec<f32>, usize)> {
        let [n, t, d] = h.dims();
        let last = h.slice([0..n, t - 1..t, 0..d]).reshape([n, d]);
        let k = self.tokens.len();
        Ok((host(last.matmul(self.head_rows.clone().transpose()))?, k))
    }

    /// The logit difference (clean docid token minus corrupted docid token) at the last position of
    /// final-normed decoder states `[1, t, d_model]`, as a tensor (differentiable when `h` is).
    pub(crate) fn logit_diff(&self, h: Tensor<3>) -> Tensor<1> {
        let [n, t, d] = h.dims();
        let last = h.slice([0..n, t - 1..t, 0..d]).reshape([n, d]);
        let logits = last.matmul(self.head_rows.clone().transpose());
        let (c, x) = (
            self.index_of(self.clean_tok),
            self.index_of(self.corrupt_tok),
        );
        (logits.clone().slice([0..n, c..c + 1]) - logits.slice([0..n, x..x + 1])).sum()
    }

    /// Metric per row of final-normed decoder states `[n, t, d_model]` (last position).
    pub(crate) fn metrics(&self, h: Tensor<3>) -> Result<Vec<f64>> {
        let (values, k) = self.token_logits(h)?;
        Ok(values.chunks(k).map(|row| self.metric_of(row)).collect())
    }

    /// The decoder from its first layer for `n` rows of the base run (`x0`: the base run's
    /// `decoder.blocks.0.hook_resid_pre`), with `hooks`; final-normed states `[n, t, d_model]`.
    pub(crate) fn decode_rows(
        &self,
        x0: Tensor<3>,
        n: usize,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>> {
        Ok(self.gm.model.decode_from_kv(
            x0.repeat_dim(0, n),
            0,
            self.self_bias.clone(),
            &repeat_kv(&self.cross_base, n),
            self.enc_bias.clone(),
            hooks,
        )?)
    }

    /// Runs every variant; rows come back in the order of `variants`.
    pub(crate) fn run_decoder(&self, variants: &[Variant], batch: usize) -> Result<Vec<Row>> {
        let layers = self.gm.model.decoder.blocks.len();
        let mut raw = vec![f64::NAN; variants.len()];
        let mut order: Vec<usize> = (0..variants.len()).collect();
        order.sort_by_key(|&i| start_layer(&variants[i], layers));
        let mut i0 = 0;
        while i0 < order.len() {
            let start = start_layer(&variants[order[i0]], layers);
            let mut i1 = i0;
            while i1 < order.len() && start_layer(&variants[order[i1]], layers) == start {
                i1 += 1;
            }
            let resume = if start < layers {
                HookPoint::block(Stack::Decoder, start, Site::ResidPre)
            } else {
                HookPoint::block(Stack::Decoder, layers - 1, Site::ResidPost)
            };
            let x0 = cached3(&self.base_cache, resume)?;
            for chunk in order[i0..i1].chunks(batch.max(1)) {
                let n = chunk.len();
                let mut hooks = Hooks::none();
                let mut sources: std::collections::HashMap<HookPoint, Activation> =
                    Default::default();
                for (row, &vi) in chunk.iter().enumerate() {
                    if let Some((point, sel)) = &variants[vi].patch {
                        let source = match sources.get(point) {
                            Some(s) => s.clone(),
                            None => {
                                let s = repeat(self.cache.require(point)?, n);
                                sources.insert(*point, s.clone());
                                s
                            }
                        };
                        let selection = Selection {
                            batch: Some(vec![row]),
                            ..sel.clone()
                        };
                        hooks.add(*point, Intervention::Patch { source, selection });
                    }
                }
                let h = self.gm.model.decode_from_kv(
                    x0.clone().repeat_dim(0, n),
                    start,
                    self.self_bias.clone(),
                    &repeat_kv(&self.cross_base, n),
                    self.enc_bias.clone(),
                    &mut hooks,
                )?;
                for (&vi, m) in chunk.iter().zip(self.metrics(h)?) {
                    raw[vi] = m;
                }
            }
            i0 = i1;
        }
        Ok(variants
            .iter()
            .zip(raw)
            .map(|(v, raw)| Row {
                variant: v.clone(),
                raw,
            })
            .collect())
    }

    /// Patches the encoder output one source position at a time, at the positions both queries have
    /// ([`PairRun::shared_positions`]: when the lengths differ, a position past the shorter query would copy
    /// a padding row into a real token, or a real token into a masked one). The cross-attention keys and
    /// values are linear in the encoder output row by row, so a patched position's keys/values are the clean
    /// run's at that position and the base run's elsewhere: no projection is recomputed.
    fn run_encoder_positions(&self, batch: usize) -> Result<Vec<Row>> {
        let [_, src, _] = self.enc_base.dims();
        let device = self.enc_base.device();
        let point = HookPoint::final_norm(Stack::Encoder);
        let x0 = cached3(
            &self.base_cache,
            HookPoint::block(Stack::Decoder, 0, Site::ResidPre),
        )?;
        let diff: Vec<KvPair> = self
            .cross_clean
            .iter()
            .zip(&self.cross_base)
            .map(|(c, b)| KvPair {
                k: c.k.clone().zip(b.k.clone()).map(|(c, b)| c - b),
                v: c.v.clone().zip(b.v.clone()).map(|(c, b)| c - b),
            })
            .collect();
        let positions: Vec<usize> = (0..self.shared_positions.min(src)).collect();
        let mut rows = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(batch.max(1)) {
            let n = chunk.len();
            let mut onehot = vec![0f32; n * src];
            for (i, &p) in chunk.iter().enumerate() {
                onehot[i * src + p] = 1.0;
            }
            let sel: Tensor<4> =
                Tensor::from_data(TensorData::new(onehot, [n, 1, src, 1]), &device);
            let mix = |b: &Option<Tensor<4>>, d: &Option<Tensor<4>>| {
                b.clone()
                    .zip(d.clone())
                    .map(|(b, d)| b.repeat_dim(0, n) + d.repeat_dim(0, n) * sel.clone())
            };
            let cross: Vec<KvPair> = self
                .cross_base
                .iter()
                .zip(&diff)
                .map(|(b, d)| KvPair {
                    k: mix(&b.k, &d.k),
                    v: mix(&b.v, &d.v),
                })
                .collect();
            let h = self.gm.model.decode_from_kv(
                x0.clone().repeat_dim(0, n),
                0,
                self.self_bias.clone(),
                &cross,
                self.enc_bias.clone(),
                &mut Hooks::none(),
            )?;
            let m = self.metrics(h)?;
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

/// A pair prepared for patching: the run, its metric on the clean and corrupted runs, and the label of the
/// corrupted docid.
pub(crate) struct PreparedPair<'m> {
    pub(crate) run: PairRun<'m>,
    pub(crate) m_clean: f64,
    pub(crate) m_corrupt: f64,
    pub(crate) corrupt_label: String,
    /// Decoder positions.
    pub(crate) t: usize,
}

/// Encodes both queries of a pair once, runs and caches the clean and corrupted decoders, and resolves the
/// compared docid tokens.
pub(crate) fn prepare_pair<'m>(
    gm: &'m GenirModel,
    searcher: &genir_train::search::Searcher<'_>,
    pair: &PatchPair,
    cfg: &PatchConfig,
) -> Result<PreparedPair<'m>> {
    let model = &gm.model;
    let device = model.shared.val().device();
    let pad = model.config.pad_token_id as u32;
    let start = model.config.decoder_start() as u32;
    let block = docid_block(gm);
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
    let dec_tensor = |target: &[u32]| -> Tensor<2, Int> {
        let mut dec = vec![i64::from(start)];
        dec.extend(target[..prefix].iter().map(|&x| i64::from(x)));
        let t = dec.len();
        Tensor::from_data(TensorData::new(dec, [1, t]), &device)
    };
    let t = prefix + 1;
    let dec_ids = dec_tensor(&clean_target);
    let corrupt_dec_ids = if cfg.corrupt_prefix {
        let docid = pair.corrupt_docid.as_ref().ok_or_else(|| {
            InterpError::Input(format!(
                "pair {}: patching with the corrupted docid's prefix needs the pair's corrupted docid",
                pair.qid
            ))
        })?;
        let doc = gm.scheme.require(docid, &ctx("corrupted docid"))?;
        let target = gm.scheme.target(doc);
        if target.len() <= prefix {
            return Err(InterpError::Input(format!(
                "decoder_prefix {prefix} is not shorter than the docid target of {docid} ({} tokens)",
                target.len()
            )));
        }
        dec_tensor(&target)
    } else {
        dec_ids.clone()
    };
    let ids = searcher.encode_queries(&[pair.clean.clone(), pair.corrupt.clone()])?;
    if ids[0].len() != ids[1].len() {
        tracing::debug!(qid = %pair.qid, clean = ids[0].len(), corrupt = ids[1].len(),
            "query lengths differ: the shorter is padded and masked, encoder positions are patched up to its length");
    }
    // One encoder pass for both queries of the pair.
    let (src, mask) = pad_batch(&ids, pad, &device)?;
    let enc = model.encode(src, mask.clone(), &mut Hooks::none())?;
    let [_, s, d] = enc.dims();
    let enc_clean = enc.clone().slice([0..1, 0..s, 0..d]);
    let enc_corrupt = enc.slice([1..2, 0..s, 0..d]);
    let mask_clean = mask.clone().slice([0..1, 0..s]);
    let mask_corrupt = mask.slice([1..2, 0..s]);
    let filter = || HookFilter::parse("decoder.*");
    let mut hooks = Hooks::caching(filter());
    let clean_h = model.decode_hidden(
        &enc_clean,
        mask_clean.clone(),
        dec_ids.clone(),
        None,
        &mut hooks,
    )?;
    let cache = hooks.take_cache();
    let mut hooks = Hooks::caching(filter());
    let corrupt_h = model.decode_hidden(
        &enc_corrupt,
        mask_corrupt.clone(),
        corrupt_dec_ids.clone(),
        None,
        &mut hooks,
    )?;
    let corrupt_cache = hooks.take_cache();
    let mut tokens: Vec<usize> = block.clone().collect();
    let block_len = tokens.len();
    let add_token = |tok: usize, tokens: &mut Vec<usize>| {
        if !tokens.contains(&tok) {
            tokens.push(tok);
        }
    };
    add_token(clean_tok, &mut tokens);
    let explicit_corrupt = match &pair.corrupt_docid {
        Some(docid) => {
            let doc = gm.scheme.require(docid, &ctx("corrupted docid"))?;
            let tok = *gm.scheme.target(doc).get(prefix).ok_or_else(|| {
                InterpError::Input(format!(
                    "decoder_prefix {prefix} is not shorter than the docid target of {docid}"
                ))
            })? as usize;
            add_token(tok, &mut tokens);
            Some((tok, docid.clone()))
        }
        None => None,
    };
    let rows = {
        let unembed = model.unembed();
        let idx: Tensor<1, Int> = Tensor::from_data(
            TensorData::new(
                tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [tokens.len()],
            ),
            &device,
        );
        let scale = model.output_scale();
        let r = unembed.select(0, idx);
        if scale != 1.0 {
            r * scale
        } else {
            r
        }
    };
    let (enc_base, mask_base, base_cache, base_dec_ids) = if cfg.into_clean {
        (enc_clean.clone(), mask_clean, cache.clone(), dec_ids)
    } else {
        (enc_corrupt, mask_corrupt, corrupt_cache, corrupt_dec_ids)
    };
    let mut run = PairRun {
        gm,
        cross_clean: model.cross_kv(&enc_clean),
        cross_base: model.cross_kv(&enc_base),
        shared_positions: ids[0].len().min(ids[1].len()),
        self_bias: model.decoder_self_bias(t, &device)?,
        enc_bias: model.encoder_bias(mask_base.clone()),
        enc_clean,
        enc_base,
        mask_base,
        dec_ids: base_dec_ids,
        cache,
        base_cache,
        head_rows: rows,
        tokens,
        block_len,
        clean_tok,
        corrupt_tok: clean_tok,
        metric: cfg.metric,
    };
    let (corrupt_tok, corrupt_label) = match explicit_corrupt {
        Some(x) => x,
        None => {
            let (row, _) = run.token_logits(corrupt_h.clone())?;
            let tok = (0..run.block_len)
                .filter(|&i| run.tokens[i] != clean_tok)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .map(|i| run.tokens[i])
                .ok_or_else(|| InterpError::Input("the scheme has a single docid token".into()))?;
            (tok, token_label(gm, tok))
        }
    };
    run.corrupt_tok = corrupt_tok;
    let m_clean = run.metrics(clean_h)?[0];
    let m_corrupt = run.metrics(corrupt_h)?[0];
    Ok(PreparedPair {
        run,
        m_clean,
        m_corrupt,
        corrupt_label,
        t,
    })
}

/// Columns of the patching table being built.
#[derive(Default)]
pub(crate) struct PatchRows {
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

impl PatchRows {
    /// Adds one row; `value` is normalised by the clean and corrupted metrics (NaN when they are equal).
    pub(crate) fn push(
        &mut self,
        pair: &PatchPair,
        corrupt_label: &str,
        metric: &str,
        r: Row,
        m_clean: f64,
        m_corrupt: f64,
    ) {
        let denom = m_clean - m_corrupt;
        self.qid.push(pair.qid.clone());
        self.clean_docid.push(pair.clean_docid.clone());
        self.corrupt_docid.push(corrupt_label.to_string());
        self.target.push(r.variant.target.to_string());
        self.layer.push(r.variant.layer);
        self.component.push(r.variant.component);
        self.head.push(r.variant.head);
        self.position.push(r.variant.position);
        self.metric.push(metric.to_string());
        self.raw.push(r.raw);
        self.clean.push(m_clean);
        self.corrupt.push(m_corrupt);
        self.value.push(if denom.abs() < 1e-9 {
            f64::NAN
        } else {
            (r.raw - m_corrupt) / denom
        });
    }

    pub(crate) fn into_frame(self) -> Result<Table> {
        Ok(Table::new(vec![
            col("qid", self.qid),
            col("clean_docid", self.clean_docid),
            col("corrupt_docid", self.corrupt_docid),
            col("target", self.target),
            col("layer", self.layer),
            col("component", self.component),
            col("head", self.head),
            col("position", self.position),
            col("metric", self.metric),
            col("raw", self.raw),
            col("clean", self.clean),
            col("corrupt", self.corrupt),
            col("value", self.value),
        ])?)
    }
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
) -> Result<Table> {
    if pairs.is_empty() {
        return Err(InterpError::Input("no query pairs to patch".into()));
    }
    let model = &gm.model;
    let searcher = gm.searcher()?;
    let heads = model.config.num_heads;
    let mut table = PatchRows::default();
    for pair in pairs {
        let PreparedPair {
            run,
            m_clean,
            m_corrupt,
            corrupt_label,
            t,
        } = prepare_pair(gm, &searcher, pair, cfg)?;
        let denom = m_clean - m_corrupt;
        if denom.abs() < 1e-9 {
            tracing::warn!(qid = %pair.qid, "clean and corrupted runs have the same metric: values are NaN");
        }
        let variants = decoder_variants(&gm.model, heads, t, cfg);
        let mut rows = run.run_decoder(&variants, cfg.batch_size)?;
        if cfg.targets.contains(&PatchTarget::EncoderPositions) {
            rows.extend(run.run_encoder_positions(cfg.batch_size)?);
        }
        for r in rows {
            table.push(
                pair,
                &corrupt_label,
                cfg.metric.name(),
                r,
                m_clean,
                m_corrupt,
            );
        }
        tracing::debug!(qid = %pair.qid, m_clean, m_corrupt, "patched pair");
    }
    table.into_frame()
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
