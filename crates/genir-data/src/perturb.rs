//! Document perturbations for axiomatic and mechanistic analyses (MechIR style): functions
//! `(query, document, corpus statistics) -> document`.
//!
//! Terms come from [`tokenize`]: lowercase, split on every character that is not alphanumeric (Unicode), empty
//! pieces dropped. Corpus statistics ([`CorpusStats`]: document frequency and IDF over title + text) are
//! computed once per corpus and cached ([`Corpus::stats`]), then passed by reference to every perturbation.
//!
//! Perturbations change the document's `text` only (docid and title are kept). Edits that remove or replace
//! terms work on the alphanumeric runs of the text, so surrounding punctuation survives. Seeded perturbations
//! derive their generator from the seed and the docid, so every document gets its own, reproducible, draw.
//!
//! ```
//! use genir_data::perturb::{self, Perturbation};
//! use genir_data::{Corpus, Document};
//!
//! let corpus = Corpus::new(vec![
//!     Document::new("d1", "", "the cat sat on the mat"),
//!     Document::new("d2", "", "the dog chased the cat"),
//! ]);
//! let stats = corpus.stats(); // computed once, cached in the corpus
//! let tdc = perturb::append_most_discriminative();
//! let doc = corpus.get("d1").unwrap();
//! assert_eq!(tdc.apply("dog cat", doc, &stats).text, "the cat sat on the mat dog");
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::split::rng;
use crate::types::{Corpus, Document};

/// Lowercases `text` and splits it on non-alphanumeric characters. Each term tokenizes to itself.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(lowercase_term)
        .collect()
}

/// The query's terms as [`tokenize`] reads them, each with its text as written (`(term, surface)`): an
/// appended term keeps the query's case, as MechIR appends the query's own tokens.
fn query_terms(query: &str) -> Vec<(String, String)> {
    query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|run| (lowercase_term(run), run.to_string()))
        .collect()
}

/// A run of alphanumeric characters, lowercased. Lowercasing `İ` (U+0130) gives `i` and a combining dot, which
/// is not alphanumeric: it is dropped so that the term stays one alphanumeric run (`İzmir` → `izmir`).
fn lowercase_term(run: &str) -> String {
    let lower = run.to_lowercase();
    if lower.chars().all(char::is_alphanumeric) {
        lower
    } else {
        lower.chars().filter(|c| c.is_alphanumeric()).collect()
    }
}

/// Document frequencies and IDF of a corpus (title and text, [`tokenize`]d).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorpusStats {
    n_docs: u64,
    total_terms: u64,
    df: HashMap<String, u64>,
}

impl CorpusStats {
    /// Counts every document of the corpus once.
    pub fn compute(corpus: &Corpus) -> Self {
        Self::from_documents(corpus.iter())
    }

