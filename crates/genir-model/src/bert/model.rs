//! The BERT-family encoder (`BertModel`, MiniLM, `DistilBertModel`, `ElectraModel`) with hook points.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::TensorData;

use super::config::{BertConfig, BertFamily};
use super::layers::{param2, BertAttention, BertBlock, BertEmbeddings, LayerNorm, Linear};
use crate::error::ModelError;
use crate::hooks::{ActivationCache, HookFilter, HookPoint, Hooks, Stack};
use crate::t5::MASK_VALUE;
use crate::tokenizer::Encoded;
use crate::weights::WeightFile;

/// One batch of encoder inputs, right-padded.
#[derive(Clone, Debug)]
pub struct BertInput {
    /// `[batch, len]` token ids.
    pub input_ids: Tensor<2, Int>,
    /// `[batch, len]` segment ids (0 for padding; ignored by DistilBERT).
    pub token_type_ids: Tensor<2, Int>,
    /// `[batch, len]`, 1 for tokens and 0 for padding.
    pub attention_mask: Tensor<2, Int>,
}

impl BertInput {
    /// A batch of single texts given as id lists (segment ids 0), right-padded with `pad_id`.
    pub fn from_ids(rows: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self, ModelError> {
        let encoded: Vec<Encoded> = rows
            .iter()
            .map(|r| Encoded {
                ids: r.clone(),
                type_ids: vec![0; r.len()],
                attention_mask: vec![1; r.len()],
            })
            .collect();
        Self::from_encoded(&encoded, pad_id, device)
    }

    /// A batch of tokenizer outputs (texts or pairs), right-padded with `pad_id`, segment id 0 and mask 0.
    pub fn from_encoded(
        rows: &[Encoded],
        pad_id: u32,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        if rows.is_empty() || len == 0 {
            return Err(ModelError::Input("empty batch or empty sequence".into()));
        }
        let n = rows.len() * len;
        let (mut ids, mut types, mut mask) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (i, r) in rows.iter().enumerate() {
            if r.ids.is_empty() {
                return Err(ModelError::Input(format!(
                    "sequence {i} of the batch is empty"
                )));
            }
            if r.type_ids.len() != r.ids.len() || r.attention_mask.len() != r.ids.len() {
                return Err(ModelError::Input(format!(
                    "sequence {i}: {} ids, {} segment ids, {} mask values",
                    r.ids.len(),
                    r.type_ids.len(),
                    r.attention_mask.len()
                )));
            }
            for j in 0..len {
                ids.push(r.ids.get(j).map_or(pad_id as i64, |&v| v as i64));
                types.push(r.type_ids.get(j).map_or(0, |&v| v as i64));
                mask.push(r.attention_mask.get(j).map_or(0, |&v| v as i64));
            }
        }
        let shape = [rows.len(), len];
        Ok(Self {
            input_ids: Tensor::from_data(TensorData::new(ids, shape), device),
            token_type_ids: Tensor::from_data(TensorData::new(types, shape), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, shape), device),
        })
    }

    /// Keeps (reorders, repeats) batch rows.
    pub fn select(&self, rows: &[usize]) -> Self {
        let device = self.input_ids.device();
        let idx = crate::device::index_tensor(rows, &device);
        Self {
            input_ids: self.input_ids.clone().select(0, idx.clone()),
            token_type_ids: self.token_type_ids.clone().select(0, idx.clone()),
            attention_mask: self.attention_mask.clone().select(0, idx),
        }
    }

    /// `[batch, len]`.
    pub fn dims(&self) -> [usize; 2] {
        self.input_ids.dims()
    }
}

/// The additive attention bias of a padding mask, `[batch, 1, 1, len]`: 0 for tokens, the f32 minimum for
/// padding (as Hugging Face's extended attention mask).
pub fn attention_bias(mask: Tensor<2, Int>) -> Tensor<4> {
    let [b, s] = mask.dims();
    (mask.float().neg().add_scalar(1.0) * MASK_VALUE).reshape([b, 1, 1, s])
}

