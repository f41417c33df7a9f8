//! Constrained decoding: the model can only produce docids of the scheme (and only allowed ones).
//!
//! Atomic docids take one decoder step: the log-softmax over the whole vocabulary, read at the allowed docid
//! tokens. Multi-token docids use batched beam search over a prefix trie: every query keeps `beams` live
//! prefixes, only trie children are expanded, a prefix that reaches a leaf (its `</s>`) is a finished docid,
//! and search stops for a query once `k` finished docids score above every live prefix (log-probabilities
//! only decrease, so no live prefix can overtake them). Scores are summed log-probabilities without length
//! normalisation.

use burn::prelude::*;
use genir_data::{Queries, Run, RunEntry};
use genir_model::hooks::Hooks;
use genir_model::t5::{pad_batch, T5Model};
use genir_model::tokenizer::TextTokenizer;

use crate::docid::{DocidScheme, Trie};
use crate::error::{Result, TrainError};

/// One retrieved document.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// Doc index in the scheme.
    pub doc: usize,
    /// Its external id.
    pub docid: String,
    /// Log-probability of its docid under the model.
    pub score: f32,
}

/// Searches a trained model; borrows the model, its tokenizer and its docid scheme.
pub struct Searcher<'a> {
    model: &'a T5Model,
    tok: &'a TextTokenizer,
    scheme: &'a DocidScheme,
    trie: Trie,
    allowed: Vec<bool>,
    /// Vocabulary columns a decoding step reads: the docid tokens, then `</s>` (for a tokenized scheme, the
    /// text tokens the docid tokens copy).
    step_cols: Vec<usize>,
    /// Columns `0..norm_width` are a step's normaliser: the whole vocabulary, or a tokenized scheme's
    /// original rows (its docid rows are copies).
    norm_width: Option<usize>,
    /// Longest query in tokens (`</s>` included); longer queries are cut.
    pub max_source_len: usize,
    /// Beam width for multi-token docids (at least `k`).
    pub beams: usize,
}

fn host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Tensor(format!("{e:?}")))
}

impl<'a> Searcher<'a> {
    /// A searcher over every docid of the scheme except deleted ones ([`DocidScheme::deleted`]).
    pub fn new(
        model: &'a T5Model,
        tok: &'a TextTokenizer,
        scheme: &'a DocidScheme,
    ) -> Result<Self> {
        if model.config.vocab_size < scheme.vocab_size() {
            return Err(TrainError::Config(format!(
                "the model's vocabulary ({}) does not cover the docid tokens (up to {})",
                model.config.vocab_size,
                scheme.vocab_size()
            )));
        }
        Ok(Self {
            model,
            tok,
            scheme,
            trie: scheme.trie(|d| !scheme.is_deleted(d)),
            allowed: (0..scheme.len()).map(|d| !scheme.is_deleted(d)).collect(),
            step_cols: if scheme.sources.is_empty() {
                let off = scheme.token_offset as usize;
                (off..off + scheme.n_tokens())
                    .chain([scheme.eos as usize])
                    .collect()
            } else {
                scheme
                    .sources
                    .iter()
                    .chain([&scheme.eos])
                    .map(|&t| t as usize)
                    .collect()
            },
            norm_width: (!scheme.sources.is_empty()).then_some(scheme.token_offset as usize),
            max_source_len: 64,
            beams: 10,
        })
    }

    /// Restricts results to documents for which `keep` is true: the others can never be returned (deleted
    /// documents stay excluded).
    pub fn restrict(mut self, keep: impl Fn(usize) -> bool) -> Self {
        let scheme = self.scheme;
        let keep = |d: usize| keep(d) && !scheme.is_deleted(d);
        self.allowed = (0..scheme.len()).map(keep).collect();
        self.trie = scheme.trie(keep);
        self
    }

    /// Whether a document can be returned.
    pub fn is_allowed(&self, doc: usize) -> bool {
        self.allowed.get(doc).copied().unwrap_or(false)
    }

    /// Tokenizes queries (cut to `max_source_len`).
    pub fn encode_queries(&self, queries: &[String]) -> Result<Vec<Vec<u32>>> {
        queries
            .iter()
            .map(|q| {
                let mut ids = self.tok.encode(q)?;
                if ids.len() > self.max_source_len {
                    ids.truncate(self.max_source_len.saturating_sub(1));
                    ids.push(self.scheme.eos);
                }
                Ok(ids)
            })
            .collect()
    }

