//! Lining a document up with its perturbed version, token by token, as MechIR's collators do.
//!
//! MechIR tokenizes both documents (no special tokens), pads one of them with a filler token (`"a"` by
//! default) according to the perturbation's type, turns the token lists back into text with the tokenizer's
//! decoder (`convert_tokens_to_string`), and tokenizes that text again for the model. [`align_texts`] does
//! the same, so the same positions of the original and the perturbed input hold corresponding tokens.

use genir_model::tokenizer::TextTokenizer;
use serde::{Deserialize, Serialize};
use tokenizers::Decoder;

use crate::error::{MechirError, Result};

/// How the original document is padded to the perturbed one (MechIR's `perturb_type`, plus the general
/// insertion alignment of MechIR's `pad` function).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alignment {
    /// Tokens were appended: the original gets filler tokens at its end (`append`).
    Append,
    /// Tokens were prepended: the original gets filler tokens at its start (`prepend`).
    Prepend,
    /// Terms were replaced: where the two differ, the shorter side gets filler tokens after the replaced term
    /// (`replace`). Tokens left over at the end of the longer side (where MechIR drops them, so that both
    /// inputs lose them) are kept, facing filler.
    Replace,
    /// Tokens were deleted (genir's own; MechIR has no deletion): greedy alignment, filler in the perturbed
    /// document wherever the original has a token the perturbed one does not.
    Delete,
    /// Tokens were inserted anywhere: greedy alignment, filler in the original wherever the perturbed document
    /// has a token the original does not (MechIR's `pad(a, b, tok)`).
    Insert,
    /// No padding (`inject`): the two must already have the same number of tokens.
    None,
}

impl Alignment {
    /// MechIR's name of this alignment.
    pub fn name(self) -> &'static str {
        match self {
            Alignment::Append => "append",
            Alignment::Prepend => "prepend",
            Alignment::Replace => "replace",
            Alignment::Delete => "delete",
            Alignment::Insert => "insert",
            Alignment::None => "inject",
        }
    }
}

/// Pads token lists `a` (original) and `b` (perturbed) to a common length with `filler`, as MechIR's
/// `pad_by_perturb_type` (and `pad` for [`Alignment::Insert`]). Lengths may still differ where the
/// alignment cannot make them agree (MechIR asserts there; the caller decides).
pub fn align_tokens(
    a: &[String],
    b: &[String],
    alignment: Alignment,
    filler: &str,
) -> (Vec<String>, Vec<String>) {
    let fill = |n: usize| vec![filler.to_string(); n];
    match alignment {
        Alignment::Append if a.len() < b.len() => {
            let mut a = a.to_vec();
            a.extend(fill(b.len() - a.len()));
            (a, b.to_vec())
        }
        Alignment::Prepend if a.len() < b.len() => {
            let mut out = fill(b.len() - a.len());
            out.extend_from_slice(a);
            (out, b.to_vec())
        }
        Alignment::Replace if a.len() != b.len() => {
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                if a[i] == b[j] {
                    pa.push(a[i].clone());
                    pb.push(b[j].clone());
                    i += 1;
                    j += 1;
                } else {
                    pa.push(a[i].clone());
                    pb.push(b[j].clone());
                    i += 1;
                    j += 1;
                    if a.len() < b.len() {
                        while j < b.len() && (i >= a.len() || b[j] != a[i]) {
                            pa.push(filler.to_string());
                            pb.push(b[j].clone());
                            j += 1;
                        }
                    }
                    if a.len() > b.len() {
                        while i < a.len() && (j >= b.len() || b[j] != a[i]) {
                            pa.push(a[i].clone());
                            pb.push(filler.to_string());
                            i += 1;
                        }
                    }
                }
            }
            // what is left of one side (the other is used up) faces filler
            for t in &a[i..] {
                pa.push(t.clone());
                pb.push(filler.to_string());
            }
            for t in &b[j..] {
                pa.push(filler.to_string());
                pb.push(t.clone());
            }
            (pa, pb)
        }
        Alignment::Delete => {
            let mut out = Vec::with_capacity(a.len().max(b.len()));
            let mut j = 0;
            for t in a {
                if j < b.len() && *t == b[j] {
                    out.push(b[j].clone());
                    j += 1;
                } else {
                    out.push(filler.to_string());
                }
            }
            // not a deletion after all: the perturbed document's remaining tokens face filler
            let mut a = a.to_vec();
            for t in &b[j..] {
                a.push(filler.to_string());
                out.push(t.clone());
            }
            (a, out)
        }
        Alignment::Insert => {
            let mut out = Vec::with_capacity(b.len());
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                if a[i] == b[j] {
                    out.push(a[i].clone());
                    i += 1;
                } else {
                    out.push(filler.to_string());
                }
                j += 1;
            }
            out.extend(fill(b.len() - j));
            (out, b.to_vec())
        }
        _ => (a.to_vec(), b.to_vec()),
    }
}