/// Tensor-name prefix and family of a checkpoint.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) family: BertFamily,
    /// `bert.`, `distilbert.`, `electra.` or empty (bare `BertModel` and friends).
    pub(crate) prefix: String,
}

impl Layout {
    /// Finds where the encoder's tensors live: under the family's prefix (task models) or at the top
    /// (bare encoders). Errors name the first tensor looked for.
    pub(crate) fn detect(config: &BertConfig, w: &WeightFile) -> Result<Self, ModelError> {
        let family = config.family().map_err(|message| ModelError::Config {
            path: w.path().with_file_name("config.json"),
            message,
        })?;
        let prefixes: &[&str] = match family {
            BertFamily::Bert => &["bert.", ""],
            BertFamily::DistilBert => &["distilbert.", ""],
            BertFamily::Electra => &["electra.", ""],
        };
        let probe = "embeddings.word_embeddings.weight";
        prefixes
            .iter()
            .find(|p| w.contains(&format!("{p}{probe}")))
            .map(|p| Self {
                family,
                prefix: p.to_string(),
            })
            .ok_or_else(|| ModelError::MissingTensor {
                path: w.path().into(),
                name: format!(
                    "{}{probe} (nor {probe}: not a {} checkpoint?)",
                    prefixes[0], config.model_type
                ),
            })
    }
}

/// A BERT-family encoder: embeddings and post-LN blocks, hooked like genir's T5 encoder
/// (`encoder.hook_embed`, `encoder.blocks.{l}.…`; there is no `encoder.ln_final`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// Embeddings (with ELECTRA's projection).
    pub embeddings: BertEmbeddings,
    /// The blocks.
    pub blocks: Vec<BertBlock>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: BertConfig,
}

impl BertEncoder {
    /// Builds the encoder from named Hugging Face tensors (prefix detected: `bert.`, `distilbert.`, `electra.` or
    /// none), checking every shape. Tensors of heads are left in `w` for the caller.
    pub fn from_weights(
        config: BertConfig,
        w: &mut WeightFile,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let layout = Layout::detect(&config, w)?;
        Self::load(config, &layout, w, device)
    }

