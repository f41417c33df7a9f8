//! Tokenizers for models trained from scratch: a WordPiece vocabulary learned from the corpus, with T5's
//! special tokens (`<pad>` = 0, `</s>` = 1, `<unk>` = 2) and the docid tokens appended as special tokens, so
//! the saved `tokenizer.json` decodes docids too (in genir and in Hugging Face).

use std::path::Path;

use std::collections::{BTreeMap, BTreeSet};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    Tokenizer, TokenizerBuilder,
};

use crate::docid::DocidScheme;
use crate::error::{Result, TrainError};

/// T5's padding id (also the decoder start id).
pub const PAD: u32 = 0;
/// T5's end-of-sequence id.
pub const EOS: u32 = 1;
/// The unknown-token id of tokenizers trained here.
pub const UNK: u32 = 2;

/// Learns a lower-cased WordPiece vocabulary of at most `vocab_size` tokens from `texts`; every encoding
/// ends with `</s>`, as T5's do.
///
/// Words come from the `tokenizers` crate's BERT normaliser and pre-tokeniser, and the tokenizer is a
/// `tokenizers` WordPiece model; the vocabulary itself is learned here by BPE-style merges (most frequent
/// adjacent pair first, ties broken by the merged string), because the `tokenizers` trainer numbers and
/// breaks ties between tokens in hash-map order, which differs from run to run. The same texts always give
/// the same tokenizer.
pub fn train_wordpiece(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    if vocab_size < 100 {
        return Err(TrainError::Config(format!(
            "text vocabulary of {vocab_size} is too small (at least 100)"
        )));
    }
    let normalizer = BertNormalizer::new(true, true, None, true);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for t in texts {
        let mut pts = PreTokenizedString::from(t.as_str());
        pts.normalize(|s| normalizer.normalize(s))
            .and_then(|()| BertPreTokenizer.pre_tokenize(&mut pts))
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        for (w, _, _) in pts.get_splits(OffsetReferential::Normalized, OffsetType::Byte) {
            *counts.entry(w.to_string()).or_default() += 1;
        }
    }
    let learned = learn_merges(&counts, vocab_size.saturating_sub(3), 2);
    let mut vocab: BTreeMap<String, u32> = [("<pad>", PAD), ("</s>", EOS), ("<unk>", UNK)]
        .into_iter()
        .map(|(t, i)| (t.to_string(), i))
        .collect();
    for sym in learned {
        let id = vocab.len() as u32;
        vocab.entry(sym).or_insert(id);
    }
    let spec = serde_json::json!({
        "type": "WordPiece",
        "unk_token": "<unk>",
        "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100,
        "vocab": vocab,
    });
    let model: WordPiece = serde_json::from_str(&spec.to_string())
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let post = TemplateProcessing::builder()
        .try_single("$A </s>")
        .and_then(|b| b.try_pair("$A </s> $B </s>"))
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?
        .special_tokens(vec![("</s>", EOS)])
        .build()
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let tok = TokenizerBuilder::new()
        .with_model(model)
        .with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(post))
        .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()))
        .build()
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let mut tok: Tokenizer = tok.into();
    tok.add_special_tokens(&["<pad>", "</s>", "<unk>"].map(|t| AddedToken::from(t, true)));
    for (id, name) in [(PAD, "<pad>"), (EOS, "</s>"), (UNK, "<unk>")] {
        if tok.token_to_id(name) != Some(id) {
            return Err(TrainError::Tokenizer(format!("{name} did not get id {id}")));
        }
    }
    Ok(tok)
}

