use std::io::Write;
use std::path::Path;

use genir_data::formats::{self, jsonl, trec, tsv, Format};
use genir_data::{Corpus, Document, Error, Qrel, Qrels, Queries, Query, Run, RunEntry};

fn corpus() -> Corpus {
    Corpus::new(vec![
        Document::new(
            "d1",
            "First title",
            "Some text, with \"quotes\" and ünïcode.",
        ),
        Document::new("d2", "", "No title here."),
        Document::new("d3", "Third", "Tabs are\tnot allowed in TSV."),
    ])
}

fn queries() -> Queries {
    Queries::new(vec![
        Query::new("q1", "what is text"),
        Query::new("q2", "title"),
    ])
}

fn qrels() -> Qrels {
    Qrels::new(vec![
        Qrel::new("q1", "d1", 2),
        Qrel::new("q1", "d2", 0),
        Qrel::new("q2", "d1", 1),
    ])
}

fn run() -> Run {
    Run::new(vec![
        RunEntry {
            qid: "q1".into(),
            docid: "d1".into(),
            rank: 1,
            score: 3.5,
            tag: "bm25".into(),
        },
        RunEntry {
            qid: "q1".into(),
            docid: "d2".into(),
            rank: 2,
            score: -0.25,
            tag: "bm25".into(),
        },
    ])
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn parse_error(e: Error) -> (String, u64, String) {
    match e {
        Error::Parse {
            path, line, field, ..
        } => (
            path.file_name().unwrap().to_string_lossy().into_owned(),
            line,
            field,
        ),
        other => panic!("expected a parse error, got {other}"),
    }
}

#[test]
fn jsonl_round_trips_in_every_layout() {
    let c = corpus();
    for layout in [
        jsonl::Layout::Genir,
        jsonl::Layout::IrDatasets,
        jsonl::Layout::Beir,
    ] {
        let mut buf = Vec::new();
        jsonl::write_documents(&mut buf, &c, layout).unwrap();
        let back: Corpus = jsonl::documents(buf.as_slice(), "mem")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, c, "{layout:?}");
        let mut buf = Vec::new();
        jsonl::write_queries(&mut buf, &queries(), layout).unwrap();
        let back: Queries = jsonl::queries(buf.as_slice(), "mem")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, queries(), "{layout:?}");
    }
    let mut buf = Vec::new();
    jsonl::write_documents(&mut buf, &c, jsonl::Layout::Beir).unwrap();
    let first = String::from_utf8(buf).unwrap();
    assert!(first.starts_with("{\"_id\":\"d1\""), "{first}");
}

/// The file names to test: Parquet only when the `parquet` feature is on.
fn with_parquet(names: &[&'static str], parquet: &'static str) -> Vec<&'static str> {
    let mut v = names.to_vec();
    if cfg!(feature = "parquet") {
        v.push(parquet);
    }
    v
}

