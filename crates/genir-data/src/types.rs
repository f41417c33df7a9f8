//! The typed values of an IR collection: documents, queries, relevance judgments and runs.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::perturb::CorpusStats;

/// One retrievable unit (a passage or a document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Unique identifier within its corpus.
    pub docid: String,
    /// Title; empty when the collection has none.
    #[serde(default)]
    pub title: String,
    /// Body text.
    pub text: String,
}

impl Document {
    /// Builds a document.
    pub fn new(
        docid: impl Into<String>,
        title: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Document {
            docid: docid.into(),
            title: title.into(),
            text: text.into(),
        }
    }

    /// Title and text joined by a space (the text alone when there is no title).
    pub fn full_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}

/// One information need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Unique identifier within its query set.
    pub qid: String,
    /// The query text.
    pub text: String,
}

impl Query {
    /// Builds a query.
    pub fn new(qid: impl Into<String>, text: impl Into<String>) -> Self {
        Query {
            qid: qid.into(),
            text: text.into(),
        }
    }
}

/// A relevance judgment: how relevant `docid` is to `qid` (0 = not relevant; some collections use -1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Qrel {
    /// The judged query.
    pub qid: String,
    /// The judged document.
    pub docid: String,
    /// The relevance grade.
    pub grade: i32,
}

impl Qrel {
    /// Builds a judgment.
    pub fn new(qid: impl Into<String>, docid: impl Into<String>, grade: i32) -> Self {
        Qrel {
            qid: qid.into(),
            docid: docid.into(),
            grade,
        }
    }
}

/// One row of a TREC run file: `qid Q0 docid rank score tag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The query.
    pub qid: String,
    /// The retrieved document.
    pub docid: String,
    /// 1-based rank.
    pub rank: u32,
    /// The system's score (higher is better).
    pub score: f64,
    /// The run's name.
    pub tag: String,
}

macro_rules! keyed_collection {
    ($(#[$doc:meta])* $name:ident, $item:ident, $key:ident, $get:ident, $ids:ident $(, $extra:ident: $ety:ty)*) => {
        $(#[$doc])*
        ///
        /// Items keep their input order. Duplicate ids are kept (never silently dropped): lookups return the
        /// first item with an id, and [`crate::validate`] reports the duplicates.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            items: Vec<$item>,
            index: HashMap<String, usize>,
            $($extra: $ety,)*
        }

        impl $name {
            /// Builds the collection, indexing ids.
            pub fn new(items: Vec<$item>) -> Self {
                let mut index = HashMap::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    index.entry(item.$key.clone()).or_insert(i);
                }
                $name { items, index, $($extra: <$ety>::default(),)* }
            }

            /// The first item with this id.
            pub fn $get(&self, id: &str) -> Option<&$item> {
                self.index.get(id).map(|&i| &self.items[i])
            }

            /// Whether an item has this id.
            pub fn contains(&self, id: &str) -> bool {
                self.index.contains_key(id)
            }

            /// Position of the first item with this id.
            pub fn position(&self, id: &str) -> Option<usize> {
                self.index.get(id).copied()
            }

            /// Number of items (duplicates included).
            pub fn len(&self) -> usize {
                self.items.len()
            }

            /// Whether there are no items.
            pub fn is_empty(&self) -> bool {
                self.items.is_empty()
            }

            /// Items in input order.
            pub fn iter(&self) -> std::slice::Iter<'_, $item> {
                self.items.iter()
            }

            /// Items as a slice, in input order.
            pub fn as_slice(&self) -> &[$item] {
                &self.items
            }

            /// Ids in input order.
            pub fn $ids(&self) -> impl Iterator<Item = &str> {
                self.items.iter().map(|item| item.$key.as_str())
            }

            /// The items, consuming the collection.
            pub fn into_vec(self) -> Vec<$item> {
                self.items
            }

            /// Items for which `keep` is true, in input order.
            pub fn filter(&self, mut keep: impl FnMut(&$item) -> bool) -> Self {
                Self::new(self.items.iter().filter(|x| keep(x)).cloned().collect())
            }

            /// Appends an item.
            pub fn push(&mut self, item: $item) {
                self.index.entry(item.$key.clone()).or_insert(self.items.len());
                self.items.push(item);
                $(self.$extra = <$ety>::default();)*
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.items.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Vec::<$item>::deserialize(d).map(Self::new)
            }
        }

        impl From<Vec<$item>> for $name {
            fn from(items: Vec<$item>) -> Self {
                Self::new(items)
            }
        }

        impl From<$name> for Vec<$item> {
            fn from(c: $name) -> Self {
                c.items
            }
        }

        impl FromIterator<$item> for $name {
            fn from_iter<I: IntoIterator<Item = $item>>(iter: I) -> Self {
                Self::new(iter.into_iter().collect())
            }
        }

        impl<'a> IntoIterator for &'a $name {
            type Item = &'a $item;
            type IntoIter = std::slice::Iter<'a, $item>;
            fn into_iter(self) -> Self::IntoIter {
                self.items.iter()
            }
        }
    };
}