/// BPE-style merges over word counts: symbols start as characters (`##`-prefixed inside a word); the most
/// frequent adjacent pair (ties: the smaller merged string) becomes a new symbol until `max_symbols` exist
/// or no pair occurs `min_count` times. Returns the symbols in creation order (characters sorted first).
fn learn_merges(counts: &BTreeMap<String, u64>, max_symbols: usize, min_count: u64) -> Vec<String> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    let sym = |i: usize, c: char| {
        if i == 0 {
            c.to_string()
        } else {
            format!("##{c}")
        }
    };
    let mut initial: BTreeSet<String> = BTreeSet::new();
    for w in counts.keys() {
        for (i, c) in w.chars().enumerate() {
            initial.insert(sym(i, c));
        }
    }
    let mut names: Vec<String> = initial.into_iter().collect();
    let mut ids: HashMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let mut words: Vec<(Vec<u32>, i64)> = counts
        .iter()
        .map(|(w, &n)| {
            let s = w
                .chars()
                .enumerate()
                .map(|(i, c)| ids[&sym(i, c)])
                .collect();
            (s, n as i64)
        })
        .collect();
    let mut pairs: HashMap<(u32, u32), i64> = HashMap::new();
    let mut where_: HashMap<(u32, u32), BTreeSet<usize>> = HashMap::new();
    for (wi, (s, n)) in words.iter().enumerate() {
        for p in s.windows(2) {
            *pairs.entry((p[0], p[1])).or_default() += n;
            where_.entry((p[0], p[1])).or_default().insert(wi);
        }
    }
    let merged = |names: &[String], (a, b): (u32, u32)| -> String {
        let right = &names[b as usize];
        format!(
            "{}{}",
            names[a as usize],
            right.strip_prefix("##").unwrap_or(right)
        )
    };
    let mut heap: BinaryHeap<(i64, Reverse<String>, (u32, u32))> = pairs
        .iter()
        .map(|(&p, &n)| (n, Reverse(merged(&names, p)), p))
        .collect();
    while names.len() < max_symbols {
        let Some((n, Reverse(new), pair)) = heap.pop() else {
            break;
        };
        if pairs.get(&pair).copied().unwrap_or(0) != n || n <= 0 {
            continue; // stale entry
        }
        if (n as u64) < min_count {
            break;
        }
        let id = match ids.get(&new) {
            Some(&id) => id,
            None => {
                names.push(new.clone());
                let id = (names.len() - 1) as u32;
                ids.insert(new, id);
                id
            }
        };
        let affected: Vec<usize> = where_
            .remove(&pair)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        let mut touched: BTreeSet<(u32, u32)> = BTreeSet::new();
        for wi in affected {
            let (old, cnt) = (words[wi].0.clone(), words[wi].1);
            for p in old.windows(2) {
                let k = (p[0], p[1]);
                *pairs.entry(k).or_default() -= cnt;
                if let Some(set) = where_.get_mut(&k) {
                    set.remove(&wi);
                }
                touched.insert(k);
            }
            let mut new_syms = Vec::with_capacity(old.len());
            let mut i = 0;
            while i < old.len() {
                if i + 1 < old.len() && (old[i], old[i + 1]) == pair {
                    new_syms.push(id);
                    i += 2;
                } else {
                    new_syms.push(old[i]);
                    i += 1;
                }
            }
            for p in new_syms.windows(2) {
                let k = (p[0], p[1]);
                *pairs.entry(k).or_default() += cnt;
                where_.entry(k).or_default().insert(wi);
                touched.insert(k);
            }
            words[wi].0 = new_syms;
        }
        pairs.remove(&pair);
        for k in touched {
            if let Some(&c) = pairs.get(&k) {
                if c > 0 && k != pair {
                    heap.push((c, Reverse(merged(&names, k)), k));
                }
            }
        }
    }
    names
}

/// Appends the scheme's docid tokens as special tokens; errors unless they land exactly at
/// `scheme.token_offset..`.
pub fn add_docid_tokens(tok: &mut Tokenizer, scheme: &DocidScheme) -> Result<()> {
    let before = tok.get_vocab_size(true);
    if before != scheme.token_offset as usize {
        return Err(TrainError::Tokenizer(format!(
            "docid tokens must start at id {} but the tokenizer has {before} tokens",
            scheme.token_offset
        )));
    }
    let added: Vec<AddedToken> = scheme
        .token_names
        .iter()
        .map(|n| AddedToken::from(n.as_str(), true))
        .collect();
    tok.add_special_tokens(&added);
    let first = scheme.token_names.first().and_then(|n| tok.token_to_id(n));
    if tok.get_vocab_size(true) != scheme.vocab_size() || first != Some(scheme.token_offset) {
        return Err(TrainError::Tokenizer(
            "docid token names collide with text tokens".into(),
        ));
    }
    Ok(())
}

/// Saves a tokenizer as `tokenizer.json` (atomic).
pub fn save_tokenizer(tok: &Tokenizer, path: &Path) -> Result<()> {
    let text = tok
        .to_string(false)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    genir_io::write_atomic(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docid::DocidKind;

    #[test]
    fn trained_vocabulary_has_t5_specials_and_docid_tokens() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("the anarchist movement number {i} met in amsterdam and paris"))
            .collect();
        let mut tok = train_wordpiece(&texts, 200).unwrap();
        let enc = tok.encode("the anarchist movement", true).unwrap();
        assert_eq!(*enc.get_ids().last().unwrap(), EOS);
        assert!(!enc.get_ids().contains(&UNK));
        let n = tok.get_vocab_size(true) as u32;
        let scheme = DocidScheme::build(
            DocidKind::Atomic,
            vec!["a".into(), "b".into()],
            None,
            n,
            EOS,
            0,
        )
        .unwrap();
        add_docid_tokens(&mut tok, &scheme).unwrap();
        assert_eq!(tok.token_to_id("<docid_1>"), Some(n + 1));
        assert_eq!(tok.decode(&[n + 1], false).unwrap(), "<docid_1>");
        // the same texts give the same vocabulary, with the same ids
        let a = train_wordpiece(&texts, 200).unwrap();
        for _ in 0..3 {
            let b = train_wordpiece(&texts, 200).unwrap();
            assert_eq!(a.get_vocab(true), b.get_vocab(true));
        }
        assert_eq!(a.get_vocab_size(true) as u32, n);
    }
}

#[cfg(test)]
mod corpus_tests {
    #[test]
    fn shipped_corpus_vocabulary_is_deterministic_and_compact() {
        let wiki = genir_data::shipped::load("wiki-genir-mini").unwrap();
        let texts: Vec<String> = wiki.corpus.iter().map(|d| d.full_text()).collect();
        let a = super::train_wordpiece(&texts, 2000).unwrap();
        let b = super::train_wordpiece(&texts, 2000).unwrap();
        assert_eq!(a.get_vocab(true), b.get_vocab(true));
        assert_eq!(a.get_vocab_size(true), 2000);
        let enc = a.encode(texts[0].as_str(), true).unwrap();
        let words = texts[0].split_whitespace().count();
        assert!(!enc.get_ids().contains(&super::UNK));
        assert!(
            enc.get_ids().len() < words * 2,
            "{} tokens for {words} words",
            enc.get_ids().len()
        );
    }
}
