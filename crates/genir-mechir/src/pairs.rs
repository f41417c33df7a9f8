//! Patching pairs: (query, document, perturbed document), sampled from a collection with a perturbation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use genir_data::perturb::{self, CorpusStats, Perturbation};
use genir_data::{Corpus, Document, Qrels, Queries};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::align::Alignment;
use crate::error::{MechirError, Result};

/// One patching example: a query, a document, and the document after a perturbation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Query id (empty for hand-made pairs).
    pub qid: String,
    /// Document id (empty for hand-made pairs).
    pub docid: String,
    /// Relevance grade of the document for the query, if judged.
    pub grade: Option<i32>,
    /// Query text.
    pub query: String,
    /// Document text as the ranker reads it.
    pub document: String,
    /// The perturbed document text.
    pub perturbed: String,
}

impl Pair {
    /// A hand-made pair.
    pub fn new(
        query: impl Into<String>,
        document: impl Into<String>,
        perturbed: impl Into<String>,
    ) -> Self {
        Self {
            qid: String::new(),
            docid: String::new(),
            grade: None,
            query: query.into(),
            document: document.into(),
            perturbed: perturbed.into(),
        }
    }
}

/// A perturbation with the way MechIR lines its output up with the original document.
#[derive(Clone)]
pub struct PairPerturbation {
    /// The document edit.
    pub perturbation: Arc<dyn Perturbation>,
    /// How the original is padded to the perturbed document's tokens (MechIR's `perturb_type`).
    pub alignment: Alignment,
}

impl std::fmt::Debug for PairPerturbation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairPerturbation")
            .field("perturbation", &self.perturbation.name())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl PairPerturbation {
    /// Any [`Perturbation`] with the alignment its edits need.
    pub fn new(perturbation: impl Perturbation + 'static, alignment: Alignment) -> Self {
        Self {
            perturbation: Arc::new(perturbation),
            alignment,
        }
    }

    /// A closure `(query, document text) -> perturbed text`.
    pub fn from_fn(
        name: &str,
        alignment: Alignment,
        f: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        let p = perturb::from_fn(name, move |q: &str, d: &Document, _: &CorpusStats| {
            Document::new(d.docid.clone(), d.title.clone(), f(q, &d.text))
        });
        Self::new(p, alignment)
    }

    /// TFC1: the first query term appended ([`Alignment::Append`]).
    pub fn tfc1() -> Self {
        Self::new(perturb::tfc1(), Alignment::Append)
    }

    /// TDC: the query term of highest IDF appended ([`Alignment::Append`]).
    pub fn tdc() -> Self {
        Self::new(perturb::append_most_discriminative(), Alignment::Append)
    }

    /// Query terms in the document replaced by `word` ([`Alignment::Replace`]).
    pub fn replace_query_terms(word: &str) -> Self {
        Self::new(
            perturb::Replace {
                targets: perturb::Targets::QueryTerms,
                with: perturb::Replacement::Word(word.into()),
            },
            Alignment::Replace,
        )
    }

    /// Query terms deleted from the document ([`Alignment::Delete`], which pads the perturbed side where the
    /// terms were).
    pub fn delete_query_terms() -> Self {
        Self::new(
            perturb::Delete {
                targets: perturb::Targets::QueryTerms,
            },
            Alignment::Delete,
        )
    }

    /// Words shuffled with a seed ([`Alignment::Replace`]).
    pub fn shuffle(seed: u64) -> Self {
        Self::new(perturb::Shuffle { seed }, Alignment::Replace)
    }

    /// TFC1 as MechIR draws it: a random query term (seeded per query and document) appended
    /// ([`Alignment::Append`]).
    pub fn tfc1_random(seed: u64) -> Self {
        Self::new(perturb::tfc1_random(seed), Alignment::Append)
    }

    /// The query injected at a position: at the start [`Alignment::Prepend`], at the end
    /// [`Alignment::Append`] (both exact), elsewhere [`Alignment::Insert`] (greedy: an original token equal to
    /// the first injected one is matched with it). Pairs sampled with titles (`Sampling::with_title`) align
    /// an injection at the start with [`Alignment::Insert`], since it lands after the title.
    pub fn inject_query(position: perturb::Position) -> Self {
        let alignment = match position {
            perturb::Position::Start => Alignment::Prepend,
            perturb::Position::End => Alignment::Append,
            perturb::Position::Word(_) | perturb::Position::Fraction(_) => Alignment::Insert,
        };
        Self::new(
            perturb::Inject {
                text: "{query}".into(),
                position,
            },
            alignment,
        )
    }

    /// Parses `tfc1` (the first query term), `tfc1-random` (MechIR's draw, with `seed`), `tdc`, `delete`,
    /// `replace` (with `[UNK]`-free word "a"), `shuffle`, `inject` (the query at the document's start).
    pub fn parse(name: &str, seed: u64) -> Result<Self> {
        Ok(match name {
            "tfc1" => Self::tfc1(),
            "tfc1-random" => Self::tfc1_random(seed),
            "tdc" => Self::tdc(),
            "delete" => Self::delete_query_terms(),
            "replace" => Self::replace_query_terms("a"),
            "shuffle" => Self::shuffle(seed),
            "inject" => Self::inject_query(perturb::Position::Start),
            other => {
                return Err(MechirError::Input(format!(
                    "unknown perturbation {other:?} (tfc1, tfc1-random, tdc, delete, replace, shuffle, inject)"
                )))
            }
        })
    }

    /// The perturbation's name.
    pub fn name(&self) -> String {
        self.perturbation.name()
    }
}

