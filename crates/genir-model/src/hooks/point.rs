//! Typed hook-point names (`decoder.blocks.3.cross_attn.hook_z`) that parse and print.

use std::fmt;
use std::str::FromStr;

use crate::error::ModelError;

/// Which stack of the model a hook point belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stack {
    /// The encoder (reads the query or document text).
    Encoder,
    /// The decoder (writes the docid).
    Decoder,
}

impl Stack {
    /// The name prefix of this stack: `encoder` or `decoder`.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Encoder => "encoder",
            Stack::Decoder => "decoder",
        }
    }
}

/// Which attention module of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttnKind {
    /// Self-attention (causal in the decoder).
    SelfAttn,
    /// Cross-attention from the decoder to the encoder output.
    CrossAttn,
}

impl AttnKind {
    fn name(self) -> &'static str {
        match self {
            AttnKind::SelfAttn => "self_attn",
            AttnKind::CrossAttn => "cross_attn",
        }
    }
}

/// A point inside an attention module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttnSite {
    /// Queries per head, `[batch, pos, head, d_head]`.
    Q,
    /// Keys per head, `[batch, key_pos, head, d_head]`.
    K,
    /// Values per head, `[batch, key_pos, head, d_head]`.
    V,
    /// Scores before the softmax (position bias and mask included), `[batch, head, query_pos, key_pos]`.
    Scores,
    /// Attention probabilities, `[batch, head, query_pos, key_pos]`.
    Pattern,
    /// Per-head mixed values before the output projection, `[batch, pos, head, d_head]`.
    Z,
}

impl AttnSite {
    const ALL: [AttnSite; 6] = [
        AttnSite::Q,
        AttnSite::K,
        AttnSite::V,
        AttnSite::Scores,
        AttnSite::Pattern,
        AttnSite::Z,
    ];

    fn name(self) -> &'static str {
        match self {
            AttnSite::Q => "hook_q",
            AttnSite::K => "hook_k",
            AttnSite::V => "hook_v",
            AttnSite::Scores => "hook_attn_scores",
            AttnSite::Pattern => "hook_pattern",
            AttnSite::Z => "hook_z",
        }
    }
}

/// What is read or written at a hook point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Site {
    /// Token embeddings entering the stack, `[batch, pos, d_model]` (`{stack}.hook_embed`).
    Embed,
    /// Residual stream entering a block.
    ResidPre,
    /// Residual stream after self-attention has been added.
    ResidMid,
    /// Residual stream after cross-attention has been added (decoder only).
    ResidMidCross,
    /// Residual stream leaving a block.
    ResidPost,
    /// Output of the self-attention module (after its output projection).
    SelfAttnOut,
    /// Output of the cross-attention module (decoder only).
    CrossAttnOut,
    /// Feed-forward hidden activations after the non-linearity (and gate), `[batch, pos, d_ff]`.
    MlpPost,
    /// Output of the feed-forward module.
    MlpOut,
    /// A point inside an attention module.
    Attn(AttnKind, AttnSite),
    /// The stack's output after its final RMS norm (`{stack}.ln_final.hook_normalized`).
    FinalNorm,
}

/// A named place in the model where an activation can be cached, patched, ablated or replaced.
///
/// Names follow TransformerLens: `encoder.blocks.0.hook_resid_post`,
/// `decoder.blocks.3.cross_attn.hook_z`, `decoder.ln_final.hook_normalized`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HookPoint {
    /// Encoder or decoder.
    pub stack: Stack,
    /// Block index; `None` for stack-level points (`hook_embed`, `ln_final`).
    pub layer: Option<usize>,
    /// The site inside the block or stack.
    pub site: Site,
}

/// Where the position and head axes of a hooked tensor are, so patches can select them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisLayout {
    /// Axis of (query) positions.
    pub pos: usize,
    /// Axis of heads, if the tensor has one.
    pub head: Option<usize>,
    /// Rank of the tensor.
    pub rank: usize,
}

impl HookPoint {
    /// A block-level point.
    pub fn block(stack: Stack, layer: usize, site: Site) -> Self {
        Self {
            stack,
            layer: Some(layer),
            site,
        }
    }

    /// An attention-internal point.
    pub fn attn(stack: Stack, layer: usize, kind: AttnKind, site: AttnSite) -> Self {
        Self::block(stack, layer, Site::Attn(kind, site))
    }

    /// The embedding point of a stack.
    pub fn embed(stack: Stack) -> Self {
        Self {
            stack,
            layer: None,
            site: Site::Embed,
        }
    }

