//! Attention patterns (`encoder.blocks.{l}.self_attn.hook_pattern`) of the original and perturbed inputs, as a
//! long table.

use genir_data::{Column, Table};
use genir_model::hooks::{AttnKind, AttnSite, HookFilter, HookPoint, Hooks, Stack};

use crate::error::{MechirError, Result};
use crate::pairs::PairDataset;
use crate::ranker::{EncodeConfig, PatchModel};

/// Which attention weights [`attention_patterns`] keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatternFilter {
    /// Layers (all when `None`).
    pub layers: Option<Vec<usize>>,
    /// Heads (all when `None`).
    pub heads: Option<Vec<usize>>,
    /// Keep only weights of at least this value.
    pub min_weight: f32,
}

/// Attention patterns of every pair's original and perturbed input: columns `pair` (u32), `input`
/// (`original` or `perturbed`), `layer`, `head`, `query_pos`, `key_pos` (u32), `query_token`, `key_token`
/// (str), `weight` (f32). Padding positions are left out.
pub fn attention_patterns<M: PatchModel + ?Sized>(
    model: &M,
    pairs: &PairDataset,
    encode: &EncodeConfig,
    filter: &PatternFilter,
) -> Result<Table> {
    let encoder = model.encoder();
    let depth = encoder.depth();
    let layers: Vec<usize> = filter
        .layers
        .clone()
        .unwrap_or_else(|| (0..depth).collect());
    if let Some(bad) = layers.iter().find(|&&l| l >= depth) {
        return Err(MechirError::Input(format!(
            "layer {bad} is out of range: the model has {depth} layers"
        )));
    }
    let points: Vec<HookPoint> = layers
        .iter()
        .map(|&l| HookPoint::attn(Stack::Encoder, l, AttnKind::SelfAttn, AttnSite::Pattern))
        .collect();
    let mut pair: Vec<u32> = Vec::new();
    let mut which: Vec<&str> = Vec::new();
    let (mut lay, mut hd, mut qp, mut kp): (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>) =
        Default::default();
    let (mut qt, mut kt, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for (bi, chunk) in pairs.pairs.chunks(16).enumerate() {
        let enc = model.encode(chunk, pairs.perturbation.alignment, encode)?;
        for (name, input, toks) in [
            ("original", &enc.original, &enc.tokens),
            ("perturbed", &enc.perturbed, &enc.perturbed_tokens),
        ] {
            let mut hooks = Hooks::caching(HookFilter::points(&points));
            encoder.forward(input, &mut hooks)?;
            let cache = hooks.take_cache();
            for (&layer, p) in layers.iter().zip(&points) {
                let act = cache.require(p)?;
                let dims = act.dims();
                let (b, h, s) = (dims[0], dims[1], dims[2]);
                let v = act.to_vec()?;
                for row in 0..b {
                    let n = toks[row].len().min(s);
                    for head in 0..h {
                        if filter.heads.as_ref().is_some_and(|hs| !hs.contains(&head)) {
                            continue;
                        }
                        for q in 0..n {
                            for k in 0..n {
                                let x = v[((row * h + head) * s + q) * s + k];
                                if x < filter.min_weight {
                                    continue;
                                }
                                pair.push((bi * 16 + row) as u32);
                                which.push(name);
                                lay.push(layer as u32);
                                hd.push(head as u32);
                                qp.push(q as u32);
                                kp.push(k as u32);
                                qt.push(toks[row][q].clone());
                                kt.push(toks[row][k].clone());
                                w.push(x);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Table::new(vec![
        Column::new("pair", pair),
        Column::new("input", which),
        Column::new("layer", lay),
        Column::new("head", hd),
        Column::new("query_pos", qp),
        Column::new("key_pos", kp),
        Column::new("query_token", qt),
        Column::new("key_token", kt),
        Column::new("weight", w),
    ])?)
}