#[test]
fn files_round_trip_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let c = corpus().filter(|d| !d.text.contains('\t'));
    for name in with_parquet(&["c.jsonl", "c.jsonl.gz", "c.tsv", "c.tsv.gz"], "c.parquet") {
        let p = dir.path().join(name);
        formats::save_corpus(&p, &c).unwrap();
        assert_eq!(formats::load_corpus(&p).unwrap(), c, "{name}");
    }
    for name in with_parquet(&["q.jsonl", "q.tsv"], "q.parquet") {
        let p = dir.path().join(name);
        formats::save_queries(&p, &queries()).unwrap();
        assert_eq!(formats::load_queries(&p).unwrap(), queries(), "{name}");
    }
    for name in with_parquet(&["r.trec", "r.qrels", "r.tsv", "r.txt.gz"], "r.parquet") {
        let p = dir.path().join(name);
        formats::save_qrels(&p, &qrels()).unwrap();
        assert_eq!(formats::load_qrels(&p).unwrap(), qrels(), "{name}");
    }
    let beir = std::fs::read_to_string(dir.path().join("r.tsv")).unwrap();
    assert!(
        beir.starts_with("query-id\tcorpus-id\tscore\nq1\td1\t2\n"),
        "{beir}"
    );
    let trec_text = std::fs::read_to_string(dir.path().join("r.trec")).unwrap();
    assert!(trec_text.starts_with("q1 0 d1 2\n"), "{trec_text}");
    for name in with_parquet(&["run.trec"], "run.parquet") {
        let p = dir.path().join(name);
        formats::save_run(&p, &run()).unwrap();
        assert_eq!(formats::load_run(&p).unwrap(), run(), "{name}");
    }
    let run_text = std::fs::read_to_string(dir.path().join("run.trec")).unwrap();
    assert_eq!(run_text.lines().next(), Some("q1 Q0 d1 1 3.5 bm25"));
    // a NaN score is refused when written (the readers refuse it), in every format
    let mut bad = run();
    bad.entries[1].score = f64::NAN;
    for name in with_parquet(&["nan.trec"], "nan.parquet") {
        let p = dir.path().join(name);
        let err = formats::save_run(&p, &bad).unwrap_err();
        assert!(matches!(err, Error::Unwritable { .. }), "{name}: {err}");
        assert!(err.to_string().contains("d2"), "{err}");
        assert!(!p.exists(), "{name}");
    }
}

#[test]
fn a_failed_save_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    // Not a prefix of what the failing save writes, so a partly written file cannot pass for it.
    let good = corpus().filter(|d| d.docid == "d2");
    for name in ["c.tsv", "c.tsv.gz"] {
        let p = dir.path().join(name);
        formats::save_corpus(&p, &good).unwrap();
        // d3's text has a tab, which TSV cannot hold: the save fails after writing d1 and d2.
        let err = formats::save_corpus(&p, &corpus()).unwrap_err();
        assert!(matches!(err, Error::Unwritable { .. }), "{err}");
        assert_eq!(formats::load_corpus(&p).unwrap(), good, "{name}");
    }
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["c.tsv", "c.tsv.gz"], "no temporary file is left");
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_tables_have_the_documented_columns() {
    let t = formats::parquet::qrels_to_table(&qrels()).unwrap();
    assert_eq!(t.names(), ["qid", "docid", "grade"]);
    assert_eq!(t.height(), 3);
}

#[test]
fn tsv_refuses_to_write_tabs() {
    let mut buf = Vec::new();
    let err = tsv::write_documents(&mut buf, &corpus(), true).unwrap_err();
    assert!(matches!(err, Error::Unwritable { .. }), "{err}");
    assert!(err.to_string().contains("d3"));
    let mut buf = Vec::new();
    let bad = Qrels::new(vec![Qrel::new("q 1", "d1", 1)]);
    assert!(trec::write_qrels(&mut buf, &bad).is_err());
}

#[test]
fn streaming_reads_lazily_and_stops_at_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("big.tsv")).unwrap();
    for i in 0..1000 {
        writeln!(f, "d{i}\ttext number {i}").unwrap();
    }
    writeln!(f, "broken line without a tab").unwrap();
    writeln!(f, "d9999\tafter the error").unwrap();
    drop(f);
    let mut stream = formats::stream_documents(&dir.path().join("big.tsv")).unwrap();
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first, Document::new("d0", "", "text number 0"));
    let rest: Vec<_> = stream.collect();
    assert_eq!(
        rest.len(),
        1000,
        "999 documents, then one error, then nothing"
    );
    assert!(rest[..999].iter().all(Result::is_ok));
    let err = rest.into_iter().last().unwrap().unwrap_err();
    assert_eq!(
        parse_error(err),
        ("big.tsv".into(), 1001, "<columns>".into())
    );
}

