//! `Dot`: a bi-encoder (dense retriever) over a BERT-family encoder, read from sentence-transformers folders.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::Bool;

use super::config::BertConfig;
use super::model::{log_unused, BertEncoder, BertInput};
use crate::error::ModelError;
use crate::hooks::Hooks;
use crate::tokenizer::TextTokenizer;
use crate::weights::WeightFile;

/// How token states become one embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's (`[CLS]`) state.
    Cls,
    /// Mean of the token states, padding excluded (sentence-transformers `pooling_mode_mean_tokens`).
    Mean,
    /// Element-wise maximum over the tokens, padding excluded (`pooling_mode_max_tokens`).
    Max,
}

/// How a query embedding and a document embedding are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Similarity {
    /// Inner product.
    Dot,
    /// Cosine of the angle (inner product of L2-normalised vectors).
    Cosine,
}

/// A bi-encoder: query and document are embedded separately (pooling, optional L2 normalisation) and
/// compared by [`Similarity`].
#[derive(Debug)]
pub struct Dot {
    /// The encoder.
    pub encoder: BertEncoder,
    /// The tokenizer (needed by the text methods).
    pub tokenizer: Option<TextTokenizer>,
    /// Pooling of the last hidden state.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised (sentence-transformers' `Normalize` module).
    pub normalize: bool,
    /// The score function.
    pub similarity: Similarity,
}

/// `x / max(||x||, 1e-12)` per row, as `torch.nn.functional.normalize`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// The Transformer module's settings file names that sentence-transformers tries, in its order.
const SENTENCE_CONFIGS: [&str; 7] = [
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
];

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.into(),
        message: e.to_string(),
    })
}

/// The sentence-transformers modules of a folder (`modules.json`): where the transformer lives, the pooling
/// and whether a `Normalize` module follows.
struct StModules {
    transformer: PathBuf,
    pooling: Pooling,
    normalize: bool,
}

fn read_modules(dir: &Path) -> Result<Option<StModules>, ModelError> {
    let path = dir.join("modules.json");
    if !path.exists() {
        return Ok(None);
    }
    let bad = |message: String| ModelError::Config {
        path: path.clone(),
        message,
    };
    let list = read_json(&path)?;
    let list = list
        .as_array()
        .ok_or_else(|| bad("expected a list of modules".into()))?;
    let mut out = StModules {
        transformer: dir.into(),
        pooling: Pooling::Cls,
        normalize: false,
    };
    let (mut seen_transformer, mut seen_pooling) = (false, false);
    for m in list {
        let ty = m.get("type").and_then(|v| v.as_str()).unwrap_or("");
        let sub = dir.join(m.get("path").and_then(|v| v.as_str()).unwrap_or(""));
        match ty.rsplit('.').next().unwrap_or("") {
            "Transformer" => {
                out.transformer = sub;
                seen_transformer = true;
            }
            "Pooling" => {
                out.pooling = read_pooling(&sub.join("config.json"))?;
                seen_pooling = true;
            }
            "Normalize" => out.normalize = true,
            _ => {
                return Err(bad(format!(
                "module `{ty}` is not supported (genir's Dot has Transformer, Pooling, Normalize)"
            )))
            }
        }
    }
    if !seen_transformer || !seen_pooling {
        return Err(bad("expected a Transformer and a Pooling module".into()));
    }
    Ok(Some(out))
}

