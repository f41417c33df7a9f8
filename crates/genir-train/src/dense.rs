//! Dense retrieval with a bi-encoder: the dual-encoder reference that generative retrieval is compared with
//! (DSI's baselines are BM25 and a dual encoder).
//!
//! A [`DenseIndex`] embeds every document of a corpus (`title text`, as BM25 indexes it) once with a
//! [`Dot`] bi-encoder, then ranks all of them for each query by the model's own similarity (cosine or inner
//! product), exactly (no approximate search): the scores are those of [`Dot::similarity_matrix`].
//!
//! ```no_run
//! use burn::prelude::*;
//! use genir_train::dense::DenseIndex;
//! use genir_train::metrics::evaluate;
//!
//! # fn main() -> Result<(), genir_train::TrainError> {
//! let wiki = genir_data::shipped::load_default()?;
//! let dir = std::path::Path::new("models/all-MiniLM-L6-v2");
//! let index = DenseIndex::from_pretrained(dir, &wiki.corpus, &Device::flex())?;
//! let test = wiki.split("test").expect("test split");
//! let run = index.run(&test.queries, 10, "minilm")?;
//! println!("{}", evaluate(&run, &test.qrels, None).summary());
//! # Ok(()) }
//! ```

use std::path::Path;

use burn::prelude::*;
use genir_data::{Corpus, Queries, Run};
use genir_model::bert::{l2_normalize, BertInput, Dot, Similarity};
use genir_model::hooks::Hooks;
use genir_model::tokenizer::Encoded;

use crate::embed::tensor_rows;
use crate::error::{Result, TrainError};

/// Document embeddings of one corpus under one bi-encoder.
#[derive(Debug)]
pub struct DenseIndex {
    dot: Dot,
    docids: Vec<String>,
    /// `[documents, hidden]`, L2-normalised when the similarity is cosine.
    docs: Tensor<2>,
    /// Texts per encoder pass (documents when building, queries when searching).
    pub batch_size: usize,
}

impl DenseIndex {
    /// Embeds every document of `corpus` with `dot` (which needs its tokenizer), `batch_size` at a time;
    /// documents are batched in order of length, so that little of each batch is padding.
    pub fn build(dot: Dot, corpus: &Corpus, batch_size: usize) -> Result<Self> {
        Self::build_with_progress(dot, corpus, batch_size, |_, _| {})
    }

    /// [`DenseIndex::build`], calling `progress(documents embedded, documents)` after every batch.
    pub fn build_with_progress(
        dot: Dot,
        corpus: &Corpus,
        batch_size: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        if corpus.is_empty() {
            return Err(TrainError::Config(
                "dense index: the corpus has no documents".into(),
            ));
        }
        if batch_size == 0 {
            return Err(TrainError::Config(
                "dense index: batch_size must be at least 1".into(),
            ));
        }
        let tok = dot.tokenizer.as_ref().ok_or_else(|| {
            TrainError::Config(
                "dense index: the bi-encoder has no tokenizer (load one with Dot::with_tokenizer)"
                    .into(),
            )
        })?;
        let encoded = corpus
            .iter()
            .map(|d| tok.encode_full(&d.full_text()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| (encoded[i].ids.len(), i));
        let pad = dot.encoder.config.pad_token_id as u32;
        let device = dot.encoder.device();
        let mut parts = Vec::with_capacity(order.len().div_ceil(batch_size));
        let mut done = 0;
        for chunk in order.chunks(batch_size) {
            let rows: Vec<Encoded> = chunk.iter().map(|&i| encoded[i].clone()).collect();
            let input = BertInput::from_encoded(&rows, pad, &device)?;
            parts.push(dot.embed_input(&input, &mut Hooks::none())?);
            done += chunk.len();
            progress(done, order.len());
        }
        let sorted = Tensor::cat(parts, 0);
        // back to corpus order: row `order[r]` of the index is row `r` of `sorted`
        let mut inverse = vec![0i64; order.len()];
        for (r, &i) in order.iter().enumerate() {
            inverse[i] = r as i64;
        }
        let rows = Tensor::<1, Int>::from_data(TensorData::from(inverse.as_slice()), &device);
        let docs = sorted.select(0, rows);
        let docs = match dot.similarity {
            Similarity::Cosine => l2_normalize(docs),
            Similarity::Dot => docs,
        };
        tracing::info!(documents = order.len(), "dense index built");
        Ok(Self {
            dot,
            docids: corpus.iter().map(|d| d.docid.clone()).collect(),
            docs,
            batch_size,
        })
    }

    /// Loads a bi-encoder folder ([`Dot::from_pretrained`]: sentence-transformers or plain Hugging Face
    /// BERT-family) and indexes `corpus`, 32 documents per pass.
    pub fn from_pretrained(dir: &Path, corpus: &Corpus, device: &Device) -> Result<Self> {
        let dot = Dot::from_pretrained(dir, device)?;
        if dot.tokenizer.is_none() {
            return Err(TrainError::Config(format!(
                "dense index: {} has no tokenizer.json",
                dir.display()
            )));
        }
        Self::build(dot, corpus, 32)
    }

    /// Keeps only the documents whose docid passes `keep` (their embeddings are not recomputed): an index of
    /// a sub-collection. An error when none is left.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Result<()> {
        let rows: Vec<i64> = (0..self.docids.len())
            .filter(|&i| keep(&self.docids[i]))
            .map(|i| i as i64)
            .collect();
        if rows.is_empty() {
            return Err(TrainError::Config(
                "dense index: no document left after filtering".into(),
            ));
        }
        self.docids = rows
            .iter()
            .map(|&i| self.docids[i as usize].clone())
            .collect();
        let device = self.docs.device();
        let idx = Tensor::<1, Int>::from_data(TensorData::from(rows.as_slice()), &device);
        self.docs = self.docs.clone().select(0, idx);
        Ok(())
    }

