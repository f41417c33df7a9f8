//! Training examples of the DSI recipe: indexing (document text -> docid) and retrieval (query -> docid),
//! mixed in a configurable ratio, and their batches as tensors.

use std::collections::BTreeSet;

use burn::prelude::*;
use burn::tensor::TensorData;
use genir_data::{Corpus, QuerySet};
use genir_model::t5::{pad_batch, Seq2SeqInput};
use genir_model::tokenizer::TextTokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::docid::DocidScheme;
use crate::error::{Result, TrainError};

/// Whether an example teaches the model a document's text or a query about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExampleKind {
    /// Document text (or a chunk of it) -> docid.
    Indexing,
    /// Query -> docid.
    Retrieval,
}

/// One training example: source token ids and the document it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Encoder input ids, ending with `</s>`.
    pub source: Vec<u32>,
    /// Doc index in the docid scheme.
    pub doc: usize,
    /// Indexing or retrieval.
    pub kind: ExampleKind,
}

/// How examples are made and mixed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExampleConfig {
    /// Longest encoder input in tokens (`</s>` included); longer texts are cut.
    pub max_source_len: usize,
    /// Indexing examples per document: its first `index_chunks` consecutive chunks of text.
    pub index_chunks: usize,
    /// Also index every sentence of a document (of at least 4 words) as its own example, so the model sees
    /// the document the way sentence-like queries will address it (DSI's span/pseudo-query indexing).
    #[serde(default)]
    pub index_sentences: bool,
    /// Indexing examples per retrieval example in an epoch; `None` uses every indexing example once.
    pub index_ratio: Option<f64>,
    /// Documents left out of training entirely ("missing documents" models); they keep their docids.
    pub exclude: Vec<String>,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        Self {
            max_source_len: 64,
            index_chunks: 2,
            index_sentences: false,
            index_ratio: None,
            exclude: Vec::new(),
        }
    }
}

/// All examples of a training run.
#[derive(Clone, Debug, Default)]
pub struct TrainingSet {
    /// Indexing examples.
    pub indexing: Vec<Example>,
    /// Retrieval examples.
    pub retrieval: Vec<Example>,
}

/// Sentences of a text, split after `.`, `!` or `?` followed by a space and a capital letter or digit (so
/// "e.g. this" and "3.5" stay whole), keeping those of at least `min_words` words. They are the pseudo queries of
/// a document: the shipped corpus's queries are inverse-cloze sentences.
pub fn sentences(text: &str, min_words: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..chars.len() {
        let end = matches!(chars[i], '.' | '!' | '?')
            && chars.get(i + 1) == Some(&' ')
            && chars
                .get(i + 2)
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit());
        if end || i + 1 == chars.len() {
            let s: String = chars[start..=i].iter().collect();
            let s = s.trim().to_string();
            if s.split_whitespace().count() >= min_words {
                out.push(s);
            }
            start = i + 1;
        }
    }
    out
}

fn cut(mut ids: Vec<u32>, max: usize, eos: u32) -> Vec<u32> {
    if ids.len() > max {
        ids.truncate(max.saturating_sub(1));
        ids.push(eos);
    }
    ids
}

impl TrainingSet {
    /// Builds indexing examples from `corpus` and retrieval examples from the training `queries` (every
    /// judged relevant document of a query gives one example). Documents in `cfg.exclude` contribute
    /// nothing; unknown docids in qrels are errors.
    pub fn build(
        corpus: &Corpus,
        train: Option<&QuerySet>,
        scheme: &DocidScheme,
        tok: &TextTokenizer,
        cfg: &ExampleConfig,
    ) -> Result<Self> {
        if cfg.max_source_len < 2 || cfg.index_chunks == 0 {
            return Err(TrainError::Config(
                "max_source_len must be >= 2 and index_chunks >= 1".into(),
            ));
        }
        let eos = scheme.eos;
        let exclude: BTreeSet<&str> = cfg.exclude.iter().map(String::as_str).collect();
        for d in &exclude {
            scheme.require(d, " in the documents to exclude")?;
        }
        let mut indexing = Vec::new();
        for doc in corpus.iter() {
            if exclude.contains(doc.docid.as_str()) {
                continue;
            }
            let d = scheme.require(
                &doc.docid,
                " (corpus document missing from the docid scheme)",
            )?;
            let mut ids = tok.encode(&doc.full_text())?;
            if ids.last() == Some(&eos) {
                ids.pop();
            }
            let chunk = cfg.max_source_len - 1;
            for c in ids.chunks(chunk).take(cfg.index_chunks) {
                let mut source = c.to_vec();
                source.push(eos);
                indexing.push(Example {
                    source,
                    doc: d,
                    kind: ExampleKind::Indexing,
                });
            }
            if cfg.index_sentences {
                for sentence in sentences(&doc.text, 4) {
                    let source = cut(tok.encode(&sentence)?, cfg.max_source_len, eos);
                    indexing.push(Example {
                        source,
                        doc: d,
                        kind: ExampleKind::Indexing,
                    });
                }
            }
            if ids.is_empty() {
                indexing.push(Example {
                    source: vec![eos],
                    doc: d,
                    kind: ExampleKind::Indexing,
                });
            }
        }
        let mut retrieval = Vec::new();
        if let Some(train) = train {
            for q in train.queries.iter() {
                let source = cut(tok.encode(&q.text)?, cfg.max_source_len, eos);
                for r in train.qrels.for_query(&q.qid).filter(|r| r.grade > 0) {
                    if exclude.contains(r.docid.as_str()) {
                        continue;
                    }
                    let d = scheme
                        .require(&r.docid, &format!(" in qrels of training query {}", q.qid))?;
                    retrieval.push(Example {
                        source: source.clone(),
                        doc: d,
                        kind: ExampleKind::Retrieval,
                    });
                }
            }
        }
        if indexing.is_empty() && retrieval.is_empty() {
            return Err(TrainError::Config("no training examples".into()));
        }
        Ok(Self {
            indexing,
            retrieval,
        })
    }