    /// The top `k` documents of each query text.
    pub fn search(&self, queries: &[String], k: usize) -> Result<Vec<Vec<Hit>>> {
        let ids = self.encode_queries(queries)?;
        self.search_ids(&ids, k)
    }

    /// The top `k` documents for each tokenized query (one batch).
    pub fn search_ids(&self, sources: &[Vec<u32>], k: usize) -> Result<Vec<Vec<Hit>>> {
        if sources.is_empty() || k == 0 {
            return Ok(vec![Vec::new(); sources.len()]);
        }
        let device = self.model.shared.val().device();
        let pad = self.model.config.pad_token_id as u32;
        let (ids, mask) = pad_batch(sources, pad, &device)?;
        let enc = self.model.encode(ids, mask.clone(), &mut Hooks::none())?;
        let state = self.model.start_decoding(enc, mask);
        let ranked = if self.scheme.is_atomic() {
            self.atomic(state, sources.len(), k, &device)?
        } else {
            self.beam(state, sources.len(), k, &device)?
        };
        Ok(ranked
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(doc, score)| Hit {
                        doc,
                        docid: self.scheme.docids[doc].clone(),
                        score,
                    })
                    .collect()
            })
            .collect())
    }

    fn start_ids(&self, rows: usize, device: &Device) -> Tensor<2, Int> {
        let start = self.model.config.decoder_start() as i64;
        Tensor::from_data(TensorData::new(vec![start; rows], [rows, 1]), device)
    }

    /// Log-probabilities of the docid tokens (then `</s>`) at the last decoder position: `[rows, n + 1]`.
    fn step(
        &self,
        state: &mut genir_model::t5::DecoderState,
        ids: Tensor<2, Int>,
    ) -> Result<(Vec<f32>, usize)> {
        let logits = self.model.decode_step(state, ids, &mut Hooks::none())?;
        let [rows, n_new, v] = logits.dims();
        let v = self.norm_width.unwrap_or(v).min(v);
        let last = logits
            .slice([0..rows, n_new - 1..n_new, 0..v])
            .reshape([rows, v]);
        let lp = genir_model::fastmath::log_softmax_at(last, &self.step_cols)?;
        Ok((lp, self.step_cols.len()))
    }

    fn atomic(
        &self,
        mut state: genir_model::t5::DecoderState,
        rows: usize,
        k: usize,
        device: &Device,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let (lp, width) = self.step(&mut state, self.start_ids(rows, device))?;
        let off = self.scheme.token_offset;
        Ok((0..rows)
            .map(|r| {
                let row = &lp[r * width..(r + 1) * width - 1];
                let mut cand: Vec<(usize, f32)> = (0..self.scheme.len())
                    .filter(|&d| self.allowed[d])
                    .map(|d| (d, row[(self.scheme.target(d)[0] - off) as usize]))
                    .collect();
                top_k(&mut cand, k);
                cand
            })
            .collect())
    }

    fn beam(
        &self,
        mut state: genir_model::t5::DecoderState,
        queries: usize,
        k: usize,
        device: &Device,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let Some(root) = self.trie.root() else {
            return Ok(vec![Vec::new(); queries]);
        };
        let beams = self.beams.max(k);
        let off = self.scheme.token_offset;
        let n = self.scheme.n_tokens() as u32;
        let col = |t: u32| if t == self.scheme.eos { n } else { t - off } as usize;
        // live rows of the decoder state: (query, trie node, score)
        let mut live: Vec<(usize, usize, f32)> = (0..queries).map(|q| (q, root, 0.0)).collect();
        let mut finished: Vec<Vec<(usize, f32)>> = vec![Vec::new(); queries];
        let mut next_ids = self.start_ids(queries, device);
        while !live.is_empty() {
            let (lp, width) = self.step(&mut state, next_ids)?;
            // candidates per query: (parent row, token, node, score)
            let mut cand: Vec<Vec<(usize, u32, usize, f32)>> = vec![Vec::new(); queries];
            for (row, &(q, node, score)) in live.iter().enumerate() {
                for (tok, child) in self.trie.children(node) {
                    let s = score + lp[row * width + col(tok)];
                    match self.trie.doc(child) {
                        Some(doc) if self.trie.children(child).next().is_none() => {
                            finished[q].push((doc, s));
                        }
                        _ => cand[q].push((row, tok, child, s)),
                    }
                }
            }
            let mut parents = Vec::new();
            let mut tokens = Vec::new();
            let mut new_live = Vec::new();
            for (q, mut c) in cand.into_iter().enumerate() {
                c.sort_by(|a, b| b.3.total_cmp(&a.3));
                c.truncate(beams);
                top_k(&mut finished[q], usize::MAX);
                let kth = (finished[q].len() >= k).then(|| finished[q][k - 1].1);
                for (row, tok, node, s) in c {
                    if kth.is_some_and(|f| s < f) {
                        break;
                    }
                    parents.push(row);
                    tokens.push(i64::from(tok));
                    new_live.push((q, node, s));
                }
            }
            if new_live.is_empty() {
                break;
            }
            state = state.select(&parents);
            next_ids = Tensor::from_data(TensorData::new(tokens, [new_live.len(), 1]), device);
            live = new_live;
        }
        for f in &mut finished {
            top_k(f, k);
        }
        Ok(finished)
    }

    /// Exact log-probability of each listed document's docid for one query, by teacher forcing (no search):
    /// the reference that beam search approximates, and the score analyses use for "rank of the docid".
    pub fn score_docs(&self, query: &[u32], docs: &[usize]) -> Result<Vec<f32>> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.model.shared.val().device();
        let start = self.model.config.decoder_start() as u32;
        let pad = self.model.config.pad_token_id as u32;
        let examples: Vec<crate::examples::Example> = docs
            .iter()
            .map(|&doc| crate::examples::Example {
                source: query.to_vec(),
                doc,
                kind: crate::examples::ExampleKind::Retrieval,
            })
            .collect();
        let refs: Vec<&crate::examples::Example> = examples.iter().collect();
        let batch = crate::examples::Batch::new(&refs, self.scheme, start, pad, &device)?;
        let logits = self.model.forward(&batch.input, &mut Hooks::none())?;
        let [b, t, v] = logits.dims();
        let (logits, labels) = match self.norm_width {
            // a tokenized scheme: the original rows, read at the text tokens the docid tokens copy
            Some(w) => {
                let off = self.scheme.token_offset as i64;
                let labels: Vec<i64> = batch
                    .labels
                    .clone()
                    .into_data()
                    .convert::<i64>()
                    .try_to_vec::<i64>()
                    .map_err(|e| TrainError::Tensor(format!("{e:?}")))?
                    .into_iter()
                    .map(|l| {
                        if l >= off {
                            i64::from(self.scheme.sources[(l - off) as usize])
                        } else {
                            l
                        }
                    })
                    .collect();
                (
                    logits.slice([0..b, 0..t, 0..w.min(v)]),
                    Tensor::<2, Int>::from_data(TensorData::new(labels, [b, t]), &device),
                )
            }
            None => (logits, batch.labels.clone()),
        };
        let logp = burn::tensor::activation::log_softmax(logits, 2)
            .gather(2, labels.reshape([b, t, 1]))
            .reshape([b, t]);
        let per_doc = (logp * batch.label_mask).sum_dim(1);
        host(per_doc)
    }

    /// Searches every query in batches of `batch_size` and returns a TREC run (`k` rows per query).
    pub fn run(&self, queries: &Queries, k: usize, batch_size: usize, tag: &str) -> Result<Run> {
        let list: Vec<_> = queries.iter().collect();
        let mut entries = Vec::new();
        for chunk in list.chunks(batch_size.max(1)) {
            let texts: Vec<String> = chunk.iter().map(|q| q.text.clone()).collect();
            let hits = self.search(&texts, k)?;
            for (q, hs) in chunk.iter().zip(hits) {
                for (i, h) in hs.into_iter().enumerate() {
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
}

/// Sorts by descending score (ties: lower doc index first) and keeps `k`.
fn top_k(v: &mut Vec<(usize, f32)>, k: usize) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
}
