//! What each attention head writes, read through the vocabulary: the head's output (its `hook_z` slice
//! times its rows of the output projection `o`) passed through the decoder's final norm, output scale and
//! LM head.

use burn::prelude::*;
use genir_data::Table;
use genir_model::hooks::{AttnKind, AttnSite, HookFilter, HookPoint, Stack};
use genir_model::t5::T5Model;
use genir_train::bundle::GenirModel;

use crate::common::{col, docid_block, first_step, host, lens_logits, prepare, Probe};
use crate::error::{InterpError, Result};
use crate::patching::token_label;

/// Per-head contributions to the residual stream: `z: [batch, pos, head, d_head]` (a `hook_z` activation of
/// decoder layer `layer`) -> `[batch, pos, head, d_model]`. Their sum over heads is the module's output
/// (`hook_self_attn_out` / `hook_cross_attn_out`).
pub fn head_contributions(
    model: &T5Model,
    layer: usize,
    kind: AttnKind,
    z: Tensor<4>,
) -> Result<Tensor<4>> {
    let block = model
        .decoder
        .blocks
        .get(layer)
        .ok_or_else(|| InterpError::Input(format!("decoder layer {layer} does not exist")))?;
    let attn = match kind {
        AttnKind::SelfAttn => &block.self_attn,
        AttnKind::CrossAttn => block
            .cross_attn
            .as_ref()
            .ok_or_else(|| InterpError::Input("decoder block without cross-attention".into()))?,
    };
    let [b, p, h, dh] = z.dims();
    let d = model.config.d_model;
    // o: [head * d_head, d_model] -> [head, d_head, d_model]; per head: [b*p, d_head] @ [d_head, d_model].
    let o = attn.o.val().reshape([h, dh, d]);
    let z = z.permute([2, 0, 1, 3]).reshape([h, b * p, dh]); // [head, b*p, d_head]
    let out = z.matmul(o); // [head, b*p, d_model]
    Ok(out.reshape([h, b, p, d]).permute([1, 2, 0, 3]))
}

/// Settings of the head projection.
#[derive(Clone, Debug)]
pub struct HeadProjectionConfig {
    /// Tokens reported per head and vocabulary part.
    pub top_k: usize,
    /// Which attention (the paper studies cross-attention).
    pub kind: AttnKind,
    /// Queries per forward pass.
    pub batch_size: usize,
}

impl Default for HeadProjectionConfig {
    fn default() -> Self {
        Self {
            top_k: 10,
            kind: AttnKind::CrossAttn,
            batch_size: 32,
        }
    }
}

/// Projects every decoder head's output at the first decoding position to the vocabulary.
///
/// Rows per query x layer x head: the `top_k` text tokens (`part = "text"`) and the `top_k` docid tokens
/// (`part = "docid"`) by logit, and one `part = "correct"` row for the query's docid token. Columns: `qid,
/// docid, layer, head, part, rank` (1 = top within the part; for `correct`, the rank among docid tokens),
/// `token_id, token` (token text, or the external docid of an atomic docid token), `score` (logit).
pub fn head_vocab_projection(
    gm: &GenirModel,
    probes: &[Probe],
    cfg: &HeadProjectionConfig,
) -> Result<Table> {
    let prepared = prepare(gm, probes)?;
    let layers = gm.model.decoder.blocks.len();
    // a removed attention (a model saved with components removed) has no heads to project
    let (layer_of, points): (Vec<usize>, Vec<HookPoint>) = (0..layers)
        .filter(|&l| !crate::patching::attention_removed(&gm.model, l, cfg.kind))
        .map(|l| (l, HookPoint::attn(Stack::Decoder, l, cfg.kind, AttnSite::Z)))
        .unzip();
    let block = docid_block(gm);
    let text_end = gm.scheme.token_offset as usize;
    let mut t = (
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
        Vec::<String>::new(),
        Vec::<i64>::new(),
        Vec::<i64>::new(),
        Vec::<String>::new(),
        Vec::<f64>::new(),
    );
    for batch in prepared.chunks(cfg.batch_size.max(1)) {
        let (_, cache) = first_step(gm, batch, 0, HookFilter::points(&points))?;
        for (&l, p) in layer_of.iter().zip(&points) {
            let z = cache.require(p)?.rank4(p)?;
            let per_head = head_contributions(&gm.model, l, cfg.kind, z)?; // [b, 1, h, d]
            let [b, _, h, d] = per_head.dims();
            let logits = lens_logits(&gm.model, per_head.reshape([b, h, d]));
            let v = logits.dims()[2];
            let values = host(logits)?;
            for (i, q) in batch.iter().enumerate() {
                let target = q.target[0] as usize;
                for head in 0..h {
                    let row = &values[(i * h + head) * v..(i * h + head + 1) * v];
                    let mut push = |part: &str, rank: usize, id: usize| {
                        t.0.push(q.qid.clone());
                        t.1.push(q.docid.clone());
                        t.2.push(l as i64);
                        t.3.push(head as i64);
                        t.4.push(part.to_string());
                        t.5.push(rank as i64);
                        t.6.push(id as i64);
                        t.7.push(token_label(gm, id));
                        t.8.push(f64::from(row[id]));
                    };
                    let top = |ids: &mut dyn Iterator<Item = usize>| -> Vec<usize> {
                        let mut v: Vec<usize> = ids.collect();
                        v.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                        v.truncate(cfg.top_k);
                        v
                    };
                    let text_top = top(&mut (0..text_end.min(v)).filter(|id| !block.contains(id)));
                    let doc_top = top(&mut block.clone());
                    for (r, &id) in text_top.iter().enumerate() {
                        push("text", r + 1, id);
                    }
                    for (r, &id) in doc_top.iter().enumerate() {
                        push("docid", r + 1, id);
                    }
                    let rank = 1 + row[block.clone()]
                        .iter()
                        .filter(|&&x| x > row[target])
                        .count();
                    push("correct", rank, target);
                }
            }
        }
    }
    Ok(Table::new(vec![
        col("qid", t.0),
        col("docid", t.1),
        col("layer", t.2),
        col("head", t.3),
        col("part", t.4),
        col("rank", t.5),
        col("token_id", t.6),
        col("token", t.7),
        col("score", t.8),
    ])?)
}
