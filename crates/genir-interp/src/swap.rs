//! Constrained atomic ranking with hooks, the encoder swap (model A's encoder under model B's decoder), and
//! component ablation measured by retrieval quality.

use burn::prelude::*;
use genir_data::Table;
use genir_data::{Queries, QuerySet, Run, RunEntry};
use genir_model::hooks::{HookFilter, HookPoint, Hooks, Site, Stack};
use genir_model::t5::{pad_batch, RmsNorm, T5Model};
use genir_train::bundle::GenirModel;
use genir_train::docid::DocidScheme;
use genir_train::metrics::{evaluate, Evaluation};
use genir_train::search::{Hit, Searcher};

use crate::common::{col, host};
use crate::error::{InterpError, Result};

/// Which tokens a document's rank counts, in the ablation and encoder-swap evaluations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RankOver {
    /// Among the docid tokens (live and allowed ones), as constrained search ranks them.
    #[default]
    Docids,
    /// Among the whole vocabulary, as the paper's scripts rank them (`logits.topk` over every token, e.g.
    /// `eval_patching_all_stages.py`, `swap_encoder.py`): a text token scoring above the relevant docid takes
    /// a rank (it enters the run as `[token ID]`, a document no query is judged on), so an ablation that makes
    /// the model emit text tokens loses those queries.
    Vocabulary,
}

/// The run entry name of a non-docid token ranked with [`RankOver::Vocabulary`].
pub fn token_entry(id: usize) -> String {
    format!("[token {id}]")
}

/// Ranks atomic docids for a batch of tokenized queries: `encoder.encode`, then one `decoder.decode_step`
/// from the start token, log-softmax over the vocabulary read at the docid tokens (as
/// [`Searcher`] does for atomic docids; documents deleted by genir-edit are never ranked, as there). `hooks`
/// act on both models' passes. With `final_norm`, the
/// encoder's last residual stream goes through that norm instead of the encoder's own.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rank_atomic(
    encoder: &T5Model,
    decoder: &T5Model,
    scheme: &DocidScheme,
    sources: &[Vec<u32>],
    allowed: Option<&[bool]>,
    k: usize,
    hooks: &mut Hooks<'_>,
    final_norm: Option<&RmsNorm>,
    over: RankOver,
) -> Result<Vec<Vec<Hit>>> {
    if !scheme.is_atomic() {
        return Err(InterpError::Input(format!(
            "ranking with hooks or swapped encoders supports atomic docids only (this scheme is {})",
            scheme.kind
        )));
    }
    let device = encoder.shared.val().device();
    let pad = encoder.config.pad_token_id as u32;
    let (ids, mask) = pad_batch(sources, pad, &device)?;
    let enc = match final_norm {
        None => encoder.encode(ids, mask.clone(), hooks)?,
        Some(norm) => {
            // the last block's output, before the encoder's own final norm
            let layers = encoder.encoder.blocks.len();
            let last = layers
                .checked_sub(1)
                .map(|l| HookPoint::block(Stack::Encoder, l, Site::ResidPost))
                .ok_or_else(|| InterpError::Input("the encoder has no blocks".into()))?;
            let mut cache = Hooks::caching(HookFilter::points(&[last]));
            encoder.encode(ids, mask.clone(), &mut cache)?;
            let resid = cache.take_cache().require(&last)?.rank3(&last)?;
            norm.forward(resid)
        }
    };
    let mut state = decoder.start_decoding(enc, mask);
    let rows = sources.len();
    let start = decoder.config.decoder_start() as i64;
    let start_ids: Tensor<2, Int> =
        Tensor::from_data(TensorData::new(vec![start; rows], [rows, 1]), &device);
    let logits = decoder.decode_step(&mut state, start_ids, hooks)?;
    let v = logits.dims()[2];
    let logp = burn::tensor::activation::log_softmax(logits.reshape([rows, v]), 1);
    let off = scheme.token_offset as usize;
    let n = scheme.n_tokens();
    // Vocabulary: the whole row, text tokens ranked too (doc index usize::MAX marks them)
    let (lp, width, first) = match over {
        RankOver::Docids => (host(logp.slice([0..rows, off..off + n]))?, n, off),
        RankOver::Vocabulary => (host(logp)?, v, 0),
    };
    let docid_tokens = off..off + n;
    Ok((0..rows)
        .map(|r| {
            let row = &lp[r * width..(r + 1) * width];
            let mut cand: Vec<(usize, f32)> = (0..scheme.len())
                .filter(|&d| {
                    !scheme.is_deleted(d)
                        && allowed.is_none_or(|a| a.get(d).copied().unwrap_or(false))
                })
                .map(|d| (d, row[scheme.target(d)[0] as usize - first]))
                .collect();
            let mut tokens: Vec<(usize, f32)> = match over {
                RankOver::Docids => Vec::new(),
                RankOver::Vocabulary => (0..v)
                    .filter(|t| !docid_tokens.contains(t))
                    .map(|t| (t, row[t]))
                    .collect(),
            };
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(k);
            tokens.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            tokens.truncate(k);
            let mut hits: Vec<Hit> = cand
                .into_iter()
                .map(|(doc, score)| Hit {
                    doc,
                    docid: scheme.docids[doc].clone(),
                    score,
                })
                .chain(tokens.into_iter().map(|(t, score)| Hit {
                    doc: usize::MAX,
                    docid: token_entry(t),
                    score,
                }))
                .collect();
            // (evaluation orders the run again, trec_eval's way: ties by descending name)
            hits.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then((a.doc == usize::MAX).cmp(&(b.doc == usize::MAX)))
            });
            hits.truncate(k);
            hits
        })
        .collect())
}