    pub(crate) fn load(
        config: BertConfig,
        layout: &Layout,
        w: &mut WeightFile,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let config_err = |message| ModelError::Config {
            path: w.path().with_file_name("config.json"),
            message,
        };
        config.check().map_err(config_err)?;
        let act = config.activation().map_err(config_err)?;
        let c = &config;
        let (h, e, ff, eps) = (
            c.hidden_size,
            c.embedding_dim(),
            c.intermediate_size,
            c.layer_norm_eps,
        );
        let p = &layout.prefix;
        let emb = |n: &str| format!("{p}embeddings.{n}");
        let word = w.take(&emb("word_embeddings.weight"), &[c.vocab_size, e])?;
        let position = w.take(
            &emb("position_embeddings.weight"),
            &[c.max_position_embeddings, e],
        )?;
        let token_type = if layout.family == BertFamily::DistilBert || c.type_vocab_size == 0 {
            None
        } else {
            Some(param2(
                w.take(
                    &emb("token_type_embeddings.weight"),
                    &[c.type_vocab_size, e],
                )?,
                device,
            ))
        };
        let ln = LayerNorm::load(w, &emb("LayerNorm"), e, eps, device)?;
        let project = if layout.family == BertFamily::Electra && e != h {
            Some(Linear::load(
                w,
                &format!("{p}embeddings_project"),
                e,
                h,
                device,
            )?)
        } else {
            None
        };
        let embeddings = BertEmbeddings {
            word: param2(word, device),
            position: param2(position, device),
            token_type,
            ln,
            project,
        };
        let mut blocks = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            // Names of (q, k, v, o, attention norm, ff in, ff out, ff norm) in this family.
            let names: [String; 8] = match layout.family {
                BertFamily::DistilBert => {
                    let b = format!("{p}transformer.layer.{l}");
                    [
                        format!("{b}.attention.q_lin"),
                        format!("{b}.attention.k_lin"),
                        format!("{b}.attention.v_lin"),
                        format!("{b}.attention.out_lin"),
                        format!("{b}.sa_layer_norm"),
                        format!("{b}.ffn.lin1"),
                        format!("{b}.ffn.lin2"),
                        format!("{b}.output_layer_norm"),
                    ]
                }
                BertFamily::Bert | BertFamily::Electra => {
                    let b = format!("{p}encoder.layer.{l}");
                    [
                        format!("{b}.attention.self.query"),
                        format!("{b}.attention.self.key"),
                        format!("{b}.attention.self.value"),
                        format!("{b}.attention.output.dense"),
                        format!("{b}.attention.output.LayerNorm"),
                        format!("{b}.intermediate.dense"),
                        format!("{b}.output.dense"),
                        format!("{b}.output.LayerNorm"),
                    ]
                }
            };
            blocks.push(BertBlock {
                attn: BertAttention {
                    q: Linear::load(w, &names[0], h, h, device)?,
                    k: Linear::load(w, &names[1], h, h, device)?,
                    v: Linear::load(w, &names[2], h, h, device)?,
                    o: Linear::load(w, &names[3], h, h, device)?,
                    n_heads: c.num_attention_heads,
                    d_head: c.head_dim(),
                },
                ln_attn: LayerNorm::load(w, &names[4], h, eps, device)?,
                ff_in: Linear::load(w, &names[5], h, ff, device)?,
                ff_out: Linear::load(w, &names[6], ff, h, device)?,
                ln_ff: LayerNorm::load(w, &names[7], h, eps, device)?,
                act,
            });
        }
        Ok(Self {
            embeddings,
            blocks,
            config,
        })
    }

    /// Loads a Hugging Face folder: `config.json` and `model.safetensors` (or `pytorch_model.bin`), keeping
    /// the encoder only (pooler and task heads are ignored, with a log line).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let mut w = WeightFile::from_dir(dir)?;
        let enc = Self::from_weights(config, &mut w, device)?;
        log_unused(&w, "BERT encoder");
        Ok(enc)
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embeddings.word.val().device()
    }

    /// Number of blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Every hook point of this encoder, in model order ([`HookPoint::encoder_only`]).
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::encoder_only(self.blocks.len())
    }

    /// Refuses hooks on points this encoder does not have.
    pub fn check_hooks(&self, hooks: &Hooks<'_>) -> Result<(), ModelError> {
        if hooks.is_active() {
            hooks.validate_in(&self.hook_points())?;
        }
        Ok(())
    }

    /// Checks an input against the model: length within the position table, matching shapes, token and
    /// segment ids within their embedding tables (two reductions read back to the host).
    fn check_input(&self, input: &BertInput) -> Result<(), ModelError> {
        let [b, s] = input.dims();
        let max = self.config.max_position_embeddings;
        if s > max {
            return Err(ModelError::Input(format!(
                "sequences of {s} tokens are longer than the model's {max} positions (truncate them)"
            )));
        }
        for (what, t) in [
            ("token_type_ids", &input.token_type_ids),
            ("attention_mask", &input.attention_mask),
        ] {
            if t.dims() != [b, s] {
                return Err(ModelError::Input(format!(
                    "{what} has shape {:?}, input_ids {:?}",
                    t.dims(),
                    [b, s]
                )));
            }
        }
        let range = |t: &Tensor<2, Int>| -> Result<(i64, i64), ModelError> {
            let read = |x: Tensor<1, Int>| {
                x.try_into_scalar::<i64>()
                    .map_err(|e| ModelError::Tensor(format!("{e:?}")))
            };
            Ok((read(t.clone().min())?, read(t.clone().max())?))
        };
        let check = |what: &str, t: &Tensor<2, Int>, rows: usize| -> Result<(), ModelError> {
            let (lo, hi) = range(t)?;
            if lo < 0 || hi >= rows as i64 {
                return Err(ModelError::Input(format!(
                    "{what} range over {lo}..={hi}, but the embedding table has {rows} rows"
                )));
            }
            Ok(())
        };
        check("input_ids", &input.input_ids, self.config.vocab_size)?;
        if let Some(tt) = &self.embeddings.token_type {
            check("token_type_ids", &input.token_type_ids, tt.dims()[0])?;
        }
        Ok(())
    }

    /// The embedding output, `[batch, len, hidden]`: what block 0 reads (after the embedding norm and, for
    /// ELECTRA, the projection).
    pub fn embed(&self, input: &BertInput) -> Result<Tensor<3>, ModelError> {
        self.check_input(input)?;
        Ok(self
            .embeddings
            .forward(input.input_ids.clone(), input.token_type_ids.clone()))
    }

    /// The last hidden state, `[batch, len, hidden]` (Hugging Face's `last_hidden_state`; it is also
    /// `encoder.blocks.{last}.hook_resid_post`).
    pub fn forward(
        &self,
        input: &BertInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.check_hooks(hooks)?;
        let x = hooks.apply3(HookPoint::embed(Stack::Encoder), self.embed(input)?)?;
        self.forward_from(x, 0, attention_bias(input.attention_mask.clone()), hooks)
    }

    /// Runs blocks `start..` on a residual stream with the additive attention bias of [`attention_bias`] (for
    /// sweeps that resume from a cached layer).
    pub fn forward_from(
        &self,
        mut x: Tensor<3>,
        start: usize,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        for (l, block) in self.blocks.iter().enumerate().skip(start) {
            x = block.forward(x, bias.clone(), hooks, l)?;
        }
        Ok(x)
    }

    /// The last hidden state at the first position, `[batch, 1, hidden]` (what a classification head reads):
    /// as [`BertEncoder::forward`], but the last block computes position 0 only
    /// ([`BertBlock::forward_first`]) unless `hooks` read or write one of its points.
    pub fn forward_first(
        &self,
        input: &BertInput,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        self.check_hooks(hooks)?;
        let x = hooks.apply3(HookPoint::embed(Stack::Encoder), self.embed(input)?)?;
        self.forward_from_first(x, 0, attention_bias(input.attention_mask.clone()), hooks)
    }

    /// [`BertEncoder::forward_from`] kept at the first position, `[batch, 1, hidden]`; the last block
    /// computes that position only unless `hooks` touch it. `start` may be the depth (`x` is then the
    /// last hidden state).
    pub fn forward_from_first(
        &self,
        x: Tensor<3>,
        start: usize,
        bias: Tensor<4>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor<3>, ModelError> {
        let first = |x: Tensor<3>| {
            let [b, _, h] = x.dims();
            x.slice([0..b, 0..1, 0..h])
        };
        let Some(last) = self.blocks.len().checked_sub(1).filter(|&l| start <= l) else {
            return Ok(first(x));
        };
        let touched = hooks.is_active()
            && self
                .hook_points()
                .iter()
                .any(|p| p.layer == Some(last) && hooks.wants(p));
        if touched {
            return Ok(first(self.forward_from(x, start, bias, hooks)?));
        }
        let mut x = x;
        for (l, block) in self.blocks.iter().enumerate().take(last).skip(start) {
            x = block.forward(x, bias.clone(), hooks, l)?;
        }
        self.blocks[last].forward_first(x, bias)
    }

    /// Forward pass recording every hook point selected by `filter`.
    pub fn run_with_cache(
        &self,
        input: &BertInput,
        filter: HookFilter,
    ) -> Result<(Tensor<3>, ActivationCache), ModelError> {
        let mut hooks = Hooks::caching(filter);
        let out = self.forward(input, &mut hooks)?;
        Ok((out, hooks.take_cache()))
    }
}

/// Logs the tensors of a file nothing took (pooler weights of bi-encoders, pre-training heads, ...).
pub(crate) fn log_unused(w: &WeightFile, what: &str) {
    let unused = w.unused();
    if !unused.is_empty() {
        tracing::info!(file = %w.path().display(), ?unused, "tensors not used by the {}", what);
    }
}