    /// Counts the given documents.
    pub fn from_documents<'a>(docs: impl IntoIterator<Item = &'a Document>) -> Self {
        let mut stats = CorpusStats::default();
        for d in docs {
            let mut terms = tokenize(&d.title);
            terms.extend(tokenize(&d.text));
            stats.n_docs += 1;
            stats.total_terms += terms.len() as u64;
            let unique: HashSet<String> = terms.into_iter().collect();
            for t in unique {
                *stats.df.entry(t).or_insert(0) += 1;
            }
        }
        stats
    }

    /// Number of documents counted.
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }

    /// Mean number of terms per document.
    pub fn mean_length(&self) -> f64 {
        if self.n_docs == 0 {
            0.0
        } else {
            self.total_terms as f64 / self.n_docs as f64
        }
    }

    /// Number of documents containing `term` (already tokenized: lowercase).
    pub fn df(&self, term: &str) -> u64 {
        self.df.get(term).copied().unwrap_or(0)
    }

    /// BM25's IDF, `ln(1 + (N - df + 0.5) / (df + 0.5))`: positive, and largest for unseen terms.
    pub fn idf(&self, term: &str) -> f64 {
        let n = self.n_docs as f64;
        let df = self.df(term) as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Distinct terms, sorted.
    pub fn vocabulary(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.df.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// A document perturbation.
pub trait Perturbation: Send + Sync {
    /// A short name for result tables, e.g. `tfc1` or `shuffle(seed=3)`.
    fn name(&self) -> String;

    /// The perturbed document.
    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document;
}

fn with_text(document: &Document, text: String) -> Document {
    Document {
        docid: document.docid.clone(),
        title: document.title.clone(),
        text,
    }
}

fn append(text: &str, extra: &str) -> String {
    match (text.is_empty(), extra.is_empty()) {
        (_, true) => text.to_string(),
        (true, false) => extra.to_string(),
        (false, false) => format!("{text} {extra}"),
    }
}

fn doc_seed(seed: u64, docid: &str) -> u64 {
    genir_io::fnv1a(docid.as_bytes(), 0) ^ seed
}

/// Rewrites each alphanumeric run of `text`: `f(lowercased run, index among runs)` returns `None` to keep it,
/// `Some(s)` to replace it (`""` deletes it with one adjacent whitespace character).
fn map_terms(text: &str, mut f: impl FnMut(&str, usize) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let mut index = 0;
    // After deleting a run at the start of the text, the whitespace that followed it goes too.
    let mut skip_space = false;
    let mut flush = |run: &mut String, out: &mut String, skip_space: &mut bool| {
        if run.is_empty() {
            return;
        }
        match f(&lowercase_term(run), index) {
            Some(s) if s.is_empty() => {
                // Deleting a word also deletes the whitespace before it (or after it, at the start).
                if out.ends_with(char::is_whitespace) {
                    out.pop();
                } else if out.is_empty() {
                    *skip_space = true;
                }
            }
            Some(s) => out.push_str(&s),
            None => out.push_str(run),
        }
        index += 1;
        run.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut out, &mut skip_space);
        if skip_space && c.is_whitespace() {
            skip_space = false;
            continue;
        }
        skip_space = false;
        out.push(c);
    }
    flush(&mut run, &mut out, &mut skip_space);
    out
}

/// Which query term an appending perturbation uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum TermChoice {
    /// The first query term.
    First,
    /// The n-th query term (0-based; the last one when out of range).
    Nth(usize),
    /// The query term with the highest IDF (ties: the earlier term).
    MaxIdf,
    /// The query term with the lowest IDF (ties: the earlier term).
    MinIdf,
    /// One of the query's distinct terms, drawn uniformly with the seed, the query and the docid (like
    /// MechIR's TFC1, `mode="random"`, which draws without a seed among nltk's case-sensitive tokens,
    /// punctuation included).
    Random {
        /// Seed.
        seed: u64,
    },
}

/// Appends one query term to the document (TFC1 with [`TermChoice::First`] or, as MechIR, with
/// [`TermChoice::Random`]; TDC with [`TermChoice::MaxIdf`]); a query without terms leaves the document
/// unchanged. The term is chosen by its lowercase form (IDF, distinctness) and appended as the query writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppendQueryTerm {
    /// Which term.
    pub choice: TermChoice,
    /// How many copies to append.
    pub copies: usize,
}

impl AppendQueryTerm {
    fn term(&self, query: &str, docid: &str, stats: &CorpusStats) -> Option<String> {
        let terms = query_terms(query);
        let by_idf = |max: bool| {
            let mut best: Option<(&String, f64)> = None;
            for (t, surface) in &terms {
                let idf = stats.idf(t);
                let better = match best {
                    None => true,
                    Some((_, b)) => (max && idf > b) || (!max && idf < b),
                };
                if better {
                    best = Some((surface, idf));
                }
            }
            best.map(|(t, _)| t.clone())
        };
        match self.choice {
            TermChoice::First => terms.first().map(|t| t.1.clone()),
            TermChoice::Nth(n) => terms.get(n).or(terms.last()).map(|t| t.1.clone()),
            TermChoice::MaxIdf => by_idf(true),
            TermChoice::MinIdf => by_idf(false),
            TermChoice::Random { seed } => {
                let mut seen = HashSet::new();
                let distinct: Vec<&String> = terms
                    .iter()
                    .filter(|(t, _)| seen.insert(t.as_str()))
                    .map(|(_, surface)| surface)
                    .collect();
                let seed = doc_seed(seed, docid) ^ genir_io::fnv1a(query.as_bytes(), 1);
                distinct.choose(&mut rng(seed)).map(|t| t.to_string())
            }
        }
    }
}