/// Searches every query of `queries` (batches of `batch_size`) and returns a TREC run.
pub(crate) fn run_queries(
    queries: &Queries,
    batch_size: usize,
    tag: &str,
    mut search: impl FnMut(&[String]) -> Result<Vec<Vec<Hit>>>,
) -> Result<Run> {
    let list: Vec<_> = queries.iter().collect();
    let mut entries = Vec::new();
    for chunk in list.chunks(batch_size.max(1)) {
        let texts: Vec<String> = chunk.iter().map(|q| q.text.clone()).collect();
        for (q, hits) in chunk.iter().zip(search(&texts)?) {
            for (i, h) in hits.into_iter().enumerate() {
                entries.push(RunEntry {
                    qid: q.qid.clone(),
                    docid: h.docid,
                    rank: (i + 1) as u32,
                    score: f64::from(h.score),
                    tag: tag.to_string(),
                });
            }
        }
    }
    Ok(Run::new(entries))
}

/// Evaluates a run over the queries of `set` (and only those).
pub(crate) fn evaluate_set(run: &Run, set: &QuerySet) -> Evaluation {
    let qids: Vec<String> = set.queries.iter().map(|q| q.qid.clone()).collect();
    evaluate(run, &set.qrels, Some(&qids))
}

/// Whose final encoder norm the swapped encoder's output goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SwapNorm {
    /// Model A's: A's whole encoder, its final norm included.
    #[default]
    Encoder,
    /// Model B's: A's encoder blocks, then B's final norm. The paper's swap (technion-cs-nlp/re-gen-ir,
    /// `swap_encoder.py`) patches A's `encoder.{last}.hook_resid_post` into B's run in TransformerLens,
    /// which applies B's `encoder_final_ln` after it.
    Decoder,
}

/// Model A's encoder feeding model B's decoder: A tokenizes and encodes the query, B's decoder ranks B's
/// (atomic) docids.
pub struct EncoderSwap<'a> {
    encoder: &'a T5Model,
    decoder: &'a T5Model,
    scheme: &'a DocidScheme,
    searcher: Searcher<'a>,
    /// Queries per forward pass.
    pub batch_size: usize,
    /// Whose final encoder norm applies ([`SwapNorm::Encoder`] unless set).
    pub norm: SwapNorm,
    /// What the evaluation ranks documents among ([`RankOver::Docids`] unless set; [`EncoderSwap::search`]
    /// always returns documents).
    pub rank_over: RankOver,
}

impl<'a> EncoderSwap<'a> {
    /// Pairs `encoder`'s encoder with `decoder`'s decoder. They must have the same `d_model` and docid
    /// schemes over the same document list, with atomic docids.
    pub fn new(encoder: &'a GenirModel, decoder: &'a GenirModel) -> Result<Self> {
        let (a, b) = (&encoder.model.config, &decoder.model.config);
        if a.d_model != b.d_model {
            return Err(InterpError::Incompatible(format!(
                "the encoder's d_model is {} but the decoder's is {}",
                a.d_model, b.d_model
            )));
        }
        if encoder.scheme.docids != decoder.scheme.docids {
            return Err(InterpError::Incompatible(format!(
                "the docid schemes list different documents ({} and {} docids{})",
                encoder.scheme.len(),
                decoder.scheme.len(),
                if encoder.scheme.len() == decoder.scheme.len() {
                    ", in another order or with other ids"
                } else {
                    ""
                }
            )));
        }
        if !decoder.scheme.is_atomic() {
            return Err(InterpError::Incompatible(format!(
                "the encoder swap ranks atomic docids; the decoder's scheme is {}",
                decoder.scheme.kind
            )));
        }
        Ok(Self {
            encoder: &encoder.model,
            decoder: &decoder.model,
            scheme: &decoder.scheme,
            searcher: encoder.searcher()?,
            batch_size: 64,
            norm: SwapNorm::Encoder,
            rank_over: RankOver::Docids,
        })
    }