keyed_collection!(
    /// A set of documents with lookup by docid.
    Corpus,
    Document,
    docid,
    get,
    docids,
    stats: StatsSlot
);

/// The lazily computed statistics of a corpus; ignored by equality, shared (not recomputed) by clones.
#[derive(Clone, Default)]
struct StatsSlot(std::sync::OnceLock<std::sync::Arc<CorpusStats>>);

impl PartialEq for StatsSlot {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for StatsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "computed"
        } else {
            "not computed"
        })
    }
}

impl Corpus {
    /// Document frequencies and IDF of this corpus, computed on first use and cached (see
    /// [`CorpusStats::compute`]). Appending a document clears the cache.
    pub fn stats(&self) -> std::sync::Arc<CorpusStats> {
        self.stats
            .0
            .get_or_init(|| std::sync::Arc::new(CorpusStats::compute(self)))
            .clone()
    }
}
keyed_collection!(
    /// A set of queries with lookup by qid.
    Queries,
    Query,
    qid,
    get,
    qids
);

/// Relevance judgments with lookup by query.
///
/// Judgments keep their input order; duplicates are kept and reported by [`crate::validate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qrels {
    items: Vec<Qrel>,
    by_qid: HashMap<String, Vec<usize>>,
}

impl Qrels {
    /// Builds the judgments, indexing them by qid.
    pub fn new(items: Vec<Qrel>) -> Self {
        let mut by_qid: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, q) in items.iter().enumerate() {
            by_qid.entry(q.qid.clone()).or_default().push(i);
        }
        Qrels { items, by_qid }
    }

    /// Judgments of one query, in input order.
    pub fn for_query<'a>(&'a self, qid: &str) -> impl Iterator<Item = &'a Qrel> + 'a {
        self.by_qid
            .get(qid)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(move |&i| &self.items[i])
    }

    /// Documents judged relevant (grade > 0) for a query.
    pub fn relevant<'a>(&'a self, qid: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.for_query(qid)
            .filter(|q| q.grade > 0)
            .map(|q| q.docid.as_str())
    }

    /// The grade of a document for a query (the first judgment when duplicated).
    pub fn grade(&self, qid: &str, docid: &str) -> Option<i32> {
        self.for_query(qid)
            .find(|q| q.docid == docid)
            .map(|q| q.grade)
    }

    /// Judged query ids, sorted.
    pub fn qids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_qid.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Grades by query and document, the shape evaluation tools expect (later duplicates win).
    pub fn to_map(&self) -> BTreeMap<String, BTreeMap<String, i32>> {
        let mut map: BTreeMap<String, BTreeMap<String, i32>> = BTreeMap::new();
        for q in &self.items {
            map.entry(q.qid.clone())
                .or_default()
                .insert(q.docid.clone(), q.grade);
        }
        map
    }

    /// Number of judgments.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no judgments.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Judgments in input order.
    pub fn iter(&self) -> std::slice::Iter<'_, Qrel> {
        self.items.iter()
    }

    /// Judgments as a slice.
    pub fn as_slice(&self) -> &[Qrel] {
        &self.items
    }

    /// Judgments for which `keep` is true.
    pub fn filter(&self, mut keep: impl FnMut(&Qrel) -> bool) -> Self {
        Self::new(self.items.iter().filter(|q| keep(q)).cloned().collect())
    }

    /// The judgments, consuming the set.
    pub fn into_vec(self) -> Vec<Qrel> {
        self.items
    }
}