impl Perturbation for AppendQueryTerm {
    fn name(&self) -> String {
        match (self.choice, self.copies) {
            (TermChoice::First, 1) => "tfc1".into(),
            (TermChoice::MaxIdf, 1) => "tdc".into(),
            (TermChoice::Random { seed }, 1) => format!("tfc1(random, seed={seed})"),
            (c, n) => format!("append_query_term({c:?}, copies={n})"),
        }
    }

    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document {
        match self.term(query, &document.docid, stats) {
            Some(term) => {
                let extra = vec![term.as_str(); self.copies].join(" ");
                with_text(document, append(&document.text, &extra))
            }
            None => document.clone(),
        }
    }
}

/// TFC1: appends the first query term once.
pub fn tfc1() -> AppendQueryTerm {
    AppendQueryTerm {
        choice: TermChoice::First,
        copies: 1,
    }
}

/// TFC1 as MechIR draws it: appends one of the query's distinct terms, chosen at random (seeded per query and
/// document), once.
pub fn tfc1_random(seed: u64) -> AppendQueryTerm {
    AppendQueryTerm {
        choice: TermChoice::Random { seed },
        copies: 1,
    }
}

/// TDC: appends the most discriminative query term (highest IDF) once.
pub fn append_most_discriminative() -> AppendQueryTerm {
    AppendQueryTerm {
        choice: TermChoice::MaxIdf,
        copies: 1,
    }
}

/// Which terms of the document an edit targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Targets {
    /// Every occurrence of a query term.
    QueryTerms,
    /// Every occurrence of these terms (lowercase).
    Terms(Vec<String>),
    /// Each term independently with this probability, drawn with the seed.
    Random {
        /// Probability of each term, in `[0, 1]`.
        fraction: f64,
        /// Seed.
        seed: u64,
    },
}

impl Targets {
    fn selector(&self, query: &str, docid: &str) -> impl FnMut(&str) -> bool {
        let set: HashSet<String> = match self {
            Targets::QueryTerms => tokenize(query).into_iter().collect(),
            // a term that is one alphanumeric run matches as tokenize reads it; anything else (e.g. "e-mail")
            // matches no run, as before, rather than a merged word
            Targets::Terms(t) => t
                .iter()
                .map(|s| {
                    if s.chars().all(char::is_alphanumeric) {
                        lowercase_term(s)
                    } else {
                        s.to_lowercase()
                    }
                })
                .collect(),
            Targets::Random { .. } => HashSet::new(),
        };
        let random = match self {
            // a NaN fraction targets nothing (`clamp` keeps NaN, which `random_bool` refuses)
            Targets::Random { fraction, seed } => Some((
                if fraction.is_nan() {
                    0.0
                } else {
                    fraction.clamp(0.0, 1.0)
                },
                rng(doc_seed(*seed, docid)),
            )),
            _ => None,
        };
        let mut random = random;
        move |term: &str| match &mut random {
            Some((p, r)) => r.random_bool(*p),
            None => set.contains(term),
        }
    }

    fn label(&self) -> String {
        match self {
            Targets::QueryTerms => "query_terms".into(),
            Targets::Terms(t) => format!("terms={}", t.join("|")),
            Targets::Random { fraction, seed } => format!("random({fraction},seed={seed})"),
        }
    }
}

/// Deletes the targeted terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delete {
    /// What to delete.
    pub targets: Targets,
}

impl Perturbation for Delete {
    fn name(&self) -> String {
        format!("delete({})", self.targets.label())
    }

    fn apply(&self, query: &str, document: &Document, _stats: &CorpusStats) -> Document {
        let mut hit = self.targets.selector(query, &document.docid);
        with_text(
            document,
            map_terms(&document.text, |t, _| hit(t).then(String::new)),
        )
    }
}

/// What targeted terms are replaced with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Replacement {
    /// A fixed word.
    Word(String),
    /// A term drawn uniformly from the corpus vocabulary with the seed.
    RandomVocabulary {
        /// Seed.
        seed: u64,
    },
}

/// Replaces the targeted terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replace {
    /// What to replace.
    pub targets: Targets,
    /// With what.
    pub with: Replacement,
}

