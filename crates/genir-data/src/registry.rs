//! A registry of named remote datasets, ir_datasets style, and the code that maps their files to the types of
//! this crate.
//!
//! The built-in registry (`registry.json`, embedded) was copied from the facts of the Python ir_datasets
//! package 0.6.3 by `tools/data/make_registry.py`: source URLs, size hints, MD5 checksums, and expected
//! counts. Registered: `msmarco-passage/dev/small`, `msmarco-passage/trec-dl-2019`,
//! `msmarco-passage/trec-dl-2020`, `beir/scifact`, `beir/nfcorpus`, `cranfield`, `nq-dsi/nq320k`,
//! `nq-dsi/nq100k`, `nq-dsi/nq10k`.
//!
//! ```no_run
//! use genir_data::registry::Registry;
//! use genir_data::download::Downloader;
//!
//! let scifact = Registry::builtin().load("beir/scifact", &Downloader::from_env()?)?;
//! println!("{} documents, splits {:?}", scifact.corpus.len(), scifact.split_names());
//! # Ok::<(), genir_data::Error>(())
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::archive;
use crate::download::{Downloader, RemoteFile};
use crate::error::{Error, Result};
use crate::formats::{self, cranfield, jsonl, nq, trec, tsv};
use crate::types::{Collection, Corpus, Qrels, Queries, QuerySet};

/// How the lines of a file map to documents, queries or judgments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// `docid<TAB>text` or `docid<TAB>title<TAB>text` (MS MARCO `collection.tsv`).
    TsvDocuments,
    /// MS MARCO passage `collection.tsv`: [`SourceFormat::TsvDocuments`] with ir_datasets' repair of mis-encoded
    /// characters ([`tsv::fix_msmarco_encoding`]).
    MsmarcoPassages,
    /// `qid<TAB>text` (MS MARCO and TREC DL queries).
    TsvQueries,
    /// `qid 0 docid grade` (TREC, MS MARCO qrels) or `qid docid grade`.
    TrecQrels,
    /// BEIR `corpus.jsonl` (`_id`, `title`, `text`).
    BeirCorpus,
    /// BEIR `queries.jsonl` (`_id`, `text`).
    BeirQueries,
    /// BEIR `qrels/<split>.tsv` (`query-id corpus-id score` with header, exactly 3 columns).
    BeirQrels,
    /// Cranfield `cran.all.1400`.
    CranfieldDocuments,
    /// Cranfield `cran.qry` (renumbered 1..=225).
    CranfieldQueries,
    /// Cranfield `cranqrel`, grades mapped to TREC order.
    CranfieldQrels,
}

/// Where a part of a dataset comes from: a registered file, possibly a member of that archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Key of a file in [`Registry::files`].
    pub file: String,
    /// Path inside the archive, when the file is an archive.
    #[serde(default)]
    pub member: Option<String>,
    /// How to read it.
    pub format: SourceFormat,
}

/// The queries and judgments of one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSource {
    /// Queries.
    pub queries: Source,
    /// Judgments.
    pub qrels: Source,
    /// Keep only queries judged in this split (BEIR ships one `queries.jsonl` for all splits).
    #[serde(default)]
    pub judged_queries_only: bool,
}

/// How a dataset is assembled from its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Layout {
    /// A corpus file and per-split query and qrels files.
    Files {
        /// The documents.
        corpus: Source,
        /// The splits.
        splits: BTreeMap<String, SplitSource>,
    },
    /// Natural Questions raw files grouped into a DSI-style collection (see [`crate::formats::nq`]).
    NqDsi {
        /// File keys whose questions form the `train` split.
        train: Vec<String>,
        /// File keys whose questions form the `test` split (NQ dev).
        test: Vec<String>,
        /// Words of each page kept as its text.
        doc_words: usize,
        /// When set, a seeded subset of this many pages (NQ10k, NQ100k).
        #[serde(default)]
        subset_documents: Option<usize>,
        /// Seed of the subset.
        #[serde(default)]
        seed: u64,
    },
}

/// Expected counts of one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    /// Number of queries.
    pub queries: Option<u64>,
    /// Number of judgments.
    pub qrels: Option<u64>,
}

/// Expected counts, from ir_datasets' metadata; a mismatch after loading is logged as a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Number of documents.
    pub documents: Option<u64>,
    /// Per split.
    pub splits: BTreeMap<String, SplitCounts>,
}

/// One named dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Name, e.g. `beir/scifact`.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// How the files map to a [`Collection`].
    pub layout: Layout,
    /// Expected counts, when known.
    #[serde(default)]
    pub counts: Option<Counts>,
}

/// Named datasets and the remote files they are built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Where the facts come from.
    #[serde(default)]
    pub source: String,
    /// Remote files by key.
    pub files: BTreeMap<String, RemoteFile>,
    /// Datasets.
    pub datasets: Vec<DatasetSpec>,
}