fn read_pooling(path: &Path) -> Result<Pooling, ModelError> {
    let cfg = read_json(path)?;
    let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let modes: Vec<(&str, Option<Pooling>)> = [
        ("pooling_mode_cls_token", Some(Pooling::Cls)),
        ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
        ("pooling_mode_max_tokens", Some(Pooling::Max)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
        ("pooling_mode_lasttoken", None),
    ]
    .into_iter()
    .filter(|(k, _)| on(k))
    .collect();
    match modes.as_slice() {
        [(_, Some(p))] => Ok(*p),
        [(k, None)] => Err(ModelError::Config {
            path: path.into(),
            message: format!("`{k}` is not supported (cls, mean and max pooling are)"),
        }),
        _ => Err(ModelError::Config {
            path: path.into(),
            message: format!(
                "expected exactly one pooling mode, found {:?}",
                modes.iter().map(|(k, _)| *k).collect::<Vec<_>>()
            ),
        }),
    }
}

impl Dot {
    /// A bi-encoder from its parts (no tokenizer: use [`Dot::with_tokenizer`] for the text methods).
    pub fn new(
        encoder: BertEncoder,
        pooling: Pooling,
        normalize: bool,
        similarity: Similarity,
    ) -> Self {
        Self {
            encoder,
            tokenizer: None,
            pooling,
            normalize,
            similarity,
        }
    }

    /// Sets the tokenizer (checked against the vocabulary).
    pub fn with_tokenizer(mut self, tokenizer: TextTokenizer) -> Result<Self, ModelError> {
        tokenizer.check_vocab(self.encoder.config.vocab_size)?;
        self.tokenizer = Some(tokenizer);
        Ok(self)
    }

    /// Loads a sentence-transformers folder (`modules.json` with Transformer, Pooling and optional Normalize;
    /// `config_sentence_transformers.json`'s `similarity_fn_name`, default cosine; the Transformer module's
    /// `sentence_bert_config.json`'s `max_seq_length` and `do_lower_case`) or a plain Hugging Face encoder folder
    /// (then CLS pooling, no normalisation, dot product). The tokenizer is the module's `tokenizer.json`, if
    /// any, set up as Hugging Face's tokenizer class does, truncating as sentence-transformers does
    /// (`max_seq_length`, else `tokenizer_config.json`'s `model_max_length`, at most the model's positions).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let modules = read_modules(dir)?;
        let model_dir = modules
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |m| m.transformer.clone());
        let config = BertConfig::from_file(&model_dir.join("config.json"))?;
        let mut w = WeightFile::from_dir(&model_dir)?;
        let encoder = BertEncoder::from_weights(config, &mut w, device)?;
        log_unused(&w, "bi-encoder");
        let (pooling, normalize) = modules
            .as_ref()
            .map_or((Pooling::Cls, false), |m| (m.pooling, m.normalize));
        let st_cfg = dir.join("config_sentence_transformers.json");
        let similarity = match st_cfg
            .exists()
            .then(|| read_json(&st_cfg))
            .transpose()?
            .as_ref()
            .and_then(|v| v.get("similarity_fn_name"))
            .and_then(|v| v.as_str())
        {
            Some("cosine") => Similarity::Cosine,
            Some("dot" | "dot_product") => Similarity::Dot,
            Some(other) => {
                return Err(ModelError::Config {
                    path: st_cfg,
                    message: format!("similarity_fn_name `{other}` is not supported (cosine, dot)"),
                })
            }
            None if modules.is_some() => Similarity::Cosine,
            None => Similarity::Dot,
        };
        let mut dot = Self::new(encoder, pooling, normalize, similarity);
        let tok_path = model_dir.join("tokenizer.json");
        if tok_path.exists() {
            let max_positions = dot.encoder.config.max_position_embeddings;
            // the Transformer module's own settings, under the names sentence-transformers tries in turn
            let sb_cfg = SENTENCE_CONFIGS
                .iter()
                .map(|f| model_dir.join(f))
                .find(|p| p.is_file())
                .map(|p| read_json(&p))
                .transpose()?;
            let max_seq = sb_cfg
                .as_ref()
                .and_then(|c| c.get("max_seq_length"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize);
            let lower = sb_cfg
                .as_ref()
                .and_then(|c| c.get("do_lower_case"))
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let mut tok = TextTokenizer::from_file(&tok_path, dot.encoder.config.vocab_size)?
                .with_bert_family_settings(&model_dir, &dot.encoder.config.model_type)?;
            if lower {
                tok = tok.with_lowercase()?;
            }
            // without max_seq_length: the tokenizer's model_max_length, at most the model's positions
            let max_len = max_seq
                .or(TextTokenizer::config_max_length(&model_dir)?)
                .unwrap_or(max_positions)
                .min(max_positions);
            dot = dot.with_tokenizer(tok.with_max_length(Some(max_len))?)?;
        }
        Ok(dot)
    }

    fn tokenizer(&self) -> Result<&TextTokenizer, ModelError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::Tokenizer {
                path: PathBuf::from("tokenizer.json"),
                message: "this bi-encoder has no tokenizer; load one with Dot::with_tokenizer"
                    .into(),
            })
    }

    /// Tokenizes texts into one padded batch.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<BertInput, ModelError> {
        let tok = self.tokenizer()?;
        let rows = texts
            .iter()
            .map(|t| tok.encode_full(t))
            .collect::<Result<Vec<_>, _>>()?;
        BertInput::from_encoded(
            &rows,
            self.encoder.config.pad_token_id as u32,
            &self.encoder.device(),
        )
    }

    /// Pools token states `[batch, len, hidden]` under a mask `[batch, len]` into `[batch, hidden]` (before
    /// normalisation).
    pub fn pool(&self, hidden: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
        let [b, s, h] = hidden.dims();
        match self.pooling {
            Pooling::Cls => hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            Pooling::Mean => {
                let m = mask.float().reshape([b, s, 1]);
                let sum = (hidden * m.clone()).sum_dim(1).reshape([b, h]);
                let count = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
                sum / count
            }
            Pooling::Max => {
                let pad: Tensor<3, Bool> = mask.equal_elem(0).reshape([b, s, 1]).expand([b, s, h]);
                hidden.mask_fill(pad, -1e9).max_dim(1).reshape([b, h])
            }
        }
    }

    /// Embeddings of a batch, `[batch, hidden]` (pooled, normalised if the model normalises). `hooks` act on
    /// the encoder pass.
    pub fn embed_input(
        &self,
        input: &BertInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<2>, ModelError> {
        let hidden = self.encoder.forward(input, hooks)?;
        let pooled = self.pool(hidden, input.attention_mask.clone());
        Ok(if self.normalize {
            l2_normalize(pooled)
        } else {
            pooled
        })
    }

    /// Embeddings of texts, `[texts, hidden]`, in one encoder pass whose hooks are `hooks`.
    pub fn embed(&self, texts: &[&str], hooks: &mut Hooks<'_>) -> Result<Tensor<2>, ModelError> {
        let input = self.encode_texts(texts)?;
        self.embed_input(&input, hooks)
    }

    /// Row-wise similarity of `a` and `b` (`[n, hidden]` each) -> `[n]`.
    pub fn similarity(&self, a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
        let (a, b) = match self.similarity {
            Similarity::Dot => (a, b),
            Similarity::Cosine => (l2_normalize(a), l2_normalize(b)),
        };
        let n = a.dims()[0];
        (a * b).sum_dim(1).reshape([n])
    }

    /// All-pairs similarity of queries `[q, hidden]` and documents `[d, hidden]` -> `[q, d]`.
    pub fn similarity_matrix(&self, queries: Tensor<2>, docs: Tensor<2>) -> Tensor<2> {
        let (q, d) = match self.similarity {
            Similarity::Dot => (queries, docs),
            Similarity::Cosine => (l2_normalize(queries), l2_normalize(docs)),
        };
        q.matmul(d.transpose())
    }

    /// Scores of `(query, document)` pairs. Queries and documents go through the encoder in one pass, as one
    /// batch: rows `0..n` are the queries and rows `n..2n` the documents (select them with
    /// [`Selection::batch`](crate::hooks::Selection::batch) in `hooks`).
    pub fn score_batch(
        &self,
        pairs: &[(&str, &str)],
        hooks: &mut Hooks<'_>,
    ) -> Result<Vec<f32>, ModelError> {
        let n = pairs.len();
        let texts: Vec<&str> = pairs
            .iter()
            .map(|p| p.0)
            .chain(pairs.iter().map(|p| p.1))
            .collect();
        let emb = self.embed(&texts, hooks)?;
        let h = emb.dims()[1];
        let q = emb.clone().slice([0..n, 0..h]);
        let d = emb.slice([n..2 * n, 0..h]);
        self.similarity(q, d)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Tensor(format!("{e:?}")))
    }

    /// Score of one query and one document (one encoder pass: batch row 0 is the query, row 1 the document).
    pub fn score(&self, query: &str, doc: &str, hooks: &mut Hooks<'_>) -> Result<f32, ModelError> {
        let s = self.score_batch(&[(query, doc)], hooks)?;
        s.first()
            .copied()
            .ok_or_else(|| ModelError::Tensor("empty score".into()))
    }
}