    /// The examples of one epoch, shuffled: every retrieval example once and indexing examples as the
    /// ratio says (cycling through a shuffled order). A pure function of `(seed, epoch)`, so a resumed run
    /// sees the same batches.
    pub fn epoch(&self, seed: u64, epoch: usize, ratio: Option<f64>) -> Vec<&Example> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let n_index = match ratio {
            None => self.indexing.len(),
            Some(r) => ((r * self.retrieval.len() as f64).round() as usize)
                .max(usize::from(self.retrieval.is_empty()) * self.indexing.len()),
        };
        let mut idx: Vec<usize> = (0..self.indexing.len()).collect();
        idx.shuffle(&mut rng);
        let mut out: Vec<&Example> = idx
            .iter()
            .cycle()
            .take(if self.indexing.is_empty() { 0 } else { n_index })
            .map(|&i| &self.indexing[i])
            .collect();
        out.extend(self.retrieval.iter());
        out.shuffle(&mut rng);
        out
    }

    /// A fingerprint of every example (kind, document index, source ids, in order): equal for the same
    /// examples, different when any changed (another collection; a document's indexed text, a query or a
    /// judgment edited; text past what the examples keep does not count). Saved with each checkpoint so that
    /// a run does not resume on other data (64-bit FNV-1a, stable across Rust versions).
    pub fn digest(&self) -> String {
        let mut h = 0;
        for (tag, set) in [(b'i', &self.indexing), (b'r', &self.retrieval)] {
            h = genir_io::fnv1a(&[tag], h);
            h = genir_io::fnv1a(&(set.len() as u64).to_le_bytes(), h);
            for e in set {
                h = genir_io::fnv1a(&(e.doc as u64).to_le_bytes(), h);
                h = genir_io::fnv1a(&(e.source.len() as u64).to_le_bytes(), h);
                for id in &e.source {
                    h = genir_io::fnv1a(&id.to_le_bytes(), h);
                }
            }
        }
        format!("{h:016x}")
    }

    /// Examples per epoch for a ratio.
    pub fn epoch_len(&self, ratio: Option<f64>) -> usize {
        self.epoch(0, 0, ratio).len()
    }
}

/// One batch as tensors: the seq2seq input (decoder input = start token then the target shifted right),
/// the labels and a mask of real label positions.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Encoder and decoder inputs.
    pub input: Seq2SeqInput,
    /// `[batch, tgt]` target ids (0 at padded positions).
    pub labels: Tensor<2, Int>,
    /// `[batch, tgt]`, 1 at real target positions.
    pub label_mask: Tensor<2>,
    /// Number of real target tokens.
    pub n_tokens: usize,
}

impl Batch {
    /// Builds a batch from examples.
    pub fn new(
        examples: &[&Example],
        scheme: &DocidScheme,
        start: u32,
        pad: u32,
        device: &Device,
    ) -> Result<Self> {
        let sources: Vec<Vec<u32>> = examples.iter().map(|e| e.source.clone()).collect();
        let targets: Vec<Vec<u32>> = examples.iter().map(|e| scheme.target(e.doc)).collect();
        let t = targets.iter().map(Vec::len).max().unwrap_or(1);
        let b = examples.len();
        let mut dec = Vec::with_capacity(b * t);
        let mut lab = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for tg in &targets {
            for i in 0..t {
                dec.push(i64::from(if i == 0 {
                    start
                } else {
                    tg.get(i - 1).copied().unwrap_or(pad)
                }));
                lab.push(i64::from(tg.get(i).copied().unwrap_or(pad)));
                mask.push(if i < tg.len() { 1f32 } else { 0.0 });
            }
        }
        let (input_ids, attention_mask) = pad_batch(&sources, pad, device)?;
        Ok(Self {
            input: Seq2SeqInput {
                input_ids,
                attention_mask,
                decoder_input_ids: Tensor::from_data(TensorData::new(dec, [b, t]), device),
            },
            labels: Tensor::from_data(TensorData::new(lab, [b, t]), device),
            label_mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
            n_tokens: targets.iter().map(Vec::len).sum(),
        })
    }
}

/// Sum over real target positions of `-log p(label)`, divided by `denominator` (the number of target
/// tokens of the whole step, so shards on several devices add up to the full batch's mean).
pub fn cross_entropy(logits: Tensor<3>, batch: &Batch, denominator: usize) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let logp = burn::tensor::activation::log_softmax(logits, 2);
    let picked = logp
        .gather(2, batch.labels.clone().reshape([b, t, 1]))
        .reshape([b, t]);
    (picked * batch.label_mask.clone())
        .sum()
        .neg()
        .div_scalar(denominator.max(1) as f32)
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn sentences_split_on_terminal_punctuation_and_drop_fragments() {
        let t = "Anarchism is a political philosophy. It is old! Is it? The 3.5 billion people live here, e.g. this one.";
        assert_eq!(
            sentences(t, 4),
            vec![
                "Anarchism is a political philosophy.",
                "The 3.5 billion people live here, e.g. this one."
            ]
        );
        assert_eq!(sentences(t, 1).len(), 4);
        assert!(sentences("", 1).is_empty());
        assert_eq!(
            sentences("Zürich est très belle. Ça va bien aujourd'hui merci.", 3),
            vec!["Zürich est très belle.", "Ça va bien aujourd'hui merci."]
        );
    }
}
