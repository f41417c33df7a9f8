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

/// Ranks atomic docids for a batch of tokenized queries: `encoder.encode`, then one `decoder.decode_step`
/// from the start token, log-softmax over the vocabulary read at the docid tokens (as
/// [`Searcher`] does for atomic docids). `hooks` act on both models' passes. With `final_norm`, the
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
    let lp = host(logp.slice([0..rows, off..off + n]))?;
    Ok((0..rows)
        .map(|r| {
            let row = &lp[r * n..(r + 1) * n];
            let mut cand: Vec<(usize, f32)> = (0..scheme.len())
                .filter(|&d| allowed.is_none_or(|a| a.get(d).copied().unwrap_or(false)))
                .map(|d| (d, row[scheme.target(d)[0] as usize - off]))
                .collect();
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(k);
            cand.into_iter()
                .map(|(doc, score)| Hit {
                    doc,
                    docid: scheme.docids[doc].clone(),
                    score,
                })
                .collect()
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
        })
    }

    /// The top `k` documents of each query, optionally only among documents for which `allowed` is true.
    pub fn search(
        &self,
        queries: &[String],
        k: usize,
        allowed: Option<&[bool]>,
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
        )
    }

    /// A TREC run of the top `k` documents of every query.
    pub fn run(&self, queries: &Queries, k: usize, tag: &str) -> Result<Run> {
        run_queries(queries, self.batch_size, tag, |q| self.search(q, k, None))
    }

    /// Hits@1 / Hits@10 (with [`evaluate`]) on `set`, and, when `unseen` lists documents the decoder's model
    /// never saw in training, on the queries whose relevant documents are among them.
    pub fn evaluate(&self, set: &QuerySet, unseen: Option<&[String]>) -> Result<SwapEvaluation> {
        if set.queries.is_empty() {
            return Err(InterpError::Input("no queries to evaluate".into()));
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
