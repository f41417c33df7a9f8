//! `genir cache`: logits and hook activations of one batch, as safetensors for Python users.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use clap::Args;
use genir_model::hooks::HookFilter;
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
    /// Decoder input ids, comma-separated, the same for every source (T5 starts with 0).
    #[arg(long, value_delimiter = ',', required = true)]
    pub target_ids: Vec<u32>,
    /// Hook points to cache: comma-separated glob patterns (default: all).
    #[arg(long)]
    pub hooks: Option<String>,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: CacheArgs, device: &Device) -> Result<()> {
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
