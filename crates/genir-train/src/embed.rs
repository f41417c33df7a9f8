//! Document embeddings for semantic docids: any [`DocEmbedder`] (a genir bi-encoder, a T5 encoder, or the
//! dependency-free TF-IDF embedder used by default).

use std::collections::HashMap;

use genir_data::perturb::tokenize;
use genir_model::hooks::Hooks;
use genir_model::t5::{pad_batch, T5Model};
use genir_model::tokenizer::TextTokenizer;

use crate::error::{Result, TrainError};

/// The rows of a `[n, d]` tensor as host vectors.
pub(crate) fn tensor_rows(t: burn::tensor::Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, d] = t.dims();
    let v = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Tensor(format!("{e:?}")))?;
    Ok(v.chunks(d.max(1)).map(<[f32]>::to_vec).collect())
}

/// Maps texts to fixed-size vectors.
pub trait DocEmbedder {
    /// One vector per text, all of the same dimension.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// TF-IDF over the corpus's terms, hashed into `dim` signed buckets and L2-normalised: a cheap, exact and
/// deterministic embedding whose k-means clusters group documents by shared vocabulary.
#[derive(Clone, Debug)]
pub struct TfIdfEmbedder {
    idf: HashMap<String, f32>,
    dim: usize,
}

fn fnv(s: &str) -> u64 {
    genir_io::fnv1a(s.as_bytes(), 0)
}

impl TfIdfEmbedder {
    /// Learns inverse document frequencies from `texts`.
    pub fn fit(texts: &[String], dim: usize) -> Self {
        let mut df: HashMap<String, usize> = HashMap::new();
        for t in texts {
            let mut terms = tokenize(t);
            terms.sort();
            terms.dedup();
            for term in terms {
                *df.entry(term).or_default() += 1;
            }
        }
        let n = texts.len().max(1) as f32;
        let idf = df
            .into_iter()
            .map(|(t, d)| (t, ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0))
            .collect();
        Self {
            idf,
            dim: dim.max(1),
        }
    }
}

impl DocEmbedder for TfIdfEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; self.dim];
                for term in tokenize(t) {
                    let w = self.idf.get(&term).copied().unwrap_or(0.0);
                    let h = fnv(&term);
                    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                    v[(h % self.dim as u64) as usize] += sign * w;
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                v
            })
            .collect())
    }
}

/// Mean-pooled encoder output of a T5 model (e.g. a pretrained T5, or a GenIR model trained earlier).
pub struct T5MeanEmbedder<'a> {
    /// The model.
    pub model: &'a T5Model,
    /// Its tokenizer.
    pub tok: &'a TextTokenizer,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Longest input in tokens.
    pub max_len: usize,
}

impl DocEmbedder for T5MeanEmbedder<'_> {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let device = self.model.shared.val().device();
        let pad = self.model.config.pad_token_id as u32;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size.max(1)) {
            let ids = chunk
                .iter()
                .map(|t| {
                    let mut ids = self.tok.encode(t)?;
                    ids.truncate(self.max_len.max(1));
                    Ok(ids)
                })
                .collect::<Result<Vec<_>>>()?;
            let (input, mask) = pad_batch(&ids, pad, &device)?;
            let h = self.model.encode(input, mask.clone(), &mut Hooks::none())?;
            let [b, s, d] = h.dims();
            let m = mask.float().reshape([b, s, 1]);
            let pooled = (h * m.clone()).sum_dim(1).reshape([b, d]) / m.sum_dim(1).reshape([b, 1]);
            out.extend(tensor_rows(pooled)?);
        }
        Ok(out)
    }
}

impl DocEmbedder for genir_model::bert::Dot {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let e = genir_model::bert::Dot::embed(self, &refs, &mut Hooks::none())?;
            out.extend(tensor_rows(e)?);
        }
        Ok(out)
    }
}

/// Which embedder gives the document vectors of semantic docids.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderSpec {
    /// Hashed TF-IDF over the corpus (256 dimensions).
    #[default]
    TfIdf,
    /// A bi-encoder folder (sentence-transformers or Hugging Face BERT / MiniLM / DistilBERT / ELECTRA).
    BiEncoder(std::path::PathBuf),
    /// Mean-pooled encoder of a Hugging Face T5 folder.
    T5(std::path::PathBuf),
}

impl std::str::FromStr for EmbedderSpec {
    type Err = TrainError;
    /// `tfidf`, `bi-encoder:DIR` or `t5:DIR`.
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            None if s == "tfidf" => Ok(Self::TfIdf),
            Some(("bi-encoder", d)) => Ok(Self::BiEncoder(d.into())),
            Some(("t5", d)) => Ok(Self::T5(d.into())),
            _ => Err(TrainError::Config(format!(
                "unknown embedder {s:?}: expected tfidf, bi-encoder:DIR or t5:DIR"
            ))),
        }
    }
}

impl EmbedderSpec {
    /// Embeds `texts` (on `device` for neural embedders).
    pub fn embed(&self, texts: &[String], device: &burn::tensor::Device) -> Result<Vec<Vec<f32>>> {
        match self {
            Self::TfIdf => TfIdfEmbedder::fit(texts, 256).embed(texts),
            Self::BiEncoder(dir) => {
                let dot = genir_model::bert::Dot::from_pretrained(dir, device)?;
                DocEmbedder::embed(&dot, texts)
            }
            Self::T5(dir) => {
                let model = T5Model::from_pretrained(dir, device)?;
                let tok =
                    TextTokenizer::from_file(&dir.join("tokenizer.json"), model.config.vocab_size)?;
                T5MeanEmbedder {
                    model: &model,
                    tok: &tok,
                    batch_size: 32,
                    max_len: 128,
                }
                .embed(texts)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_is_normalised_and_separates_topics() {
        let texts: Vec<String> = [
            "football soccer league goal",
            "soccer goal football match",
            "quantum physics electron",
            "electron quantum field physics",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let e = TfIdfEmbedder::fit(&texts, 64).embed(&texts).unwrap();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!((dot(&e[0], &e[0]) - 1.0).abs() < 1e-5);
        assert!(dot(&e[0], &e[1]) > dot(&e[0], &e[2]));
        assert!(dot(&e[2], &e[3]) > dot(&e[1], &e[3]));
    }
}