/// The tokens of `text` without special tokens, whole (Hugging Face's `tokenizer.tokenize`, which neither
/// truncates nor pads: a model folder's tokenizer usually truncates at its maximum length, which would cut a
/// long document before it is aligned).
pub fn tokenize(tok: &TextTokenizer, text: &str) -> Result<Vec<String>> {
    let inner = tok.inner();
    let encode = |t: &tokenizers::Tokenizer| {
        t.encode(text, false)
            .map(|e| e.get_tokens().to_vec())
            .map_err(|e| MechirError::Input(format!("cannot tokenize {text:?}: {e}")))
    };
    if inner.get_truncation().is_none() && inner.get_padding().is_none() {
        encode(inner)
    } else {
        encode(&untruncated(tok)?)
    }
}

/// `tok` without truncation or padding.
fn untruncated(tok: &TextTokenizer) -> Result<tokenizers::Tokenizer> {
    let mut t = tok.inner().clone();
    t.with_truncation(None)
        .map_err(|e| MechirError::Input(format!("tokenizer: {e}")))?;
    t.with_padding(None);
    Ok(t)
}

/// Tokens back to text with the tokenizer's decoder (Hugging Face's `convert_tokens_to_string`); tokens joined
/// by spaces when the tokenizer has no decoder.
pub fn tokens_to_string(tok: &TextTokenizer, tokens: Vec<String>) -> Result<String> {
    match tok.inner().get_decoder() {
        Some(d) => d
            .decode(tokens)
            .map_err(|e| MechirError::Input(format!("cannot decode tokens: {e}"))),
        None => Ok(tokens.join(" ")),
    }
}

/// The original and perturbed document texts after MechIR's padding: tokenized whole ([`tokenize`]: the
/// documents are cut to length only after they are aligned, as MechIR does), aligned with `filler`, and
/// turned back into text.
pub fn align_texts(
    tok: &TextTokenizer,
    original: &str,
    perturbed: &str,
    alignment: Alignment,
    filler: &str,
) -> Result<(String, String)> {
    let a = tokenize(tok, original)?;
    let b = tokenize(tok, perturbed)?;
    let (a, b) = align_tokens(&a, &b, alignment, filler);
    Ok((tokens_to_string(tok, a)?, tokens_to_string(tok, b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn append_and_prepend_pad_the_original() {
        let (a, b) = align_tokens(&t("x y"), &t("x y z w"), Alignment::Append, "a");
        assert_eq!((a, b), (t("x y a a"), t("x y z w")));
        let (a, _) = align_tokens(&t("x y"), &t("z x y"), Alignment::Prepend, "a");
        assert_eq!(a, t("a x y"));
    }

    #[test]
    fn replace_pads_the_shorter_side() {
        // "q" replaced by "r s": the original gets a filler after "q".
        let (a, b) = align_tokens(&t("x q y"), &t("x r s y"), Alignment::Replace, "a");
        assert_eq!((a, b), (t("x q a y"), t("x r s y")));
        // "q r" replaced by "s" (or deleted): the perturbed side gets the filler.
        let (a, b) = align_tokens(&t("x q r y"), &t("x s y"), Alignment::Replace, "a");
        assert_eq!((a, b), (t("x q r y"), t("x s a y")));
    }

    #[test]
    fn replace_keeps_what_is_left_at_the_end() {
        // MechIR's loop stops when one side is used up and drops the rest of the other ("mat", "z").
        let (a, b) = align_tokens(&t("the cat mat"), &t("the cat"), Alignment::Replace, "a");
        assert_eq!((a, b), (t("the cat mat"), t("the cat a")));
        let (a, b) = align_tokens(&t("x y"), &t("x y z"), Alignment::Replace, "a");
        assert_eq!((a, b), (t("x y a"), t("x y z")));
        // within the text, as before
        let (a, b) = align_tokens(&t("x q"), &t("x r s t"), Alignment::Replace, "a");
        assert_eq!((a, b), (t("x q a a"), t("x r s t")));
    }

    #[test]
    fn delete_pads_the_perturbed_side_where_tokens_went() {
        for (orig, pert, want) in [
            (
                "the cat sat on the mat",
                "the cat sat on the",
                "the cat sat on the a",
            ),
            ("x q y z", "x y z", "x a y z"),
            ("q x y", "x y", "a x y"),
            ("x q q", "x", "x a a"),
            ("q x q y q", "x y", "a x a y a"),
            ("x y", "x y", "x y"),
        ] {
            let (a, b) = align_tokens(&t(orig), &t(pert), Alignment::Delete, "a");
            assert_eq!((a, b), (t(orig), t(want)), "{orig:?} -> {pert:?}");
        }
    }

    #[test]
    fn insert_aligns_greedily() {
        let (a, b) = align_tokens(&t("x y z"), &t("x n y z"), Alignment::Insert, "a");
        assert_eq!((a, b), (t("x a y z"), t("x n y z")));
    }
}