/// Patching pairs, all made with one perturbation.
#[derive(Clone, Debug)]
pub struct PairDataset {
    /// The pairs.
    pub pairs: Vec<Pair>,
    /// The perturbation and alignment they were made with.
    pub perturbation: PairPerturbation,
}

/// How [`PairDataset::sample`] picks judged pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Number of pairs.
    pub n: usize,
    /// Seed of the draw.
    pub seed: u64,
    /// Keep only judgments of these grades (all when `None`).
    pub grades: Option<Vec<i32>>,
    /// Skip pairs whose perturbation leaves the document unchanged.
    pub skip_unchanged: bool,
    /// Read `title text` instead of the text alone.
    pub with_title: bool,
}

impl Sampling {
    /// `n` pairs with this seed, every grade, unchanged documents skipped, text only.
    pub fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            grades: None,
            skip_unchanged: true,
            with_title: false,
        }
    }
}

impl PairDataset {
    /// Pairs made by hand (already perturbed).
    pub fn from_pairs(pairs: Vec<Pair>, alignment: Alignment) -> Self {
        Self {
            pairs,
            perturbation: PairPerturbation::from_fn("given", alignment, |_, d| d.to_string()),
        }
    }

    /// Applies `perturbation` to hand-made `(query, document)` pairs (corpus statistics from the documents).
    pub fn perturb(pairs: &[(&str, &str)], perturbation: PairPerturbation) -> Self {
        let docs: Vec<Document> = pairs
            .iter()
            .enumerate()
            .map(|(i, (_, d))| Document::new(format!("d{i}"), "", *d))
            .collect();
        let stats = CorpusStats::from_documents(docs.iter());
        let pairs = pairs
            .iter()
            .zip(&docs)
            .map(|((q, _), d)| {
                let p = perturbation.perturbation.apply(q, d, &stats);
                Pair {
                    qid: String::new(),
                    docid: d.docid.clone(),
                    grade: None,
                    query: q.to_string(),
                    document: d.text.clone(),
                    perturbed: p.text,
                }
            })
            .collect();
        Self {
            pairs,
            perturbation,
        }
    }