    /// The final-norm output point of a stack.
    pub fn final_norm(stack: Stack) -> Self {
        Self {
            stack,
            layer: None,
            site: Site::FinalNorm,
        }
    }

    /// The layout of the tensor seen at this point.
    pub fn layout(&self) -> AxisLayout {
        match self.site {
            Site::Attn(_, AttnSite::Q | AttnSite::K | AttnSite::V | AttnSite::Z) => AxisLayout {
                pos: 1,
                head: Some(2),
                rank: 4,
            },
            Site::Attn(_, AttnSite::Scores | AttnSite::Pattern) => AxisLayout {
                pos: 2,
                head: Some(1),
                rank: 4,
            },
            _ => AxisLayout {
                pos: 1,
                head: None,
                rank: 3,
            },
        }
    }

    /// Every hook point of a model with the given numbers of layers, in model order.
    pub fn all(encoder_layers: usize, decoder_layers: usize) -> Vec<HookPoint> {
        let mut out = Vec::new();
        for (stack, layers) in [
            (Stack::Encoder, encoder_layers),
            (Stack::Decoder, decoder_layers),
        ] {
            out.push(HookPoint::embed(stack));
            for l in 0..layers {
                out.extend(Self::block_points(stack, l));
            }
            out.push(HookPoint::final_norm(stack));
        }
        out
    }

    /// Every hook point of an encoder-only model (the BERT family), in model order: `encoder.hook_embed` and
    /// the encoder blocks' points. There is no `encoder.ln_final.hook_normalized`: post-LN encoders end with
    /// the last block's norm, which is `encoder.blocks.{last}.hook_resid_post`.
    pub fn encoder_only(layers: usize) -> Vec<HookPoint> {
        let mut out = vec![HookPoint::embed(Stack::Encoder)];
        for l in 0..layers {
            out.extend(Self::block_points(Stack::Encoder, l));
        }
        out
    }

    /// Checks that this point is one of `known` (the points of a model), suggesting near names if not.
    pub fn validate_in(&self, known: &[HookPoint]) -> Result<(), ModelError> {
        if known.contains(self) {
            Ok(())
        } else {
            Err(ModelError::UnknownHook {
                name: self.to_string(),
                suggestions: suggest(&self.to_string(), known),
            })
        }
    }

    /// The points of one block, in the order the forward pass reaches them.
    pub fn block_points(stack: Stack, layer: usize) -> Vec<HookPoint> {
        let b = |site| HookPoint::block(stack, layer, site);
        let mut v = vec![b(Site::ResidPre)];
        v.extend(AttnSite::ALL.map(|s| b(Site::Attn(AttnKind::SelfAttn, s))));
        v.push(b(Site::SelfAttnOut));
        v.push(b(Site::ResidMid));
        if stack == Stack::Decoder {
            v.extend(AttnSite::ALL.map(|s| b(Site::Attn(AttnKind::CrossAttn, s))));
            v.push(b(Site::CrossAttnOut));
            v.push(b(Site::ResidMidCross));
        }
        v.push(b(Site::MlpPost));
        v.push(b(Site::MlpOut));
        v.push(b(Site::ResidPost));
        v
    }

    /// Checks that this point exists in a model with the given numbers of layers.
    pub fn validate(&self, encoder_layers: usize, decoder_layers: usize) -> Result<(), ModelError> {
        let layers = match self.stack {
            Stack::Encoder => encoder_layers,
            Stack::Decoder => decoder_layers,
        };
        let cross = matches!(
            self.site,
            Site::ResidMidCross | Site::CrossAttnOut | Site::Attn(AttnKind::CrossAttn, _)
        );
        let ok = match self.layer {
            Some(l) => l < layers && !(cross && self.stack == Stack::Encoder),
            None => matches!(self.site, Site::Embed | Site::FinalNorm),
        };
        if ok {
            Ok(())
        } else {
            Err(ModelError::UnknownHook {
                name: self.to_string(),
                suggestions: suggest(
                    &self.to_string(),
                    &HookPoint::all(encoder_layers, decoder_layers),
                ),
            })
        }
    }
}

fn site_name(site: Site) -> String {
    match site {
        Site::Embed => "hook_embed".into(),
        Site::ResidPre => "hook_resid_pre".into(),
        Site::ResidMid => "hook_resid_mid".into(),
        Site::ResidMidCross => "hook_resid_mid_cross".into(),
        Site::ResidPost => "hook_resid_post".into(),
        Site::SelfAttnOut => "hook_self_attn_out".into(),
        Site::CrossAttnOut => "hook_cross_attn_out".into(),
        Site::MlpPost => "mlp.hook_post".into(),
        Site::MlpOut => "hook_mlp_out".into(),
        Site::Attn(kind, s) => format!("{}.{}", kind.name(), s.name()),
        Site::FinalNorm => "ln_final.hook_normalized".into(),
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(
                f,
                "{}.blocks.{}.{}",
                self.stack.name(),
                l,
                site_name(self.site)
            ),
            None => write!(f, "{}.{}", self.stack.name(), site_name(self.site)),
        }
    }
}