type Loader = Box<dyn Fn(&Path) -> Result<(), Error>>;
type Case = (std::path::PathBuf, Loader, u64, &'static str);

#[test]
fn malformed_input_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<Case> = vec![
        (
            write(
                d,
                "a.jsonl",
                "{\"docid\":\"1\",\"text\":\"ok\"}\n\n{\"docid\":\"2\"}\n",
            ),
            Box::new(|p| formats::load_corpus(p).map(drop)),
            3,
            "text",
        ),
        (
            write(d, "b.jsonl", "{\"title\":\"x\",\"text\":\"y\"}\n"),
            Box::new(|p| formats::load_corpus(p).map(drop)),
            1,
            "docid|doc_id|_id|id",
        ),
        (
            write(d, "c.jsonl", "{\"_id\":\"1\",\"text\":\"ok\"}\n{not json\n"),
            Box::new(|p| formats::load_corpus(p).map(drop)),
            2,
            "<record>",
        ),
        (
            write(d, "d.jsonl", "{\"qid\": [1], \"text\": \"x\"}\n"),
            Box::new(|p| formats::load_queries(p).map(drop)),
            1,
            "qid",
        ),
        (
            write(d, "e.tsv", "q1\tfine\nq2\n"),
            Box::new(|p| formats::load_queries(p).map(drop)),
            2,
            "text",
        ),
        (
            write(d, "f.trec", "q1 0 d1 1\nq1 0 d2 high\n"),
            Box::new(|p| formats::load_qrels(p).map(drop)),
            2,
            "grade",
        ),
        (
            write(d, "g.trec", "q1 0 d1 1 extra\n"),
            Box::new(|p| formats::load_qrels(p).map(drop)),
            1,
            "<columns>",
        ),
        (
            write(d, "h.run", "q1 Q0 d1 1 2.0 tag\nq1 Q0 d2 two 1.0 tag\n"),
            Box::new(|p| formats::load_run(p).map(drop)),
            2,
            "rank",
        ),
        (
            write(d, "i.run", "q1 Q0 d1 1 NaN tag\n"),
            Box::new(|p| formats::load_run(p).map(drop)),
            1,
            "score",
        ),
        (
            write(d, "j.tsv", "\td1 has no id\n"),
            Box::new(|p| formats::load_corpus(p).map(drop)),
            1,
            "docid",
        ),
    ];
    for (path, load, line, field) in cases {
        let err = load(&path).expect_err(&path.display().to_string());
        let msg = err.to_string();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            msg.contains(&name) && msg.contains(&format!(":{line}:")),
            "{msg}"
        );
        assert_eq!(parse_error(err), (name, line, field.to_string()));
    }
}

#[test]
fn grades_accept_integral_floats_only() {
    let q: Qrels = trec::qrels("q 0 d 1.0\n".as_bytes(), "m")
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(q.grade("q", "d"), Some(1));
    assert!(trec::qrels("q 0 d 1.5\n".as_bytes(), "m")
        .collect::<Result<Qrels, _>>()
        .is_err());
}

