//! Document identifier schemes: how a document's id is written as decoder tokens.
//!
//! Every scheme owns a contiguous block of `n_tokens` new vocabulary rows starting at `token_offset` (the
//! size of the text vocabulary), so the model's vocabulary is `text tokens ++ docid tokens` and analyses can
//! tell docid tokens from text tokens by id alone.
//!
//! - [`DocidKind::Atomic`]: one token per document (DSI's atomic docids); the decoder emits one token.
//! - [`DocidKind::Naive`]: the docid string, one token per character (DSI's naive string docids), then
//!   `</s>`.
//! - [`DocidKind::Semantic`]: the path of the document in a hierarchical k-means tree over document
//!   embeddings (DSI's semantically structured ids), then `</s>`.
//! - [`DocidKind::Tokenized`]: the docid string as the model's own tokenizer splits it, then `</s>` (a
//!   checkpoint of Python DSI code, imported: each text token a docid string uses is copied to a docid row).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Which docid scheme a model uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DocidKind {
    /// One new token per document.
    Atomic,
    /// One token per character of the docid string, then `</s>`.
    Naive,
    /// The docid string in the tokens of the model's own text vocabulary, then `</s>` (naive docids of Python
    /// DSI code; made only by [`GenirModel::import_text`](crate::bundle::GenirModel::import_text), which
    /// copies each such text token's rows to a docid row).
    Tokenized,
    /// Hierarchical k-means path: `branching` clusters per level, leaves of at most `leaf_size` documents.
    Semantic {
        /// Clusters per level (DSI: 10).
        branching: usize,
        /// Largest leaf (DSI: 100).
        leaf_size: usize,
    },
}

impl std::str::FromStr for DocidKind {
    type Err = TrainError;
    /// `atomic`, `naive`, `semantic` (10 x 100) or `semantic:K:C`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["atomic"] => Ok(Self::Atomic),
            ["naive"] => Ok(Self::Naive),
            ["semantic"] => Ok(Self::Semantic {
                branching: 10,
                leaf_size: 100,
            }),
            ["semantic", k, c] => {
                let parse = |v: &str, what: &str| -> Result<usize> {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (2..=MAX_SEMANTIC_WIDTH).contains(n))
                        .ok_or_else(|| {
                            TrainError::Config(format!(
                                "docid scheme {s:?}: {what} must be an integer from 2 to {MAX_SEMANTIC_WIDTH}"
                            ))
                        })
                };
                Ok(Self::Semantic {
                    branching: parse(k, "branching")?,
                    leaf_size: parse(c, "leaf size")?,
                })
            }
            _ => Err(TrainError::Config(format!(
                "unknown docid scheme {s:?}: expected atomic, naive, semantic or semantic:K:C"
            ))),
        }
    }
}

impl std::fmt::Display for DocidKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Atomic => write!(f, "atomic"),
            Self::Naive => write!(f, "naive"),
            Self::Tokenized => write!(f, "tokenized"),
            Self::Semantic {
                branching,
                leaf_size,
            } => write!(f, "semantic:{branching}:{leaf_size}"),
        }
    }
}

