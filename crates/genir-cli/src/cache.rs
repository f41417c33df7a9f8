//! `genir cache`: logits and hook activations of one batch, as safetensors for Python users.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::Args;
use genir_model::bert::{BertConfig, BertEncoder, BertInput, Cat, Dot};
use genir_model::hooks::{HookFilter, HookPoint};
use genir_model::t5::{Seq2SeqInput, T5Model};
use genir_model::tokenizer::TextTokenizer;
use genir_model::weights::{write_safetensors, HostTensor};

pub const EXAMPLES: &str = "Examples:
  genir cache --model crates/genir-model/tests/fixtures/t5/relu-tied \\
      --source \"The quick brown fox.\" --source \"Open file and return a stream.\" \\
      --target-ids 0,5 --out acts.safetensors
  genir cache --model DIR --source \"query text\" --target-ids 0 \\
      --hooks 'decoder.blocks.*.hook_resid_post,*.cross_attn.hook_pattern' --out acts.safetensors

In Python: safetensors.numpy.load_file(\"acts.safetensors\")[\"decoder.blocks.0.hook_resid_post\"]
Shapes follow TransformerLens: residual stream [batch, pos, d_model]; per-head q/k/v/z [batch, pos, head, d_head];
attention scores and patterns [batch, head, query_pos, key_pos]; logits [batch, target_pos, vocab].";

/// Arguments of `genir cache`.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Hugging Face model folder (config.json, model.safetensors or pytorch_model.bin, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Encoder input text; repeat for a batch.
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// Decoder input ids, comma-separated, the same for every source (T5 starts with 0; required for T5,
    /// unused by BERT-family encoders).
    #[arg(long, value_delimiter = ',')]
    pub target_ids: Vec<u32>,
    /// Hook points to cache: comma-separated glob patterns (default: all).
    #[arg(long)]
    pub hooks: Option<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

/// The `model_type` of a Hugging Face folder's `config.json`, if it has one.
fn model_type(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("model_type")?.as_str().map(String::from)
}

pub fn run(args: CacheArgs, device: &Device) -> Result<()> {
    if matches!(
        model_type(&args.model).as_deref(),
        Some("bert" | "distilbert" | "electra")
    ) {
        return run_bert(args, device);
    }
    if args.target_ids.is_empty() {
        bail!("--target-ids is required for an encoder-decoder (T5) model, e.g. --target-ids 0");
    }
    let model = T5Model::from_pretrained(&args.model, device)
        .with_context(|| format!("loading model from {}", args.model.display()))?;
    let vocab = model.config.vocab_size;
    if let Some(bad) = args.target_ids.iter().find(|&&id| id as usize >= vocab) {
        bail!("--target-ids: id {bad} is outside the model's vocabulary of {vocab}");
    }
    let tok = TextTokenizer::from_file(&args.model.join("tokenizer.json"), vocab)?;
    let ids = args
        .sources
        .iter()
        .map(|s| tok.encode(s))
        .collect::<Result<Vec<_>, _>>()?;
    let decoder = vec![args.target_ids.clone(); ids.len()];
    let pad = model.config.pad_token_id as u32;
    let input = Seq2SeqInput::from_ids(&ids, &decoder, pad, device)?;
    let filter = match &args.hooks {
        Some(p) => HookFilter::parse(p),
        None => HookFilter::all(),
    };
    let (e, d) = model.depth();
    filter.validate(e, d)?;
    let (logits, cache) = model.run_with_cache(&input, filter)?;

    let mut tensors = BTreeMap::new();
    let dims = logits.dims().to_vec();
    let values = logits
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
    tensors.insert("logits".to_string(), HostTensor::new(dims, values));
    for (point, act) in cache.iter() {
        tensors.insert(
            point.to_string(),
            HostTensor::new(act.dims(), act.to_vec()?),
        );
    }
    let mut meta = HashMap::new();
    meta.insert("sources".into(), serde_json::to_string(&args.sources)?);
    meta.insert("input_ids".into(), serde_json::to_string(&ids)?);
    meta.insert(
        "target_ids".into(),
        serde_json::to_string(&args.target_ids)?,
    );
    meta.insert("model".into(), args.model.display().to_string());
    meta.insert("genir_version".into(), env!("CARGO_PKG_VERSION").into());
    let n = tensors.len();
    write_safetensors(&args.out, &tensors, Some(meta))?;
    eprintln!(
        "wrote {} tensors (logits + {} hook points) for {} source(s) to {}",
        n,
        n - 1,
        ids.len(),
        args.out.display()
    );
    Ok(())
}

/// What a BERT-family folder holds: a sentence-transformers bi-encoder, a sequence classifier, or a bare
/// encoder.
enum BertKind {
    Dot(Box<Dot>),
    Cat(Box<Cat>),
    Encoder(Box<(BertEncoder, TextTokenizer)>),
}

fn load_bert(dir: &Path, device: &Device) -> Result<BertKind> {
    if dir.join("modules.json").exists() {
        return Ok(BertKind::Dot(Box::new(Dot::from_pretrained(dir, device)?)));
    }
    let config = BertConfig::from_file(&dir.join("config.json"))?;
    let text = std::fs::read_to_string(dir.join("config.json"))?;
    let raw: serde_json::Value = serde_json::from_str(&text)?;
    let classifier = raw
        .get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| {
            a.iter().any(|x| {
                x.as_str()
                    .is_some_and(|s| s.contains("SequenceClassification"))
            })
        });
    if classifier {
        return Ok(BertKind::Cat(Box::new(Cat::from_pretrained(dir, device)?)));
    }
    // Hugging Face's tokenizer for the model: untruncated (`tokenizer(text)`), its class's normalizer settings
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), config.vocab_size)?
        .with_bert_family_settings(dir, &config.model_type)?;
    Ok(BertKind::Encoder(Box::new((
        BertEncoder::from_pretrained(dir, device)?,
        tok,
    ))))
}