#[test]
fn formats_are_detected_from_names() {
    assert_eq!(
        Format::from_path(Path::new("x/corpus.jsonl.gz")).unwrap(),
        Format::Jsonl
    );
    assert_eq!(
        Format::from_path(Path::new("qrels.dev.tsv")).unwrap(),
        Format::Tsv
    );
    assert_eq!(
        Format::from_path(Path::new("2019qrels-pass.txt")).unwrap(),
        Format::Trec
    );
    assert_eq!(
        Format::from_path(Path::new("a.PARQUET")).unwrap(),
        Format::Parquet
    );
    assert!(Format::from_path(Path::new("a.csv")).is_err());
    assert!(matches!(
        formats::load_corpus(Path::new("/nonexistent/c.jsonl")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn collections_serialize_as_plain_lists() {
    let json = serde_json::to_string(&queries()).unwrap();
    assert_eq!(
        json,
        r#"[{"qid":"q1","text":"what is text"},{"qid":"q2","text":"title"}]"#
    );
    let back: Queries = serde_json::from_str(&json).unwrap();
    assert_eq!(back.get("q2").map(|q| q.text.as_str()), Some("title"));
    let q: Qrels = serde_json::from_str(&serde_json::to_string(&qrels()).unwrap()).unwrap();
    assert_eq!(q.relevant("q1").collect::<Vec<_>>(), ["d1"]);
}

#[test]
fn collection_dir_reads_the_shipped_layout_and_names_missing_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/wiki-genir-mini");
    let c = genir_data::formats::load_collection_dir(&root).unwrap();
    let shipped = genir_data::shipped::load("wiki-genir-mini").unwrap();
    assert_eq!(c.corpus.len(), shipped.corpus.len());
    assert_eq!(c.split_names(), shipped.split_names());
    assert_eq!(
        c.split("test").unwrap().qrels.len(),
        shipped.split("test").unwrap().qrels.len()
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("corpus.jsonl"), dir.path().join("corpus.jsonl")).unwrap();
    std::fs::copy(
        root.join("queries.test.tsv"),
        dir.path().join("queries.test.tsv"),
    )
    .unwrap();
    let e = genir_data::formats::load_collection_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("queries.test.tsv") && e.contains("qrels.test"),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    let e = genir_data::formats::load_collection_dir(empty.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("corpus"), "{e}");
    // a name or a folder
    let by_dir = genir_data::shipped::load_name_or_dir(root.to_str().unwrap()).unwrap();
    assert_eq!(by_dir.corpus.len(), shipped.corpus.len());
    let by_name = genir_data::shipped::load_name_or_dir("wiki-genir-mini").unwrap();
    assert_eq!(by_name, shipped);
    let e = genir_data::shipped::load_name_or_dir("no-such-collection")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-collection") && e.contains("wiki-genir-mini"),
        "{e}"
    );
}

#[test]
fn a_collection_written_in_the_papers_layout_reads_back_the_same() {
    let c = genir_data::shipped::load("wiki-genir-mini").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = formats::save_json_array_collection(dir.path(), &c).unwrap();
    assert_eq!(files.len(), 1 + c.splits.len());
    // what the paper's code reads: arrays, numeric docids (the shipped ones are "0", "1", ...)
    let docs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("corpus.json")).unwrap()).unwrap();
    assert_eq!(docs[0]["id"], serde_json::json!(0));
    assert!(docs[0]["text"].is_string());
    let test: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("queries.test.json")).unwrap())
            .unwrap();
    assert!(test[0]["query"].is_string() && test[0]["relevant_docs"][0].is_number());
    let back = formats::load_collection_dir(dir.path()).unwrap();
    assert_eq!(back.corpus.len(), c.corpus.len());
    for d in c.corpus.iter() {
        let b = back.corpus.get(&d.docid).unwrap();
        assert_eq!((&b.title, &b.text), (&d.title, &d.text));
    }
    assert_eq!(back.split_names(), c.split_names());
    for (name, set) in &c.splits {
        let got = back.split(name).unwrap();
        assert_eq!(got.queries.len(), set.queries.len(), "{name}");
        for q in set.queries.iter() {
            assert_eq!(got.queries.get(&q.qid).unwrap().text, q.text);
            let rel = |s: &genir_data::QuerySet| {
                let mut v: Vec<String> = s.qrels.relevant(&q.qid).map(String::from).collect();
                v.sort();
                v
            };
            assert_eq!(rel(got), rel(set), "{name} {}", q.qid);
        }
    }
    // ids that are not canonical integers stay strings; grades order the relevant documents
    let odd = genir_data::Collection {
        name: "odd".into(),
        corpus: Corpus::new(vec![
            Document::new("007", "", "a"),
            Document::new("x-1", "", "b"),
        ]),
        splits: [(
            "train".to_string(),
            genir_data::QuerySet {
                queries: Queries::new(vec![Query::new("q", "text")]),
                qrels: Qrels::new(vec![
                    Qrel::new("q", "x-1", 1),
                    Qrel::new("q", "007", 3),
                    Qrel::new("q", "zzz", 0),
                ]),
            },
        )]
        .into_iter()
        .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    formats::save_json_array_collection(dir.path(), &odd).unwrap();
    let q: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("queries.train.json")).unwrap())
            .unwrap();
    assert_eq!(q[0]["relevant_docs"], serde_json::json!(["007", "x-1"]));
}