/// A docid scheme over a fixed list of documents; saved as `docids.json` beside the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DocidScheme {
    /// The scheme.
    pub kind: DocidKind,
    /// External document ids; a document's index in this list is its *doc index*.
    pub docids: Vec<String>,
    /// Per document: its code, as local docid-token indices `0..n_tokens`.
    pub codes: Vec<Vec<u32>>,
    /// Names of the local docid tokens (added to the tokenizer as special tokens).
    pub token_names: Vec<String>,
    /// Model id of local docid token 0 (the text vocabulary's size).
    pub token_offset: u32,
    /// End-of-sequence id that closes multi-token docids (T5: 1).
    pub eos: u32,
    /// [`DocidKind::Tokenized`] schemes only: the text token each docid token copies. Their scores are
    /// normalised over the original rows `0..token_offset`, read at these tokens, which is exactly the
    /// original model's log-probability. Not written to `docids.json` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<u32>,
    /// Documents deleted from the index (by `genir-edit`): they keep their doc index and docid tokens, but
    /// [`Searcher`](crate::search::Searcher) never returns them (they are left out of its trie). Not written
    /// to `docids.json` when empty.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub deleted: BTreeSet<String>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl DocidScheme {
    /// Builds a scheme for `docids` (in corpus order). Semantic ids need one embedding per document.
    pub fn build(
        kind: DocidKind,
        docids: Vec<String>,
        embeddings: Option<&[Vec<f32>]>,
        token_offset: u32,
        eos: u32,
        seed: u64,
    ) -> Result<Self> {
        if docids.is_empty() {
            return Err(TrainError::Config(
                "cannot build docids for an empty corpus".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        if let Some(d) = docids.iter().find(|d| !seen.insert(d.as_str())) {
            return Err(TrainError::Config(format!(
                "duplicate docid {d:?} in the corpus"
            )));
        }
        let (codes, token_names) = match &kind {
            DocidKind::Atomic => (
                (0..docids.len() as u32).map(|i| vec![i]).collect(),
                (0..docids.len()).map(|i| format!("<docid_{i}>")).collect(),
            ),
            DocidKind::Naive => {
                let chars: BTreeSet<char> = docids.iter().flat_map(|d| d.chars()).collect();
                if docids.iter().any(String::is_empty) {
                    return Err(TrainError::Config(
                        "naive docids need non-empty docid strings".into(),
                    ));
                }
                let pos: BTreeMap<char, u32> = chars
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (c, i as u32))
                    .collect();
                let codes = docids
                    .iter()
                    .map(|d| d.chars().map(|c| pos[&c]).collect())
                    .collect();
                (
                    codes,
                    chars.iter().map(|c| format!("<docid_char_{c}>")).collect(),
                )
            }
            DocidKind::Tokenized => {
                return Err(TrainError::Config(
                    "tokenized docids come from a checkpoint of other code (genir import --docids text), not from training".into(),
                ))
            }
            DocidKind::Semantic {
                branching,
                leaf_size,
            } => {
                let emb = embeddings.ok_or_else(|| {
                    TrainError::Config("semantic docids need document embeddings".into())
                })?;
                if emb.len() != docids.len() {
                    return Err(TrainError::Config(format!(
                        "{} embeddings for {} documents",
                        emb.len(),
                        docids.len()
                    )));
                }
                let codes = hierarchical_kmeans(emb, *branching, *leaf_size, seed)?;
                let n = (*branching).max(*leaf_size);
                (codes, (0..n).map(|i| format!("<docid_sem_{i}>")).collect())
            }
        };
        Self::from_parts(
            kind,
            docids,
            codes,
            (token_names, Vec::new()),
            token_offset,
            eos,
        )
    }

    /// A scheme of these parts, checked: document `i` is `docids[i]` with code `codes[i]` over the docid
    /// tokens `token_offset + j`, named `token_names[j]` (for [`DocidKind::Tokenized`], each a copy of text
    /// token `sources[j]`; otherwise `sources` is empty).
    pub fn from_parts(
        kind: DocidKind,
        docids: Vec<String>,
        codes: Vec<Vec<u32>>,
        (token_names, sources): (Vec<String>, Vec<u32>),
        token_offset: u32,
        eos: u32,
    ) -> Result<Self> {
        if docids.is_empty() {
            return Err(TrainError::Config("a docid scheme needs documents".into()));
        }
        let mut scheme = Self {
            kind,
            docids,
            codes,
            token_names,
            token_offset,
            eos,
            sources,
            deleted: BTreeSet::new(),
            index: HashMap::new(),
        };
        scheme.reindex()?;
        Ok(scheme)
    }

    /// An atomic scheme over rows a model already has: document `i` is `docids[i]`, its token is
    /// `token_offset + i`, named `token_names[i]` (a checkpoint trained by other code, see
    /// [`GenirModel::import_atomic`](crate::bundle::GenirModel::import_atomic)).
    pub fn atomic_over_tokens(
        docids: Vec<String>,
        token_names: Vec<String>,
        token_offset: u32,
        eos: u32,
    ) -> Result<Self> {
        if docids.is_empty() || docids.len() != token_names.len() {
            return Err(TrainError::Config(format!(
                "an atomic scheme needs one token per docid ({} docids, {} tokens)",
                docids.len(),
                token_names.len()
            )));
        }
        let codes = (0..docids.len() as u32).map(|i| vec![i]).collect();
        Self::from_parts(
            DocidKind::Atomic,
            docids,
            codes,
            (token_names, Vec::new()),
            token_offset,
            eos,
        )
    }

    fn reindex(&mut self) -> Result<()> {
        self.index = self
            .docids
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i))
            .collect();
        if self.index.len() != self.docids.len() {
            let mut seen = BTreeSet::new();
            let dup = self.docids.iter().find(|d| !seen.insert(d.as_str()));
            return Err(TrainError::Config(format!(
                "duplicate docid {:?} in the scheme",
                dup.map(String::as_str).unwrap_or_default()
            )));
        }
        if let Some(d) = self.deleted.iter().find(|d| !self.index.contains_key(*d)) {
            return Err(TrainError::Config(format!(
                "deleted docid {d:?} is not in the scheme"
            )));
        }
        if self.codes.len() != self.docids.len() {
            return Err(TrainError::Config(format!(
                "{} codes for {} docids",
                self.codes.len(),
                self.docids.len()
            )));
        }
        let n = self.token_names.len() as u32;
        let mut seen = BTreeSet::new();
        for (i, c) in self.codes.iter().enumerate() {
            if c.is_empty() || c.iter().any(|&t| t >= n) {
                return Err(TrainError::Config(format!(
                    "docid {:?}: code {c:?} is empty or uses a token outside 0..{n}",
                    self.docids[i]
                )));
            }
            if !seen.insert(c.clone()) {
                return Err(TrainError::Config(format!(
                    "docid {:?}: code {c:?} is shared with another document",
                    self.docids[i]
                )));
            }
        }
        let tokenized = self.kind == DocidKind::Tokenized;
        if tokenized == self.sources.is_empty()
            || (tokenized
                && (self.sources.len() != self.token_names.len()
                    || self.sources.iter().any(|&t| t >= self.token_offset)))
        {
            return Err(TrainError::Config(format!(
                "{} docids with {} source tokens for {} docid tokens: tokenized schemes (only) name one text token below {} per docid token",
                self.kind,
                self.sources.len(),
                self.token_names.len(),
                self.token_offset
            )));
        }
        if self.is_atomic() && self.codes.iter().any(|c| c.len() != 1) {
            return Err(TrainError::Config(
                "atomic docids must be one token each".into(),
            ));
        }
        Ok(())
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docids.len()
    }

    /// Whether the scheme has no documents.
    pub fn is_empty(&self) -> bool {
        self.docids.is_empty()
    }

    /// Number of docid tokens (vocabulary rows the scheme adds).
    pub fn n_tokens(&self) -> usize {
        self.token_names.len()
    }

    /// Whether docids are single tokens.
    pub fn is_atomic(&self) -> bool {
        self.kind == DocidKind::Atomic
    }

    /// Model vocabulary size: text vocabulary plus docid tokens.
    pub fn vocab_size(&self) -> usize {
        self.token_offset as usize + self.n_tokens()
    }

    /// The doc index of an external docid.
    pub fn index_of(&self, docid: &str) -> Option<usize> {
        self.index.get(docid).copied()
    }

    /// The doc index of an external docid, or a clear error naming where it came from.
    pub fn require(&self, docid: &str, context: &str) -> Result<usize> {
        self.index_of(docid)
            .ok_or_else(|| TrainError::UnknownDocid {
                docid: docid.to_string(),
                context: context.to_string(),
            })
    }

    /// Whether a document has been deleted from the index (see [`DocidScheme::deleted`]).
    pub fn is_deleted(&self, doc: usize) -> bool {
        !self.deleted.is_empty()
            && self
                .docids
                .get(doc)
                .is_some_and(|d| self.deleted.contains(d))
    }

    /// Whether a model id is a docid token.
    pub fn is_docid_token(&self, id: u32) -> bool {
        id >= self.token_offset && ((id - self.token_offset) as usize) < self.n_tokens()
    }

    /// Decoder target of a document: model token ids (atomic: one id; otherwise the code then `</s>`).
    pub fn target(&self, doc: usize) -> Vec<u32> {
        let mut t: Vec<u32> = self.codes[doc]
            .iter()
            .map(|&c| c + self.token_offset)
            .collect();
        if !self.is_atomic() {
            t.push(self.eos);
        }
        t
    }

    /// Longest decoder target.
    pub fn max_target_len(&self) -> usize {
        (0..self.len())
            .map(|d| self.target(d).len())
            .max()
            .unwrap_or(1)
    }

    /// A prefix trie over the targets of the documents for which `allowed` is true.
    pub fn trie(&self, allowed: impl Fn(usize) -> bool) -> Trie {
        let mut trie = Trie::default();
        for d in (0..self.len()).filter(|&d| allowed(d)) {
            trie.insert(&self.target(d), d);
        }
        trie
    }

    /// Writes `docids.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).map_err(|e| TrainError::Json {
            path: path.into(),
            message: e.to_string(),
        })?;
        genir_io::write_atomic(path, &text)?;
        Ok(())
    }

    /// Reads and checks a `docids.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(TrainError::io(path))?;
        let mut s: Self = serde_json::from_slice(&text).map_err(|e| TrainError::Json {
            path: path.into(),
            message: format!("not a docid scheme: {e}"),
        })?;
        s.reindex().map_err(|e| TrainError::Json {
            path: path.into(),
            message: e.to_string(),
        })?;
        Ok(s)
    }
}