    /// Number of indexed documents.
    pub fn len(&self) -> usize {
        self.docids.len()
    }

    /// Whether the index is empty (never: [`DenseIndex::build`] refuses an empty corpus).
    pub fn is_empty(&self) -> bool {
        self.docids.is_empty()
    }

    /// The bi-encoder.
    pub fn model(&self) -> &Dot {
        &self.dot
    }

    /// Document embeddings in corpus order, one row per document (normalised when the similarity is cosine).
    pub fn embeddings(&self) -> Result<Vec<Vec<f32>>> {
        tensor_rows(self.docs.clone())
    }

    /// Similarity of every query to every document, `[queries][documents]` in corpus order.
    pub fn scores(&self, queries: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(self.batch_size.max(1)) {
            out.extend(self.chunk_scores(chunk)?);
        }
        Ok(out)
    }

    /// Scores of one batch of queries against every document.
    fn chunk_scores(&self, queries: &[&str]) -> Result<Vec<Vec<f32>>> {
        let q = self.dot.embed(queries, &mut Hooks::none())?;
        let q = match self.dot.similarity {
            Similarity::Cosine => l2_normalize(q),
            Similarity::Dot => q,
        };
        tensor_rows(q.matmul(self.docs.clone().transpose()))
    }

    /// The `k` best documents of each query, best first (ties by docid), with their similarity. Queries are
    /// scored a batch at a time, so memory stays at one batch's scores whatever the number of queries.
    pub fn search(&self, queries: &[&str], k: usize) -> Result<Vec<Vec<(String, f64)>>> {
        let by_rank = |a: &(usize, f32), b: &(usize, f32)| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.docids[a.0].cmp(&self.docids[b.0]))
        };
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(self.batch_size.max(1)) {
            for row in self.chunk_scores(chunk)? {
                let mut hits: Vec<(usize, f32)> = row.into_iter().enumerate().collect();
                if k < hits.len() {
                    hits.select_nth_unstable_by(k, by_rank);
                    hits.truncate(k);
                }
                hits.sort_by(by_rank);
                out.push(
                    hits.into_iter()
                        .map(|(i, s)| (self.docids[i].clone(), f64::from(s)))
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// A run of the `k` best documents for every query, tagged `tag`.
    pub fn run(&self, queries: &Queries, k: usize, tag: &str) -> Result<Run> {
        let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        let hits = self.search(&texts, k)?;
        Ok(Run::from_scores(
            tag,
            queries.iter().map(|q| q.qid.as_str()).zip(hits),
        ))
    }
}