const BUILTIN: &str = include_str!("../registry.json");

impl Registry {
    /// The built-in registry.
    pub fn builtin() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            // The embedded file is part of this crate and checked by its tests.
            Registry::from_json(BUILTIN).expect("embedded registry.json is valid")
        })
    }

    /// Parses a registry (the built-in one's layout) and checks that every referenced file is defined.
    pub fn from_json(text: &str) -> Result<Registry> {
        let registry: Registry = serde_json::from_str(text).map_err(|e| {
            Error::parse(
                "registry.json",
                e.line() as u64,
                "<registry>",
                e.to_string(),
            )
        })?;
        registry.check()?;
        Ok(registry)
    }

    fn check(&self) -> Result<()> {
        let mut names = HashSet::new();
        for d in &self.datasets {
            if !names.insert(d.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "registry: dataset `{}` defined twice",
                    d.name
                )));
            }
            for key in file_keys(&d.layout) {
                if !self.files.contains_key(key) {
                    return Err(Error::InvalidArgument(format!(
                        "registry: dataset `{}` uses undefined file `{key}`",
                        d.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Registered dataset names, in registry order.
    pub fn names(&self) -> Vec<&str> {
        self.datasets.iter().map(|d| d.name.as_str()).collect()
    }

    /// A dataset by name.
    pub fn get(&self, name: &str) -> Result<&DatasetSpec> {
        self.datasets
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| Error::UnknownDataset {
                name: name.to_string(),
                known: self.names().join(", "),
            })
    }

    /// The remote files a dataset needs.
    pub fn files_of(&self, spec: &DatasetSpec) -> Result<Vec<&RemoteFile>> {
        let mut seen = HashSet::new();
        file_keys(&spec.layout)
            .into_iter()
            .filter(|k| seen.insert(*k))
            .map(|k| self.file(k))
            .collect()
    }

    fn file(&self, key: &str) -> Result<&RemoteFile> {
        self.files
            .get(key)
            .ok_or_else(|| Error::InvalidArgument(format!("registry: undefined file `{key}`")))
    }

    /// Downloads (or finds in the cache) every file of a dataset; returns their cached paths.
    pub fn download(&self, name: &str, downloader: &Downloader) -> Result<Vec<PathBuf>> {
        let spec = self.get(name)?;
        self.files_of(spec)?
            .into_iter()
            .map(|f| downloader.fetch(f))
            .collect()
    }

    /// Downloads (unless cached) and reads a dataset into memory.
    pub fn load(&self, name: &str, downloader: &Downloader) -> Result<Collection> {
        let spec = self.get(name)?;
        let collection = match &spec.layout {
            Layout::Files { corpus, splits } => {
                let corpus = self.read_corpus(corpus, downloader)?;
                let mut out = BTreeMap::new();
                for (split, source) in splits {
                    out.insert(split.clone(), self.read_split(source, downloader)?);
                }
                Collection {
                    name: spec.name.clone(),
                    corpus,
                    splits: out,
                }
            }
            Layout::NqDsi {
                train,
                test,
                doc_words,
                subset_documents,
                seed,
            } => {
                let mut builder = nq::DsiBuilder::new(*doc_words);
                for (split, keys) in [("train", train), ("test", test)] {
                    for key in keys {
                        let path = downloader.fetch(self.file(key)?)?;
                        builder.add(formats::open(&path)?, &path, split)?;
                    }
                }
                let full = builder.finish(&spec.name);
                match subset_documents {
                    Some(n) => crate::split::subset_by_documents(&full, *n, *seed, &spec.name),
                    None => full,
                }
            }
        };
        if let Some(counts) = &spec.counts {
            check_counts(&collection, counts);
        }
        Ok(collection)
    }

    /// Streams the documents of a dataset without loading the corpus into memory (e.g. the 8.8M MS MARCO
    /// passages). Downloads (unless cached) and extracts first. NQ-DSI datasets are built in memory and cannot
    /// be streamed.
    pub fn stream_documents(
        &self,
        name: &str,
        downloader: &Downloader,
    ) -> Result<formats::DocumentStream> {
        let spec = self.get(name)?;
        let Layout::Files { corpus, .. } = &spec.layout else {
            return Err(Error::InvalidArgument(format!(
                "{name}: only datasets with a corpus file can be streamed"
            )));
        };
        let path = self.locate(corpus, downloader)?;
        let reader = formats::open(&path)?;
        match corpus.format {
            SourceFormat::TsvDocuments => Ok(Box::new(tsv::documents(reader, path))),
            SourceFormat::MsmarcoPassages => Ok(Box::new(tsv::msmarco_passages(reader, path))),
            SourceFormat::BeirCorpus => Ok(Box::new(jsonl::documents(reader, path))),
            SourceFormat::CranfieldDocuments => Ok(Box::new(
                cranfield::documents(reader, &path)?.into_iter().map(Ok),
            )),
            other => wrong_kind(&path, other, "documents"),
        }
    }

    fn locate(&self, source: &Source, downloader: &Downloader) -> Result<PathBuf> {
        let path = downloader.fetch(self.file(&source.file)?)?;
        match &source.member {
            Some(member) => {
                if !archive::is_archive(&path) {
                    return Err(Error::InvalidArgument(format!(
                        "{}: member `{member}` requested from a file that is not an archive",
                        path.display()
                    )));
                }
                archive::member(&archive::extract(&path)?, member)
            }
            None => Ok(path),
        }
    }

    fn read_corpus(&self, source: &Source, downloader: &Downloader) -> Result<Corpus> {
        let path = self.locate(source, downloader)?;
        read_documents(&path, source.format)
    }

    fn read_split(&self, source: &SplitSource, downloader: &Downloader) -> Result<QuerySet> {
        let qpath = self.locate(&source.queries, downloader)?;
        let rpath = self.locate(&source.qrels, downloader)?;
        let mut queries = read_queries(&qpath, source.queries.format)?;
        let qrels = read_qrels(&rpath, source.qrels.format)?;
        if source.judged_queries_only {
            let judged: HashSet<&str> = qrels.iter().map(|q| q.qid.as_str()).collect();
            queries = queries.filter(|q| judged.contains(q.qid.as_str()));
        }
        Ok(QuerySet { queries, qrels })
    }
}

fn file_keys(layout: &Layout) -> Vec<&str> {
    match layout {
        Layout::Files { corpus, splits } => std::iter::once(corpus.file.as_str())
            .chain(
                splits
                    .values()
                    .flat_map(|s| [s.queries.file.as_str(), s.qrels.file.as_str()]),
            )
            .collect(),
        Layout::NqDsi { train, test, .. } => train.iter().chain(test).map(String::as_str).collect(),
    }
}

fn wrong_kind<T>(path: &Path, format: SourceFormat, what: &str) -> Result<T> {
    Err(Error::InvalidArgument(format!(
        "{}: format {format:?} does not hold {what}",
        path.display()
    )))
}

/// Reads documents from a file in one of the registry's formats.
pub fn read_documents(path: &Path, format: SourceFormat) -> Result<Corpus> {
    let reader = formats::open(path)?;
    match format {
        SourceFormat::TsvDocuments => tsv::documents(reader, path).collect(),
        SourceFormat::MsmarcoPassages => tsv::msmarco_passages(reader, path).collect(),
        SourceFormat::BeirCorpus => jsonl::documents(reader, path).collect(),
        SourceFormat::CranfieldDocuments => Ok(Corpus::new(cranfield::documents(reader, path)?)),
        other => wrong_kind(path, other, "documents"),
    }
}

/// Reads queries from a file in one of the registry's formats.
pub fn read_queries(path: &Path, format: SourceFormat) -> Result<Queries> {
    let reader = formats::open(path)?;
    match format {
        SourceFormat::TsvQueries => tsv::queries(reader, path).collect(),
        SourceFormat::BeirQueries => jsonl::queries(reader, path).collect(),
        SourceFormat::CranfieldQueries => Ok(Queries::new(cranfield::queries(reader, path)?)),
        other => wrong_kind(path, other, "queries"),
    }
}

/// Reads judgments from a file in one of the registry's formats.
pub fn read_qrels(path: &Path, format: SourceFormat) -> Result<Qrels> {
    let reader = formats::open(path)?;
    match format {
        SourceFormat::TrecQrels => trec::qrels(reader, path).collect(),
        SourceFormat::BeirQrels => trec::beir_qrels(reader, path).collect(),
        SourceFormat::CranfieldQrels => Ok(cranfield::qrels(reader, path)?
            .into_iter()
            .map(|mut q| {
                q.grade = cranfield::ascending_grade(q.grade);
                q
            })
            .collect()),
        other => wrong_kind(path, other, "qrels"),
    }
}

fn check_counts(collection: &Collection, counts: &Counts) {
    let mismatch = |what: String, expected: Option<u64>, actual: usize| {
        if let Some(e) = expected {
            if e != actual as u64 {
                warn!(dataset = %collection.name, what, expected = e, actual, "count differs from ir_datasets");
            }
        }
    };
    mismatch(
        "documents".into(),
        counts.documents,
        collection.corpus.len(),
    );
    for (name, c) in &counts.splits {
        if let Some(set) = collection.split(name) {
            mismatch(format!("{name} queries"), c.queries, set.queries.len());
            mismatch(format!("{name} qrels"), c.qrels, set.qrels.len());
        }
    }
}