/// A prefix tree over docid token sequences: which tokens may follow a prefix, and which document a
/// complete sequence names.
#[derive(Clone, Debug, Default)]
pub struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    children: BTreeMap<u32, usize>,
    doc: Option<usize>,
}

impl Trie {
    fn node_mut(&mut self, i: usize) -> &mut TrieNode {
        &mut self.nodes[i]
    }

    /// Adds one document's token sequence.
    pub fn insert(&mut self, seq: &[u32], doc: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut at = 0;
        for &t in seq {
            let next = match self.nodes[at].children.get(&t) {
                Some(&n) => n,
                None => {
                    self.nodes.push(TrieNode::default());
                    let n = self.nodes.len() - 1;
                    self.node_mut(at).children.insert(t, n);
                    n
                }
            };
            at = next;
        }
        self.node_mut(at).doc = Some(doc);
    }

    /// The root node (`None` for an empty trie).
    pub fn root(&self) -> Option<usize> {
        (!self.nodes.is_empty()).then_some(0)
    }

    /// Allowed next tokens after a node, with the node each leads to.
    pub fn children(&self, node: usize) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.nodes[node].children.iter().map(|(&t, &n)| (t, n))
    }

    /// The document a node completes, if it is a leaf.
    pub fn doc(&self, node: usize) -> Option<usize> {
        self.nodes[node].doc
    }

    /// The document named by a complete sequence.
    pub fn lookup(&self, seq: &[u32]) -> Option<usize> {
        let mut at = self.root()?;
        for t in seq {
            at = *self.nodes[at].children.get(t)?;
        }
        self.nodes[at].doc
    }
}