    /// The top `k` documents of each query, optionally only among documents for which `allowed` is true.
    pub fn search(
        &self,
        queries: &[String],
        k: usize,
        allowed: Option<&[bool]>,
    ) -> Result<Vec<Vec<Hit>>> {
        self.rank(queries, k, allowed, RankOver::Docids)
    }

    fn rank(
        &self,
        queries: &[String],
        k: usize,
        allowed: Option<&[bool]>,
        over: RankOver,
    ) -> Result<Vec<Vec<Hit>>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.searcher.encode_queries(queries)?;
        rank_atomic(
            self.encoder,
            self.decoder,
            self.scheme,
            &ids,
            allowed,
            k,
            &mut Hooks::none(),
            match self.norm {
                SwapNorm::Encoder => None,
                SwapNorm::Decoder => Some(&self.decoder.encoder.final_norm),
            },
            over,
        )
    }

    /// A TREC run of the top `k` documents of every query (with [`RankOver::Vocabulary`], text tokens that
    /// outrank them take places too, as `[token ID]` entries).
    pub fn run(&self, queries: &Queries, k: usize, tag: &str) -> Result<Run> {
        run_queries(queries, self.batch_size, tag, |q| {
            self.rank(q, k, None, self.rank_over)
        })
    }

    /// Hits@1 / Hits@10 (with [`evaluate`]) on `set`, and, when `unseen` lists documents the decoder's model
    /// never saw in training, on the queries whose relevant documents are among them.
    pub fn evaluate(&self, set: &QuerySet, unseen: Option<&[String]>) -> Result<SwapEvaluation> {
        if set.queries.is_empty() {
            return Err(InterpError::Input("no queries to evaluate".into()));
        }
        if let Some(d) = unseen
            .into_iter()
            .flatten()
            .find(|d| self.scheme.index_of(d).is_none())
        {
            return Err(InterpError::Input(format!(
                "unseen document {d:?} is not a docid of the decoder's model"
            )));
        }
        let run = self.run(&set.queries, 10, "swap")?;
        let all = evaluate_set(&run, set);
        let unseen = unseen.map(|docs| restricted(&run, set, docs));
        Ok(SwapEvaluation { all, unseen, run })
    }
}

/// Evaluation on the queries whose relevant documents include one of `docs` (judged on those only).
pub(crate) fn restricted(run: &Run, set: &QuerySet, docs: &[String]) -> Evaluation {
    let qrels = set.qrels.filter(|q| docs.contains(&q.docid));
    let qids: Vec<String> = set
        .queries
        .iter()
        .filter(|q| qrels.relevant(&q.qid).next().is_some())
        .map(|q| q.qid.clone())
        .collect();
    evaluate(run, &qrels, Some(&qids))
}

/// Results of an encoder swap.
#[derive(Clone, Debug)]
pub struct SwapEvaluation {
    /// On every query of the set.
    pub all: Evaluation,
    /// On the queries of documents the decoder's model never saw, if asked.
    pub unseen: Option<Evaluation>,
    /// The run.
    pub run: Run,
}

impl SwapEvaluation {
    /// One row per subset (`all`, `unseen`): `label, subset, queries, hits_at_1, hits_at_10, mrr_at_10`.
    pub fn to_frame(&self, label: &str) -> Result<Table> {
        let mut rows = vec![("all", &self.all)];
        if let Some(u) = &self.unseen {
            rows.push(("unseen", u));
        }
        Ok(Table::new(vec![
            col(
                "label",
                rows.iter().map(|_| label.to_string()).collect::<Vec<_>>(),
            ),
            col(
                "subset",
                rows.iter().map(|r| r.0.to_string()).collect::<Vec<_>>(),
            ),
            col(
                "queries",
                rows.iter()
                    .map(|r| r.1.per_query.len() as i64)
                    .collect::<Vec<_>>(),
            ),
            col(
                "hits_at_1",
                rows.iter().map(|r| r.1.hits_at_1).collect::<Vec<_>>(),
            ),
            col(
                "hits_at_10",
                rows.iter().map(|r| r.1.hits_at_10).collect::<Vec<_>>(),
            ),
            col(
                "mrr_at_10",
                rows.iter().map(|r| r.1.mrr_at_10).collect::<Vec<_>>(),
            ),
        ])?)
    }
}