impl Serialize for Qrels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.items.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Qrels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Qrel>::deserialize(d).map(Self::new)
    }
}

impl From<Vec<Qrel>> for Qrels {
    fn from(items: Vec<Qrel>) -> Self {
        Self::new(items)
    }
}

impl From<Qrels> for Vec<Qrel> {
    fn from(q: Qrels) -> Self {
        q.items
    }
}

impl FromIterator<Qrel> for Qrels {
    fn from_iter<I: IntoIterator<Item = Qrel>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Qrels {
    type Item = &'a Qrel;
    type IntoIter = std::slice::Iter<'a, Qrel>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// A ranked list per query, as read from or written to a TREC run file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Rows in file order.
    pub entries: Vec<RunEntry>,
}

impl Run {
    /// Builds a run from its rows.
    pub fn new(entries: Vec<RunEntry>) -> Self {
        Run { entries }
    }

    /// Builds a run from scored documents per query, ranking by descending score, equal scores by ascending
    /// docid (byte order). Evaluation ignores these ranks: trec_eval, and genir-train's metrics which follow
    /// it, re-sort a run by score with equal scores in descending docid order, so where scores tie the
    /// `rank` column and the evaluated order differ.
    pub fn from_scores<'a>(
        tag: &str,
        scores: impl IntoIterator<Item = (&'a str, Vec<(String, f64)>)>,
    ) -> Self {
        let mut entries = Vec::new();
        for (qid, mut docs) in scores {
            docs.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (i, (docid, score)) in docs.into_iter().enumerate() {
                entries.push(RunEntry {
                    qid: qid.to_string(),
                    docid,
                    rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    score,
                    tag: tag.to_string(),
                });
            }
        }
        Run { entries }
    }

    /// Rows of one query, in file order.
    pub fn for_query<'a>(&'a self, qid: &'a str) -> impl Iterator<Item = &'a RunEntry> + 'a {
        self.entries.iter().filter(move |e| e.qid == qid)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the run has no rows.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The queries of one split and their judgments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuerySet {
    /// The queries.
    pub queries: Queries,
    /// Their judgments.
    pub qrels: Qrels,
}

/// A corpus with named query splits (`train`, `validation`, `test`, `dev`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Collection {
    /// Name of the collection, e.g. `wiki-genir` or `beir/scifact`.
    pub name: String,
    /// The documents.
    pub corpus: Corpus,
    /// Query splits by name.
    pub splits: BTreeMap<String, QuerySet>,
}

impl Collection {
    /// One split, if present.
    pub fn split(&self, name: &str) -> Option<&QuerySet> {
        self.splits.get(name)
    }

    /// One split, or an error naming the splits there are.
    pub fn require_split(&self, name: &str) -> Result<&QuerySet, crate::Error> {
        self.split(name).ok_or_else(|| crate::Error::UnknownSplit {
            collection: self.name.clone(),
            split: name.into(),
            available: match self.split_names() {
                v if v.is_empty() => "it has no queries (only documents)".into(),
                v => format!("it has {}", v.join(", ")),
            },
        })
    }

    /// Split names, sorted.
    pub fn split_names(&self) -> Vec<&str> {
        self.splits.keys().map(String::as_str).collect()
    }

    /// Checks every split against the corpus; see [`crate::validate::validate_collection`].
    pub fn validate(&self) -> crate::validate::ValidationReport {
        crate::validate::validate_collection(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_split_names_the_splits_there_are() {
        let mut c = Collection {
            name: "mine".into(),
            corpus: Corpus::new(vec![Document::new("1", "", "text")]),
            splits: BTreeMap::new(),
        };
        let e = c.require_split("test").unwrap_err().to_string();
        assert_eq!(
            e,
            "collection `mine` has no query split `test`; it has no queries (only documents)"
        );
        for s in ["train", "dev"] {
            c.splits.insert(
                s.into(),
                QuerySet {
                    queries: Queries::new(vec![]),
                    qrels: Qrels::new(vec![]),
                },
            );
        }
        let e = c.require_split("test").unwrap_err().to_string();
        assert!(e.ends_with("it has dev, train"), "{e}");
        assert!(c.require_split("dev").is_ok());
    }
}