fn parse_site(s: &str) -> Option<Site> {
    Some(match s {
        "hook_embed" => Site::Embed,
        "hook_resid_pre" => Site::ResidPre,
        "hook_resid_mid" => Site::ResidMid,
        "hook_resid_mid_cross" => Site::ResidMidCross,
        "hook_resid_post" => Site::ResidPost,
        // TransformerLens calls the self-attention output `hook_attn_out`.
        "hook_self_attn_out" | "hook_attn_out" => Site::SelfAttnOut,
        "hook_cross_attn_out" => Site::CrossAttnOut,
        "mlp.hook_post" => Site::MlpPost,
        "hook_mlp_out" => Site::MlpOut,
        "ln_final.hook_normalized" => Site::FinalNorm,
        _ => {
            let (kind, rest) = s.split_once('.')?;
            let kind = match kind {
                "self_attn" | "attn" => AttnKind::SelfAttn,
                "cross_attn" => AttnKind::CrossAttn,
                _ => return None,
            };
            let site = AttnSite::ALL.into_iter().find(|a| a.name() == rest)?;
            Site::Attn(kind, site)
        }
    })
}

impl FromStr for HookPoint {
    type Err = ModelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || ModelError::UnknownHook {
            name: name.to_string(),
            suggestions: suggest(name, &HookPoint::all(4, 4)),
        };
        let (stack, rest) = name.split_once('.').ok_or_else(unknown)?;
        let stack = match stack {
            "encoder" => Stack::Encoder,
            "decoder" => Stack::Decoder,
            _ => return Err(unknown()),
        };
        let point = if let Some(rest) = rest.strip_prefix("blocks.") {
            let (layer, site) = rest.split_once('.').ok_or_else(unknown)?;
            let layer: usize = layer.parse().map_err(|_| unknown())?;
            let site = parse_site(site).ok_or_else(unknown)?;
            if matches!(site, Site::Embed | Site::FinalNorm) {
                return Err(unknown());
            }
            HookPoint::block(stack, layer, site)
        } else {
            let site = parse_site(rest).ok_or_else(unknown)?;
            if !matches!(site, Site::Embed | Site::FinalNorm) {
                return Err(unknown());
            }
            HookPoint {
                stack,
                layer: None,
                site,
            }
        };
        let cross = matches!(
            point.site,
            Site::ResidMidCross | Site::CrossAttnOut | Site::Attn(AttnKind::CrossAttn, _)
        );
        if cross && point.stack == Stack::Encoder {
            return Err(unknown());
        }
        Ok(point)
    }
}