impl Perturbation for Replace {
    fn name(&self) -> String {
        let with = match &self.with {
            Replacement::Word(w) => w.clone(),
            Replacement::RandomVocabulary { seed } => format!("vocabulary(seed={seed})"),
        };
        format!("replace({} -> {with})", self.targets.label())
    }

    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document {
        let mut hit = self.targets.selector(query, &document.docid);
        let vocabulary = match &self.with {
            Replacement::RandomVocabulary { .. } => stats.vocabulary(),
            Replacement::Word(_) => Vec::new(),
        };
        let mut draw = match &self.with {
            Replacement::RandomVocabulary { seed } => Some(rng(doc_seed(
                seed.wrapping_add(0x9e37_79b9),
                &document.docid,
            ))),
            Replacement::Word(_) => None,
        };
        let text = map_terms(&document.text, |t, _| {
            if !hit(t) {
                return None;
            }
            match (&self.with, &mut draw) {
                (Replacement::Word(w), _) => Some(w.clone()),
                (_, Some(r)) => vocabulary.choose(r).map(|s| s.to_string()),
                _ => None,
            }
        });
        with_text(document, text)
    }
}

/// Shuffles the whitespace-separated words of the text with the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shuffle {
    /// Seed.
    pub seed: u64,
}

impl Perturbation for Shuffle {
    fn name(&self) -> String {
        format!("shuffle(seed={})", self.seed)
    }

    fn apply(&self, _query: &str, document: &Document, _stats: &CorpusStats) -> Document {
        let mut words: Vec<&str> = document.text.split_whitespace().collect();
        words.shuffle(&mut rng(doc_seed(self.seed, &document.docid)));
        with_text(document, words.join(" "))
    }
}

/// Where [`Inject`] puts its text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Position {
    /// Before the first word.
    Start,
    /// After the last word.
    End,
    /// Before the n-th word (0-based; the end when out of range).
    Word(usize),
    /// Before the word at this fraction of the length (0 = start, 1 = end).
    Fraction(f64),
}

/// Injects text at a position (word boundaries of the whitespace-split text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inject {
    /// The text to insert; `{query}` is replaced by the query.
    pub text: String,
    /// Where.
    pub position: Position,
}

impl Perturbation for Inject {
    fn name(&self) -> String {
        format!("inject({:?} at {:?})", self.text, self.position)
    }

    fn apply(&self, query: &str, document: &Document, _stats: &CorpusStats) -> Document {
        let insert = self.text.replace("{query}", query);
        let mut words: Vec<&str> = document.text.split_whitespace().collect();
        let at = match self.position {
            Position::Start => 0,
            Position::End => words.len(),
            Position::Word(n) => n.min(words.len()),
            Position::Fraction(f) => ((words.len() as f64) * f.clamp(0.0, 1.0)).round() as usize,
        };
        if !insert.trim().is_empty() {
            words.insert(at, insert.trim());
        }
        with_text(document, words.join(" "))
    }
}

/// A perturbation made from a closure.
#[derive(Clone)]
pub struct FnPerturbation<F> {
    name: String,
    f: F,
}

impl<F> Perturbation for FnPerturbation<F>
where
    F: Fn(&str, &Document, &CorpusStats) -> Document + Send + Sync,
{
    fn name(&self) -> String {
        self.name.clone()
    }

    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document {
        (self.f)(query, document, stats)
    }
}

/// Wraps a user function as a [`Perturbation`].
pub fn from_fn<F>(name: impl Into<String>, f: F) -> FnPerturbation<F>
where
    F: Fn(&str, &Document, &CorpusStats) -> Document + Send + Sync,
{
    FnPerturbation {
        name: name.into(),
        f,
    }
}

/// Applies perturbations in order, each to the previous one's output.
#[derive(Clone, Default)]
pub struct Chain {
    steps: Vec<Arc<dyn Perturbation>>,
}

impl Chain {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Chain::default()
    }

    /// Adds a step.
    pub fn then(mut self, step: impl Perturbation + 'static) -> Self {
        self.steps.push(Arc::new(step));
        self
    }
}

impl Perturbation for Chain {
    fn name(&self) -> String {
        if self.steps.is_empty() {
            return "identity".into();
        }
        self.steps
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document {
        self.steps
            .iter()
            .fold(document.clone(), |d, s| s.apply(query, &d, stats))
    }
}

impl<P: Perturbation + ?Sized> Perturbation for Arc<P> {
    fn name(&self) -> String {
        (**self).name()
    }

    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document {
        (**self).apply(query, document, stats)
    }
}

impl<P: Perturbation + ?Sized> Perturbation for Box<P> {
    fn name(&self) -> String {
        (**self).name()
    }

    fn apply(&self, query: &str, document: &Document, stats: &CorpusStats) -> Document {
        (**self).apply(query, document, stats)
    }
}