fn host(t: Tensor<3>) -> Result<HostTensor> {
    let a = genir_model::hooks::Activation::Rank3(t);
    Ok(HostTensor::new(a.dims(), a.to_vec()?))
}

/// `genir cache` on a BERT-family folder: `last_hidden_state` `[batch, pos, hidden]`, the hook points, and
/// `embedding` `[batch, hidden]` (pooled as the bi-encoder pools, normalised if it normalises) for a
/// sentence-transformers folder, or `logits` `[batch, labels]` for a sequence classifier.
fn run_bert(args: CacheArgs, device: &Device) -> Result<()> {
    let kind = load_bert(&args.model, device)
        .with_context(|| format!("loading model from {}", args.model.display()))?;
    let texts: Vec<&str> = args.sources.iter().map(String::as_str).collect();
    let (encoder, input, what) = match &kind {
        BertKind::Dot(d) => (&d.encoder, d.encode_texts(&texts)?, "bi-encoder"),
        BertKind::Cat(c) => {
            let tok = c
                .tokenizer
                .as_ref()
                .context("the cross-encoder folder has no tokenizer.json")?;
            let rows = texts
                .iter()
                .map(|t| tok.encode_full(t))
                .collect::<Result<Vec<_>, _>>()?;
            let pad = c.encoder.config.pad_token_id as u32;
            (
                &c.encoder,
                BertInput::from_encoded(&rows, pad, device)?,
                "cross-encoder",
            )
        }
        BertKind::Encoder(et) => {
            let (e, tok) = &**et;
            let rows = texts
                .iter()
                .map(|t| tok.encode_full(t))
                .collect::<Result<Vec<_>, _>>()?;
            let pad = e.config.pad_token_id as u32;
            (e, BertInput::from_encoded(&rows, pad, device)?, "encoder")
        }
    };
    let filter = match &args.hooks {
        Some(p) => HookFilter::parse(p),
        None => HookFilter::all(),
    };
    filter.validate_in(&HookPoint::encoder_only(encoder.depth()))?;
    let (hidden, cache) = encoder.run_with_cache(&input, filter)?;
    let mut tensors = BTreeMap::new();
    match &kind {
        BertKind::Dot(d) => {
            let pooled = d.pool(hidden.clone(), input.attention_mask.clone());
            let emb = if d.normalize {
                genir_model::bert::l2_normalize(pooled)
            } else {
                pooled
            };
            let dims = emb.dims().to_vec();
            let v = emb
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading embeddings: {e:?}"))?;
            tensors.insert("embedding".to_string(), HostTensor::new(dims, v));
        }
        BertKind::Cat(c) => {
            let logits = c.head.forward(hidden.clone());
            let dims = logits.dims().to_vec();
            let v = logits
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
            tensors.insert("logits".to_string(), HostTensor::new(dims, v));
        }
        BertKind::Encoder(_) => {}
    }
    tensors.insert("last_hidden_state".to_string(), host(hidden)?);
    for (point, act) in cache.iter() {
        tensors.insert(
            point.to_string(),
            HostTensor::new(act.dims(), act.to_vec()?),
        );
    }
    let ids = input
        .input_ids
        .clone()
        .try_into_vec_as::<i64>()
        .map_err(|e| anyhow::anyhow!("reading ids: {e:?}"))?;
    let mut meta = HashMap::new();
    meta.insert("sources".into(), serde_json::to_string(&args.sources)?);
    meta.insert("input_ids".into(), serde_json::to_string(&ids)?);
    meta.insert("input_shape".into(), serde_json::to_string(&input.dims())?);
    meta.insert("model".into(), args.model.display().to_string());
    meta.insert("model_kind".into(), what.into());
    meta.insert("genir_version".into(), env!("CARGO_PKG_VERSION").into());
    let n = tensors.len();
    write_safetensors(&args.out, &tensors, Some(meta))?;
    eprintln!(
        "wrote {n} tensors ({} hook points) for {} source(s) of a {what} to {}",
        cache.len(),
        texts.len(),
        args.out.display()
    );
    Ok(())
}