    /// Relevance-stratified, seeded sample of judged pairs: judgments are grouped by grade, each group
    /// shuffled with the seed, and pairs drawn from the groups in turn (highest grade first) until `n` are
    /// taken, so every grade is represented as evenly as the judgments allow. Judgments naming a missing
    /// query or document are skipped; a document judged twice for one query is drawn once, with its last
    /// grade.
    pub fn sample(
        corpus: &Corpus,
        queries: &Queries,
        qrels: &Qrels,
        perturbation: PairPerturbation,
        sampling: &Sampling,
    ) -> Result<Self> {
        if sampling.n == 0 {
            return Err(MechirError::Input(
                "asked for 0 pairs: sample at least one".into(),
            ));
        }
        let stats = corpus.stats();
        // a document judged twice for a query counts once, with its last grade (as `Qrels::to_map`)
        let mut last: HashMap<(&str, &str), i32> = HashMap::new();
        for q in qrels.iter() {
            last.insert((q.qid.as_str(), q.docid.as_str()), q.grade);
        }
        let mut groups: BTreeMap<i32, Vec<(&str, &str)>> = BTreeMap::new();
        for q in qrels.iter() {
            let key = (q.qid.as_str(), q.docid.as_str());
            let Some(grade) = last.remove(&key) else {
                continue;
            };
            if sampling
                .grades
                .as_ref()
                .is_some_and(|g| !g.contains(&grade))
            {
                continue;
            }
            if queries.get(&q.qid).is_some() && corpus.get(&q.docid).is_some() {
                groups.entry(grade).or_default().push(key);
            }
        }
        if groups.is_empty() {
            return Err(MechirError::Input(
                "no judgment names a query and a document of the collection".into(),
            ));
        }
        let mut rng = genir_data::split::rng(sampling.seed);
        let mut lists: Vec<(i32, std::vec::IntoIter<(&str, &str)>)> = groups
            .into_iter()
            .rev()
            .map(|(g, mut v)| {
                v.shuffle(&mut rng);
                (g, v.into_iter())
            })
            .collect();
        let judged: usize = lists.iter().map(|(_, it)| it.len()).sum();
        let mut pairs = Vec::with_capacity(sampling.n.min(judged));
        while pairs.len() < sampling.n {
            let mut progressed = false;
            for (grade, it) in lists.iter_mut() {
                if pairs.len() >= sampling.n {
                    break;
                }
                // Take the next usable judgment of this grade.
                for (qid, docid) in it.by_ref() {
                    let (Some(q), Some(d)) = (queries.get(qid), corpus.get(docid)) else {
                        continue;
                    };
                    let p = perturbation.perturbation.apply(&q.text, d, &stats);
                    let (document, perturbed) = if sampling.with_title {
                        (d.full_text(), p.full_text())
                    } else {
                        (d.text.clone(), p.text)
                    };
                    if sampling.skip_unchanged && document == perturbed {
                        continue;
                    }
                    pairs.push(Pair {
                        qid: qid.into(),
                        docid: docid.into(),
                        grade: Some(*grade),
                        query: q.text.clone(),
                        document,
                        perturbed,
                    });
                    progressed = true;
                    break;
                }
            }
            if !progressed {
                break;
            }
        }
        if pairs.is_empty() {
            return Err(MechirError::Input(format!(
                "the perturbation {} changes none of the judged documents",
                perturbation.name()
            )));
        }
        // text perturbations edit the text: with a title in front, tokens put at the text's start land after
        // the title, which only the greedy alignment finds
        let mut perturbation = perturbation;
        if sampling.with_title
            && perturbation.alignment == Alignment::Prepend
            && pairs.iter().any(|p| {
                corpus
                    .get(&p.docid)
                    .is_some_and(|d| !d.title.trim().is_empty())
            })
        {
            perturbation.alignment = Alignment::Insert;
        }
        Ok(Self {
            pairs,
            perturbation,
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genir_data::{Qrel, Query};

    fn collection() -> (Corpus, Queries) {
        let corpus = Corpus::new(vec![
            Document::new("d1", "", "the cat sat"),
            Document::new("d2", "", "a cat ran"),
            Document::new("d3", "", "no match here"),
        ]);
        let queries = Queries::new(vec![Query::new("q1", "cat"), Query::new("q2", "cat")]);
        (corpus, queries)
    }

    #[test]
    fn a_document_judged_twice_is_drawn_once_with_its_last_grade() {
        let (corpus, queries) = collection();
        let qrels = Qrels::new(vec![
            Qrel::new("q1", "d1", 0),
            Qrel::new("q1", "d2", 1),
            Qrel::new("q1", "d1", 2),
            Qrel::new("q2", "d2", 1),
        ]);
        let ds = PairDataset::sample(
            &corpus,
            &queries,
            &qrels,
            PairPerturbation::tfc1(),
            &Sampling::new(10, 3),
        )
        .unwrap();
        let mut got: Vec<(String, String, Option<i32>)> = ds
            .pairs
            .iter()
            .map(|p| (p.qid.clone(), p.docid.clone(), p.grade))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("q1".into(), "d1".into(), Some(2)),
                ("q1".into(), "d2".into(), Some(1)),
                ("q2".into(), "d2".into(), Some(1)),
            ]
        );
        let zero = PairDataset::sample(
            &corpus,
            &queries,
            &qrels,
            PairPerturbation::tfc1(),
            &Sampling::new(0, 3),
        );
        assert!(zero.unwrap_err().to_string().contains("0 pairs"));
    }

    #[test]
    fn perturbations_carry_the_alignment_their_edits_need() {
        use genir_data::perturb::Position;
        let a = |p: PairPerturbation| p.alignment;
        assert_eq!(
            a(PairPerturbation::parse("delete", 0).unwrap()),
            Alignment::Delete
        );
        assert_eq!(
            a(PairPerturbation::parse("inject", 0).unwrap()),
            Alignment::Prepend
        );
        assert_eq!(
            a(PairPerturbation::inject_query(Position::End)),
            Alignment::Append
        );
        assert_eq!(
            a(PairPerturbation::inject_query(Position::Word(2))),
            Alignment::Insert
        );
        // with titles in front, an injection at the text's start is no prepend
        let (corpus, queries) = collection();
        let titled = Corpus::new(
            corpus
                .iter()
                .map(|d| Document::new(d.docid.clone(), "Title", d.text.clone()))
                .collect(),
        );
        let qrels = Qrels::new(vec![Qrel::new("q1", "d1", 1)]);
        for (c, with_title, want) in [
            (&titled, true, Alignment::Insert),
            (&titled, false, Alignment::Prepend),
            (&corpus, true, Alignment::Prepend),
        ] {
            let sampling = Sampling {
                with_title,
                ..Sampling::new(1, 0)
            };
            let ds = PairDataset::sample(
                c,
                &queries,
                &qrels,
                PairPerturbation::parse("inject", 0).unwrap(),
                &sampling,
            )
            .unwrap();
            assert_eq!(ds.perturbation.alignment, want, "titles {with_title}");
        }
        let r = PairPerturbation::parse("tfc1-random", 4).unwrap();
        assert_eq!(
            (r.name(), r.alignment),
            ("tfc1(random, seed=4)".to_string(), Alignment::Append)
        );
    }
}