/// The closest known names to `name` (edit distance), best first.
pub(crate) fn suggest(name: &str, known: &[HookPoint]) -> Vec<String> {
    let mut scored: Vec<(usize, String)> = known
        .iter()
        .map(|p| {
            let s = p.to_string();
            (edit_distance(name, &s), s)
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, s)| s).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Selects hook points by name pattern: comma-separated globs where `*` matches any run of characters
/// (`decoder.blocks.*.hook_resid_post,*.cross_attn.hook_pattern`), or everything.
#[derive(Clone, Debug, Default)]
pub struct HookFilter {
    patterns: Option<Vec<String>>,
}

impl HookFilter {
    /// Matches every hook point.
    pub fn all() -> Self {
        Self { patterns: None }
    }

    /// Matches names against comma-separated glob patterns.
    pub fn parse(patterns: &str) -> Self {
        let list = patterns
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(canonical_pattern)
            .collect();
        Self {
            patterns: Some(list),
        }
    }

    /// Matches exactly these points.
    pub fn points(points: &[HookPoint]) -> Self {
        Self {
            patterns: Some(points.iter().map(|p| p.to_string()).collect()),
        }
    }

    /// Whether the filter selects `point`.
    pub fn matches(&self, point: &HookPoint) -> bool {
        match &self.patterns {
            None => true,
            Some(ps) => {
                let name = point.to_string();
                ps.iter().any(|p| glob_match(p, &name))
            }
        }
    }

    /// Checks that every pattern matches at least one point of a model of this size.
    pub fn validate(&self, encoder_layers: usize, decoder_layers: usize) -> Result<(), ModelError> {
        self.validate_in(&HookPoint::all(encoder_layers, decoder_layers))
    }

    /// Checks that every pattern matches at least one of `known` (the points of a model).
    pub fn validate_in(&self, known: &[HookPoint]) -> Result<(), ModelError> {
        for p in self.patterns.iter().flatten() {
            if !known.iter().any(|h| glob_match(p, &h.to_string())) {
                return Err(ModelError::UnknownHook {
                    name: p.clone(),
                    suggestions: suggest(p, known),
                });
            }
        }
        Ok(())
    }
}

/// A pattern with TransformerLens's aliases that [`HookPoint::from_str`] accepts spelled as genir names them
/// (`hook_attn_out` -> `hook_self_attn_out`, `attn.hook_z` -> `self_attn.hook_z`), so that a glob over the
/// canonical names matches them too.
fn canonical_pattern(pattern: &str) -> String {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| match *part {
            "hook_attn_out" => "hook_self_attn_out",
            // an attention kind: followed by one of its sites
            "attn" if i + 1 < parts.len() => "self_attn",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with backtracking to the last star.
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while j < n.len() {
        if i < p.len() && p[i] != '*' && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for p in HookPoint::all(3, 2) {
            let s = p.to_string();
            let back: HookPoint = s.parse().unwrap();
            assert_eq!(back, p, "{s}");
        }
    }

    #[test]
    fn names_look_like_transformer_lens() {
        let p = HookPoint::attn(Stack::Decoder, 3, AttnKind::CrossAttn, AttnSite::Z);
        assert_eq!(p.to_string(), "decoder.blocks.3.cross_attn.hook_z");
        let p: HookPoint = "decoder.blocks.1.hook_attn_out".parse().unwrap();
        assert_eq!(p.site, Site::SelfAttnOut);
        // the aliases in filters and globs too
        let f = HookFilter::parse("decoder.blocks.*.hook_attn_out, decoder.blocks.1.attn.hook_z");
        f.validate(2, 2).unwrap();
        let mut picked: Vec<String> = HookPoint::all(2, 2)
            .into_iter()
            .filter(|p| f.matches(p))
            .map(|p| p.to_string())
            .collect();
        picked.sort();
        assert_eq!(
            picked,
            [
                "decoder.blocks.0.hook_self_attn_out",
                "decoder.blocks.1.hook_self_attn_out",
                "decoder.blocks.1.self_attn.hook_z"
            ]
        );
        assert_eq!(
            HookPoint::final_norm(Stack::Encoder).to_string(),
            "encoder.ln_final.hook_normalized"
        );
    }

    #[test]
    fn unknown_names_suggest_near_matches() {
        let err = "decoder.blocks.1.hook_resid_pst"
            .parse::<HookPoint>()
            .unwrap_err();
        match err {
            ModelError::UnknownHook { suggestions, .. } => {
                assert_eq!(suggestions[0], "decoder.blocks.1.hook_resid_post")
            }
            e => panic!("{e}"),
        }
        assert!("encoder.blocks.0.cross_attn.hook_z"
            .parse::<HookPoint>()
            .is_err());
        assert!("encoder.hook_resid_pre".parse::<HookPoint>().is_err());
        let p: HookPoint = "decoder.blocks.9.hook_mlp_out".parse().unwrap();
        assert!(p.validate(2, 2).is_err());
    }

    #[test]
    fn encoder_only_models_have_no_decoder_or_final_norm() {
        let known = HookPoint::encoder_only(2);
        assert_eq!(
            known.len(),
            1 + 2 * HookPoint::block_points(Stack::Encoder, 0).len()
        );
        let ok: HookPoint = "encoder.blocks.1.attn.hook_z".parse().unwrap();
        assert!(ok.validate_in(&known).is_ok());
        for bad in [
            "encoder.ln_final.hook_normalized",
            "decoder.hook_embed",
            "encoder.blocks.2.hook_resid_post",
        ] {
            let p: HookPoint = bad.parse().unwrap();
            assert!(p.validate_in(&known).is_err(), "{bad}");
        }
        assert!(HookFilter::parse("decoder.*").validate_in(&known).is_err());
        assert!(HookFilter::parse("encoder.*").validate_in(&known).is_ok());
    }

    #[test]
    fn filters_glob() {
        let f = HookFilter::parse("decoder.blocks.*.hook_resid_post, *.cross_attn.hook_pattern");
        let n = HookPoint::all(2, 2).iter().filter(|p| f.matches(p)).count();
        assert_eq!(n, 4);
        assert!(HookFilter::parse("decoder.nothing*")
            .validate(2, 2)
            .is_err());
    }
}