/// Largest branching factor or leaf size of semantic docids: each is a block of new output rows.
pub const MAX_SEMANTIC_WIDTH: usize = 65_536;

/// Hierarchical k-means (DSI's semantic ids): documents are split into `k` clusters recursively until a
/// cluster holds at most `leaf_size` documents, which are then numbered. Returns one code per document.
pub fn hierarchical_kmeans(
    emb: &[Vec<f32>],
    k: usize,
    leaf_size: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    if k < 2 || leaf_size < 1 || k > MAX_SEMANTIC_WIDTH || leaf_size > MAX_SEMANTIC_WIDTH {
        return Err(TrainError::Config(format!(
            "semantic ids need branching from 2 to {MAX_SEMANTIC_WIDTH} and leaf size from 1 to \
             {MAX_SEMANTIC_WIDTH}"
        )));
    }
    let dim = emb.first().map_or(0, Vec::len);
    if dim == 0 || emb.iter().any(|e| e.len() != dim) {
        return Err(TrainError::Config(
            "embeddings must be non-empty and of one dimension".into(),
        ));
    }
    let mut codes = vec![Vec::new(); emb.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all: Vec<usize> = (0..emb.len()).collect();
    split(
        emb,
        &all,
        k,
        leaf_size,
        &mut rng,
        &mut Vec::new(),
        &mut codes,
    );
    Ok(codes)
}

fn split(
    emb: &[Vec<f32>],
    ids: &[usize],
    k: usize,
    leaf: usize,
    rng: &mut ChaCha8Rng,
    prefix: &mut Vec<u32>,
    out: &mut [Vec<u32>],
) {
    if ids.len() <= leaf {
        for (j, &id) in ids.iter().enumerate() {
            let mut c = prefix.clone();
            c.push(j as u32);
            out[id] = c;
        }
        return;
    }
    let mut assign = kmeans(emb, ids, k, rng);
    // Identical embeddings (or a degenerate split) must still make progress: split by order.
    let distinct: BTreeSet<usize> = assign.iter().copied().collect();
    if distinct.len() < 2 {
        assign = (0..ids.len()).map(|i| i * k / ids.len()).collect();
    }
    for c in 0..k {
        let members: Vec<usize> = ids
            .iter()
            .zip(&assign)
            .filter(|(_, &a)| a == c)
            .map(|(&i, _)| i)
            .collect();
        if members.is_empty() {
            continue;
        }
        prefix.push(c as u32);
        split(emb, &members, k, leaf, rng, prefix, out);
        prefix.pop();
    }
}

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Lloyd's k-means with k-means++ seeding over `emb[ids]`; returns a cluster per id.
fn kmeans(emb: &[Vec<f32>], ids: &[usize], k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let k = k.min(ids.len());
    let dim = emb[ids[0]].len();
    let mut centers: Vec<Vec<f32>> = vec![emb[ids[rng.random_range(0..ids.len())]].clone()];
    let mut d2: Vec<f32> = ids.iter().map(|&i| dist2(&emb[i], &centers[0])).collect();
    while centers.len() < k {
        let total: f64 = d2.iter().map(|&v| f64::from(v)).sum();
        let pick = if total <= 0.0 {
            rng.random_range(0..ids.len())
        } else {
            let mut r = rng.random::<f64>() * total;
            let mut p = ids.len() - 1;
            for (j, &v) in d2.iter().enumerate() {
                r -= f64::from(v);
                if r <= 0.0 {
                    p = j;
                    break;
                }
            }
            p
        };
        let c = emb[ids[pick]].clone();
        for (j, &i) in ids.iter().enumerate() {
            d2[j] = d2[j].min(dist2(&emb[i], &c));
        }
        centers.push(c);
    }
    let mut assign = vec![0usize; ids.len()];
    for _ in 0..30 {
        let mut changed = false;
        for (j, &i) in ids.iter().enumerate() {
            let best = (0..centers.len())
                .min_by(|&a, &b| {
                    dist2(&emb[i], &centers[a]).total_cmp(&dist2(&emb[i], &centers[b]))
                })
                .unwrap_or(0);
            if best != assign[j] {
                assign[j] = best;
                changed = true;
            }
        }
        let mut sums = vec![vec![0f32; dim]; centers.len()];
        let mut counts = vec![0usize; centers.len()];
        for (j, &i) in ids.iter().enumerate() {
            counts[assign[j]] += 1;
            for (s, v) in sums[assign[j]].iter_mut().zip(&emb[i]) {
                *s += v;
            }
        }
        for (c, (s, &n)) in sums.into_iter().zip(&counts).enumerate() {
            if n > 0 {
                centers[c] = s.into_iter().map(|v| v / n as f32).collect();
            }
        }
        if !changed {
            break;
        }
    }
    assign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn atomic_targets_are_one_token_after_the_text_vocabulary() {
        let s = DocidScheme::build(DocidKind::Atomic, ids(5), None, 100, 1, 0).unwrap();
        assert_eq!(s.target(3), vec![103]);
        assert_eq!(s.vocab_size(), 105);
        assert!(s.is_docid_token(104) && !s.is_docid_token(105) && !s.is_docid_token(99));
    }

    #[test]
    fn naive_targets_spell_the_docid_then_eos() {
        let s = DocidScheme::build(
            DocidKind::Naive,
            vec!["12".into(), "3".into(), "31".into()],
            None,
            50,
            1,
            0,
        )
        .unwrap();
        // characters 1, 2, 3 -> local 0, 1, 2
        assert_eq!(s.target(0), vec![50, 51, 1]);
        assert_eq!(s.target(1), vec![52, 1]);
        let trie = s.trie(|_| true);
        assert_eq!(trie.lookup(&[52, 50, 1]), Some(2));
        assert_eq!(trie.lookup(&[52, 50]), None);
    }

    #[test]
    fn semantic_codes_are_unique_and_respect_the_leaf_size() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let emb: Vec<Vec<f32>> = (0..300)
            .map(|i| {
                let c = (i % 3) as f32 * 10.0;
                (0..8).map(|_| c + rng.random::<f32>()).collect()
            })
            .collect();
        let s = DocidScheme::build(
            DocidKind::Semantic {
                branching: 3,
                leaf_size: 20,
            },
            ids(300),
            Some(&emb),
            10,
            1,
            7,
        )
        .unwrap();
        // the first level separates the three well-separated groups
        let first: BTreeSet<(usize, u32)> = (0..300).map(|i| (i % 3, s.codes[i][0])).collect();
        assert_eq!(first.len(), 3);
        assert!(s.codes.iter().all(|c| *c.last().unwrap() < 20));
        let again = DocidScheme::build(
            DocidKind::Semantic {
                branching: 3,
                leaf_size: 20,
            },
            ids(300),
            Some(&emb),
            10,
            1,
            7,
        )
        .unwrap();
        assert_eq!(s.codes, again.codes, "deterministic for a seed");
    }

    #[test]
    fn identical_embeddings_still_get_unique_codes() {
        let emb = vec![vec![1.0f32, 2.0]; 50];
        let s = DocidScheme::build(
            DocidKind::Semantic {
                branching: 4,
                leaf_size: 5,
            },
            ids(50),
            Some(&emb),
            0,
            1,
            0,
        )
        .unwrap();
        assert_eq!(s.len(), 50);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(DocidScheme::build(
            DocidKind::Atomic,
            vec!["a".into(), "a".into()],
            None,
            0,
            1,
            0
        )
        .is_err());
        assert!(DocidScheme::build(
            DocidKind::Semantic {
                branching: 2,
                leaf_size: 2
            },
            ids(3),
            None,
            0,
            1,
            0
        )
        .is_err());
        assert!("semantic:1:5".parse::<DocidKind>().is_err());
        // sizes that would allocate without bound are refused, not attempted
        let e = "semantic:2:18446744073709551615"
            .parse::<DocidKind>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaf size") && e.contains("65536"), "{e}");
        assert!("semantic:65536:65536".parse::<DocidKind>().is_ok());
        assert!("bogus".parse::<DocidKind>().is_err());
        assert_eq!(
            "semantic:8:50".parse::<DocidKind>().unwrap().to_string(),
            "semantic:8:50"
        );
    }

    #[test]
    fn save_load_round_trip_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("docids.json");
        let s = DocidScheme::build(DocidKind::Naive, ids(12), None, 30, 1, 0).unwrap();
        s.save(&p).unwrap();
        let l = DocidScheme::load(&p).unwrap();
        assert_eq!(l.codes, s.codes);
        assert_eq!(l.index_of("11"), Some(11));
        std::fs::write(&p, b"{\"kind\":").unwrap();
        let e = DocidScheme::load(&p).unwrap_err().to_string();
        assert!(e.contains("docids.json"), "{e}");
    }
}