#[test]
fn collection_dir_reads_the_papers_json_arrays_with_inline_judgments() {
    // the layout of technion-cs-nlp/re-gen-ir: documents.json `[{"id", "text"}]` and queries
    // `[{"id", "query", "relevant_docs": [...]}]` (integer docids), renamed to genir's file names
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("corpus.json"),
        r#"  [{"id": -5462359833619124697, "text": "Every Light in the House is a song."},
             {"id": 17, "title": "Metanoia", "text": "A change of mind."}]"#,
    )
    .unwrap();
    std::fs::write(
        p.join("queries.train.json"),
        r#"[{"id": "Q-546", "query": "who sings every light in the house is on", "relevant_docs": [-5462359833619124697]},
            {"id": "Q-905", "query": "meaning of metanoia", "relevant_docs": [17, "-5462359833619124697"]}]"#,
    )
    .unwrap();
    // a split with its own qrels file keeps it
    std::fs::write(
        p.join("queries.test.json"),
        r#"[{"id": "t1", "text": "metanoia"}]"#,
    )
    .unwrap();
    std::fs::write(p.join("qrels.test.trec"), "t1 0 17 2\n").unwrap();
    let c = formats::load_collection_dir(p).unwrap();
    assert_eq!(c.corpus.len(), 2);
    assert_eq!(
        c.corpus.get("-5462359833619124697").unwrap().text,
        "Every Light in the House is a song."
    );
    assert_eq!(c.corpus.get("17").unwrap().title, "Metanoia");
    let train = c.split("train").unwrap();
    assert_eq!(
        train.queries.get("Q-546").unwrap().text,
        "who sings every light in the house is on"
    );
    let judged: Vec<(&str, &str, i32)> = train
        .qrels
        .iter()
        .map(|q| (q.qid.as_str(), q.docid.as_str(), q.grade))
        .collect();
    assert_eq!(
        judged,
        [
            ("Q-546", "-5462359833619124697", 1),
            ("Q-905", "17", 1),
            ("Q-905", "-5462359833619124697", 1)
        ]
    );
    let test = c.split("test").unwrap();
    assert_eq!(test.qrels.iter().next().unwrap().grade, 2);

    // errors name the file, the record and the field
    let bad = |name: &str, text: &str| {
        std::fs::write(p.join(name), text).unwrap();
        let e = formats::load_collection_dir(p).unwrap_err().to_string();
        std::fs::remove_file(p.join(name)).unwrap();
        e
    };
    std::fs::remove_file(p.join("queries.test.json")).unwrap();
    std::fs::remove_file(p.join("qrels.test.trec")).unwrap();
    let e = bad(
        "queries.dev.json",
        r#"[{"id": "d1", "query": "x", "relevant_docs": 17}]"#,
    );
    assert!(
        e.contains("queries.dev.json:1") && e.contains("relevant_docs") && e.contains("array"),
        "{e}"
    );
    let e = bad("queries.dev.json", r#"[{"id": "d1", "query": "x"}, 3]"#);
    assert!(
        e.contains("queries.dev.json:2") && e.contains("not a JSON object"),
        "{e}"
    );
    let e = bad(
        "queries.dev.json",
        r#"[{"id": "d1", "question": "x", "relevant_docs": [1]}]"#,
    );
    assert!(
        e.contains("queries.dev.json:1") && e.contains("`text`"),
        "{e}"
    );
    // no qrels file and no inline judgments
    let e = bad("queries.dev.json", r#"[{"id": "d1", "query": "x"}]"#);
    assert!(
        e.contains("queries.dev.json") && e.contains("no qrels.dev") && e.contains("relevant_docs"),
        "{e}"
    );
    let e = bad("queries.dev.json", "[{\"id\": \"d1\",");
    assert!(
        e.contains("queries.dev.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn a_tab_separated_qrels_line_with_a_spaced_column_is_an_error() {
    // Split on whitespace, `q1<TAB>doc one<TAB>1` used to read as qid q1, docid `one`, grade 1.
    let err = trec::qrels("q1\tdoc one\t1\n".as_bytes(), "m")
        .collect::<Result<Qrels, _>>()
        .unwrap_err();
    assert_eq!(parse_error(err), ("m".into(), 1, "<columns>".into()));
    let err = trec::qrels("q1\t\td1\t1\n".as_bytes(), "m")
        .collect::<Result<Qrels, _>>()
        .unwrap_err();
    assert_eq!(parse_error(err), ("m".into(), 1, "<columns>".into()));

    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "qrels.test.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tdoc one\t1\n",
    );
    let err = formats::load_qrels(&p).unwrap_err();
    assert!(err.to_string().contains("qrels.test.tsv:3:"), "{err}");

    // Whitespace-separated TREC qrels, tab-separated MS MARCO qrels and BEIR qrels still read.
    let q: Qrels = trec::qrels(
        "q1 0 d1 1\nq1  0 d2 2 \nq2\t0\td3\t3\t\nq3\td4\t1\n".as_bytes(),
        "m",
    )
    .collect::<Result<_, _>>()
    .unwrap();
    assert_eq!(q.len(), 4);
    assert_eq!(q.grade("q1", "d2"), Some(2));
    assert_eq!(q.grade("q2", "d3"), Some(3));
    assert_eq!(q.grade("q3", "d4"), Some(1));
}

#[test]
fn beir_qrels_take_exactly_three_columns() {
    use genir_data::registry::{read_qrels, SourceFormat};
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    );
    assert_eq!(read_qrels(&good, SourceFormat::BeirQrels).unwrap().len(), 1);
    for (name, body) in [
        ("four.tsv", "query-id\tcorpus-id\tscore\nq1\t0\td1\t1\n"),
        ("spaced.tsv", "query-id\tcorpus-id\tscore\nq1\tdoc one\t1\n"),
    ] {
        let p = write(dir.path(), name, body);
        let err = read_qrels(&p, SourceFormat::BeirQrels).unwrap_err();
        assert_eq!(parse_error(err), (name.into(), 2, "<columns>".into()));
    }
}

#[test]
fn read_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"d1\tfine\nd2\talso fine\n".to_vec();
    bytes.extend_from_slice(b"d3\tnot utf-8: \xff\n");
    let p = dir.path().join("corpus.tsv");
    std::fs::write(&p, &bytes).unwrap();
    let err = formats::load_corpus(&p).unwrap_err();
    assert!(
        matches!(&err, Error::ReadLine { line: 3, path, .. } if path == &p),
        "{err:?}"
    );
    assert!(err.to_string().contains("corpus.tsv line 3: "), "{err}");

    // A JSON array names the line of the bad bytes too.
    let p = dir.path().join("corpus.json");
    std::fs::write(&p, b"[\n{\"id\": \"1\", \"text\": \"\xff\"}\n]\n").unwrap();
    let err = formats::load_corpus(&p).unwrap_err();
    assert!(matches!(err, Error::ReadLine { line: 2, .. }), "{err:?}");
}

#[test]
fn a_json_array_after_a_byte_order_mark_is_read_as_an_array() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "corpus.json",
        "\u{feff} [{\"id\": 1, \"text\": \"one\"}, {\"id\": \"2\", \"text\": \"two\"}]\n",
    );
    assert!(jsonl::is_array(&p).unwrap());
    let corpus = formats::load_corpus(&p).unwrap();
    assert_eq!(corpus.get("2").unwrap().text, "two");
    assert_eq!(corpus.len(), 2);
}

#[test]
fn gz_is_recognised_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("corpus.jsonl.GZ");
    formats::save_corpus(&p, &corpus()).unwrap();
    // written compressed (gzip magic), and read back decompressed
    assert_eq!(std::fs::read(&p).unwrap()[..2], [0x1f, 0x8b]);
    assert_eq!(formats::load_corpus(&p).unwrap(), corpus());

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"q1\tone\n").unwrap();
    let p = dir.path().join("queries.test.TSV.Gz");
    std::fs::write(&p, gz.finish().unwrap()).unwrap();
    assert_eq!(
        formats::load_queries(&p).unwrap().get("q1").unwrap().text,
        "one"
    );
}
