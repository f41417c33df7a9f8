//! Hugging Face `tokenizer.json` loading, checked against the model it is used with.

use std::path::{Path, PathBuf};

use crate::error::ModelError;

/// Hugging Face's tokenizer settings file, beside `tokenizer.json`.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// The `tokenizer_config.json` of `dir` as a JSON object, if the file exists.
fn read_tokenizer_config(
    dir: &Path,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ModelError> {
    let path = dir.join(TOKENIZER_CONFIG);
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |message: String| ModelError::Tokenizer {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    match serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))? {
        serde_json::Value::Object(m) => Ok(Some(m)),
        _ => Err(bad("not a JSON object".into())),
    }
}

/// One encoded text or text pair: token ids, segment (token type) ids and attention mask, all of one length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included (`[CLS] a [SEP] b [SEP]` for a BERT pair).
    pub ids: Vec<u32>,
    /// Segment ids from the post-processor (0 for the first text, 1 for the second in BERT pairs).
    pub type_ids: Vec<u32>,
    /// 1 for tokens, 0 for padding the tokenizer itself added.
    pub attention_mask: Vec<u32>,
}

impl Encoded {
    fn from_encoding(e: &tokenizers::Encoding) -> Self {
        Self {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
        }
    }
}

/// A tokenizer from a `tokenizer.json`, known to fit a model's vocabulary.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// The truncation length the file saved (not applied).
    saved_max_length: Option<usize>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `path` and checks that every id it can produce is below `vocab_size`. The truncation and
    /// padding saved in the file are not applied, as in Hugging Face, whose fast tokenizers set both on
    /// every call (`tokenizer(text)` neither truncates nor pads): truncate with
    /// [`TextTokenizer::with_max_length`] (e.g. to [`TextTokenizer::config_max_length`]).
    pub fn from_file(path: &Path, vocab_size: usize) -> Result<Self, ModelError> {
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
                path: path.into(),
                message: format!("cannot read tokenizer: {e}"),
            })?;
        let saved_max_length = inner.get_truncation().map(|t| t.max_length);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                path: path.into(),
                message: format!("cannot turn truncation off: {e}"),
            })?;
        let mut t = Self::from_tokenizer(inner, path.into());
        t.saved_max_length = saved_max_length;
        t.check_vocab(vocab_size)?;
        Ok(t)
    }

    /// The truncation length the loaded `tokenizer.json` saved, which [`TextTokenizer::from_file`] does not
    /// apply (genir applied it before 2026-12-06: a model trained from such a tokenizer saw at most that many
    /// tokens of each input).
    pub fn saved_max_length(&self) -> Option<usize> {
        self.saved_max_length
    }

    /// `model_max_length` (or the legacy `max_len`) of the `tokenizer_config.json` in `dir` (the length
    /// Hugging Face truncates to when asked to truncate without a length), unless absent or Hugging Face's
    /// "no limit" (1e30).
    pub fn config_max_length(dir: &Path) -> Result<Option<usize>, ModelError> {
        let Some(cfg) = read_tokenizer_config(dir)? else {
            return Ok(None);
        };
        // transformers falls back to the legacy `max_len`
        Ok(cfg
            .get("model_max_length")
            .or_else(|| cfg.get("max_len"))
            .and_then(|v| v.as_f64())
            .filter(|v| (1.0..1e15).contains(v))
            .map(|v| v as usize))
    }

    /// Hugging Face's BERT-family fast tokenizers (`BertTokenizerFast`, `DistilBertTokenizerFast`,
    /// `ElectraTokenizerFast`) rebuild a `BertNormalizer` from their arguments `do_lower_case` (default
    /// true), `strip_accents` (default none) and `tokenize_chinese_chars` (default true), read from
    /// `tokenizer_config.json`, whatever `tokenizer.json` says: the same here, when the tokenizer class
    /// (`tokenizer_class` of `tokenizer_config.json`, else of the `config.json` in `dir`, as AutoTokenizer
    /// looks) is one of these or, neither naming one, `model_type` is `bert`, `distilbert` or `electra`.
    /// Other tokenizers and normalizers are left as they are.
    pub fn with_bert_family_settings(
        mut self,
        dir: &Path,
        model_type: &str,
    ) -> Result<Self, ModelError> {
        let cfg = read_tokenizer_config(dir)?.unwrap_or_default();
        let model_cfg: Option<serde_json::Value> = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let class = cfg
            .get("tokenizer_class")
            .or_else(|| model_cfg.as_ref().and_then(|c| c.get("tokenizer_class")))
            .and_then(|v| v.as_str());
        let bert_family = match class {
            Some(c) => matches!(
                c.strip_suffix("Fast").unwrap_or(c),
                "BertTokenizer" | "DistilBertTokenizer" | "ElectraTokenizer"
            ),
            None => matches!(model_type, "bert" | "distilbert" | "electra"),
        };
        if !bert_family {
            return Ok(self);
        }
        let Some(mut n) = self.normalizer_json()? else {
            return Ok(self);
        };
        if n.get("type").and_then(|t| t.as_str()) != Some("BertNormalizer") {
            return Ok(self);
        }
        let flag = |k: &str, default: serde_json::Value| match cfg.get(k) {
            Some(v) if v.is_boolean() || v.is_null() => Ok(v.clone()),
            Some(v) => Err(ModelError::Tokenizer {
                path: dir.join(TOKENIZER_CONFIG),
                message: format!("`{k}` must be true, false or null, not {v}"),
            }),
            None => Ok(default),
        };
        n["lowercase"] = flag("do_lower_case", true.into())?;
        n["strip_accents"] = flag("strip_accents", serde_json::Value::Null)?;
        n["handle_chinese_chars"] = flag("tokenize_chinese_chars", true.into())?;
        if !n["lowercase"].is_boolean() || !n["handle_chinese_chars"].is_boolean() {
            return Err(ModelError::Tokenizer {
                path: dir.join(TOKENIZER_CONFIG),
                message: "`do_lower_case` and `tokenize_chinese_chars` must be true or false"
                    .into(),
            });
        }
        self.set_normalizer_json(n)?;
        Ok(self)
    }

    /// A `Lowercase` normalizer in front of this tokenizer's, unless it lowercases already
    /// (sentence-transformers' `do_lower_case`).
    pub fn with_lowercase(mut self) -> Result<Self, ModelError> {
        fn lowercases(n: &serde_json::Value) -> bool {
            match n.get("type").and_then(|t| t.as_str()) {
                Some("Lowercase") => true,
                Some("BertNormalizer") => n.get("lowercase") == Some(&true.into()),
                Some("Sequence") => n
                    .get("normalizers")
                    .and_then(|v| v.as_array())
                    .is_some_and(|v| v.iter().any(lowercases)),
                _ => false,
            }
        }
        let current = self.normalizer_json()?;
        if current.as_ref().is_some_and(lowercases) {
            return Ok(self);
        }
        let mut list = vec![serde_json::json!({"type": "Lowercase"})];
        match current {
            Some(n) if n.get("type").and_then(|t| t.as_str()) == Some("Sequence") => {
                list.extend(
                    n.get("normalizers")
                        .and_then(|v| v.as_array())
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Some(n) => list.push(n),
            None => {}
        }
        self.set_normalizer_json(serde_json::json!({"type": "Sequence", "normalizers": list}))?;
        Ok(self)
    }

    fn normalizer_json(&self) -> Result<Option<serde_json::Value>, ModelError> {
        self.inner
            .get_normalizer()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot read the normalizer: {e}"),
            })
    }

    fn set_normalizer_json(&mut self, n: serde_json::Value) -> Result<(), ModelError> {
        let n: tokenizers::NormalizerWrapper =
            serde_json::from_value(n).map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot build the normalizer: {e}"),
            })?;
        self.inner.with_normalizer(Some(n));
        Ok(())
    }

    /// Wraps an in-memory tokenizer (`path` is only used in messages).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: PathBuf) -> Self {
        Self {
            inner,
            path,
            saved_max_length: None,
        }
    }

    /// A word-level tokenizer over the synthetic words `w3 .. w{text_vocab - 1}` (ids 3..), with `<pad>` = 0,
    /// `</s>` = 1 (appended to every encoding), `<unk>` = 2, and `added` special tokens from id `text_vocab`
    /// on: every word of a text is one known token, so benchmarks get exact sequence lengths.
    pub fn synthetic_words(text_vocab: u32, added: &[String]) -> Result<Self, ModelError> {
        let mut vocab = serde_json::Map::new();
        for (i, t) in ["<pad>", "</s>", "<unk>"].iter().enumerate() {
            vocab.insert(t.to_string(), i.into());
        }
        for i in 3..text_vocab {
            vocab.insert(format!("w{i}"), i.into());
        }
        let added: Vec<serde_json::Value> = added
            .iter()
            .enumerate()
            .map(|(i, n)| {
                serde_json::json!({"id": text_vocab as usize + i, "content": n, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        let path = PathBuf::from("<synthetic word-level tokenizer>");
        let inner: tokenizers::Tokenizer =
            json.to_string()
                .parse()
                .map_err(|e| ModelError::Tokenizer {
                    path: path.clone(),
                    message: format!("{e}"),
                })?;
        Ok(Self::from_tokenizer(inner, path))
    }

    /// Errors if the tokenizer has ids the embedding table does not cover.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), ModelError> {
        let n = self.inner.get_vocab_size(true);
        let max_id = self
            .inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .unwrap_or(0) as usize;
        if n > vocab_size || max_id >= vocab_size {
            return Err(ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "tokenizer has {n} tokens (largest id {max_id}) but the model's vocabulary has {vocab_size} rows: \
                     the tokenizer does not belong to this model"
                ),
            });
        }
        // ids the vocabulary does not list: the post-processor's special tokens (single texts and pairs, as
        // cross-encoders encode them) and the padding id
        let mut probe: Vec<u32> = Vec::new();
        for input in [
            tokenizers::EncodeInput::from(""),
            tokenizers::EncodeInput::from(("", "")),
        ] {
            if let Ok(e) = self.inner.encode(input, true) {
                probe.extend(e.get_ids());
            }
        }
        let pad = self.inner.get_padding().map(|p| p.pad_id);
        if let Some(id) = probe
            .into_iter()
            .chain(pad)
            .find(|&id| id as usize >= vocab_size)
        {
            return Err(ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "the post-processor or padding adds token id {id}, outside the model's vocabulary of \
                     {vocab_size} rows"
                ),
            });
        }
        Ok(())
    }

    /// Token ids of `text`, with the tokenizer's special tokens (T5 appends `</s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })
    }

    /// A text with its segment ids and attention mask (special tokens added).
    pub fn encode_full(&self, text: &str) -> Result<Encoded, ModelError> {
        self.inner
            .encode(text, true)
            .map(|e| Encoded::from_encoding(&e))
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode {text:?}: {e}"),
            })
    }

    /// A text pair through the tokenizer's post-processor, as Hugging Face's `tokenizer(a, b)`: for BERT,
    /// `[CLS] a [SEP] b [SEP]` with segment ids 0 then 1. Truncation, if set, is longest-first over the pair.
    pub fn encode_pair(&self, first: &str, second: &str) -> Result<Encoded, ModelError> {
        self.inner
            .encode((first, second), true)
            .map(|e| Encoded::from_encoding(&e))
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode the pair ({first:?}, {second:?}): {e}"),
            })
    }

    /// This tokenizer without the padding `tokenizer.json` may ask for (models pad each batch themselves).
    pub fn without_padding(mut self) -> Self {
        self.inner.with_padding(None);
        self
    }

    /// This tokenizer truncating to `max_len` tokens, special tokens included (longest-first for pairs, as
    /// Hugging Face's `truncation=True`); `None` turns truncation off.
    pub fn with_max_length(mut self, max_len: Option<usize>) -> Result<Self, ModelError> {
        let params = max_len.map(|max_length| tokenizers::TruncationParams {
            max_length,
            strategy: tokenizers::TruncationStrategy::LongestFirst,
            direction: tokenizers::TruncationDirection::Right,
            stride: 0,
        });
        self.inner
            .with_truncation(params)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot truncate to {max_len:?} tokens: {e}"),
            })?;
        Ok(self)
    }

    /// The truncation length set by [`TextTokenizer::with_max_length`] (or on the wrapped tokenizer), if any.
    pub fn max_length(&self) -> Option<usize> {
        self.inner.get_truncation().map(|t| t.max_length)
    }

    /// The file the tokenizer came from (used in messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text of token ids.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode {ids:?}: {e}"),
            })
    }

    /// The string of one id, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string, if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` value.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
