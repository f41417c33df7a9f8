use genir_data::formats::{cranfield, nq, open};
use genir_data::registry::{read_documents, read_qrels, read_queries, SourceFormat};
use genir_data::validate::validate;

use super::fixture;

#[test]
fn cranfield_files() {
    let docs = cranfield::documents(
        open(&fixture("cranfield/cran.all.1400")).unwrap(),
        "cran.all.1400",
    )
    .unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[1].docid, "2");
    assert_eq!(
        docs[1].title,
        "simple shear flow past a flat plate in an incompressible fluid of small viscosity ."
    );
    assert!(docs[1].text.starts_with("simple shear flow"));
    assert!(docs[1].text.ends_with("leading edge of the body ."));
    assert!(
        !docs[1].text.contains("rensselaer"),
        "the .B field is not text"
    );

    let queries = read_queries(
        &fixture("cranfield/cran.qry"),
        SourceFormat::CranfieldQueries,
    )
    .unwrap();
    // `.I 004` becomes query 3, as in cranqrel and ir_datasets.
    assert_eq!(queries.qids().collect::<Vec<_>>(), ["1", "2", "3"]);
    assert!(queries
        .get("3")
        .unwrap()
        .text
        .starts_with("what problems of heat conduction"));

    let raw = cranfield::qrels(open(&fixture("cranfield/cranqrel")).unwrap(), "cranqrel").unwrap();
    assert_eq!(
        raw.iter().map(|q| q.grade).collect::<Vec<_>>(),
        [2, 4, 1, -1, 3]
    );
    let corpus = read_documents(
        &fixture("cranfield/cran.all.1400"),
        SourceFormat::CranfieldDocuments,
    )
    .unwrap();
    let qrels = read_qrels(&fixture("cranfield/cranqrel"), SourceFormat::CranfieldQrels).unwrap();
    assert_eq!(
        qrels.iter().map(|q| q.grade).collect::<Vec<_>>(),
        [3, 1, 4, 0, 2]
    );
    assert!(validate(&corpus, &queries, &qrels).is_clean());
}

#[test]
fn cranfield_rejects_unknown_markers() {
    let err = cranfield::documents(".I 1\n.X\nfoo\n".as_bytes(), "bad").unwrap_err();
    assert!(err.to_string().contains("bad:2: field `.X`"), "{err}");
    let err = cranfield::documents(".I one\n.W\nfoo\n".as_bytes(), "bad").unwrap_err();
    assert!(err.to_string().contains("bad:1: field `.I`"), "{err}");
}

#[test]
fn beir_files() {
    let corpus = read_documents(
        &fixture("beir/scifact/corpus.jsonl"),
        SourceFormat::BeirCorpus,
    )
    .unwrap();
    assert_eq!(
        corpus.docids().collect::<Vec<_>>(),
        ["4983", "5836", "7912", "18670"]
    );
    assert_eq!(corpus.get("18670").unwrap().text, "");
    assert!(corpus
        .get("5836")
        .unwrap()
        .title
        .starts_with("Induction of myelodysplasia"));
    let queries = read_queries(
        &fixture("beir/scifact/queries.jsonl"),
        SourceFormat::BeirQueries,
    )
    .unwrap();
    assert_eq!(queries.len(), 4);
    let train = read_qrels(
        &fixture("beir/scifact/qrels/train.tsv"),
        SourceFormat::BeirQrels,
    )
    .unwrap();
    assert_eq!(train.len(), 3, "the header is not a judgment");
    assert_eq!(train.relevant("3").collect::<Vec<_>>(), ["7912", "18670"]);
    let report = validate(&corpus, &queries, &train);
    assert!(report.is_consistent());
    assert_eq!(report.unjudged_queries, ["1", "5"]);
}

#[test]
fn msmarco_files() {
    let corpus = read_documents(
        &fixture("msmarco/collection.tsv"),
        SourceFormat::TsvDocuments,
    )
    .unwrap();
    assert_eq!(corpus.len(), 4);
    assert!(corpus.get("7067032").unwrap().title.is_empty());
    let queries = read_queries(
        &fixture("msmarco/queries.dev.small.tsv"),
        SourceFormat::TsvQueries,
    )
    .unwrap();
    assert_eq!(
        queries.get("1048585").unwrap().text,
        "what is paula deen's brother"
    );
    let qrels = read_qrels(
        &fixture("msmarco/qrels.dev.small.tsv"),
        SourceFormat::TrecQrels,
    )
    .unwrap();
    assert!(validate(&corpus, &queries, &qrels).is_clean());

    let dl_queries = read_queries(
        &fixture("msmarco/msmarco-test2019-queries.tsv"),
        SourceFormat::TsvQueries,
    )
    .unwrap();
    let dl_qrels = read_qrels(
        &fixture("msmarco/2019qrels-pass.txt"),
        SourceFormat::TrecQrels,
    )
    .unwrap();
    assert_eq!(dl_qrels.grade("47923", "2"), Some(3));
    assert_eq!(dl_qrels.relevant("19335").collect::<Vec<_>>(), ["1"]);
    let report = validate(&corpus, &dl_queries, &dl_qrels);
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.unjudged_queries, ["87181"]);
}

#[test]
fn nq_raw_files_group_into_dsi_pages() {
    let mut b = nq::DsiBuilder::new(9);
    let train = fixture("nq/nq-train-sample.jsonl");
    let dev = fixture("nq/nq-dev-sample-simplified.jsonl");
    b.add(open(&train).unwrap(), &train, "train").unwrap();
    b.add(open(&dev).unwrap(), &dev, "test").unwrap();
    let c = b.finish("nq-fixture");
    // Two pages in train; the dev file repeats one of them (title from its URL) and adds one.
    assert_eq!(c.corpus.len(), 3);
    let trade = c.corpus.get("0").unwrap();
    assert_eq!(trade.title, "Trade winds");
    assert_eq!(
        trade.text,
        "Trade winds The trade winds are the prevailing pattern"
    );
    assert_eq!(
        c.corpus.get("1").unwrap().title,
        "The Walking Dead (season 8)"
    );
    assert_eq!(c.corpus.get("2").unwrap().title, "Batman: Arkham City");
    let train = c.split("train").unwrap();
    assert_eq!(train.queries.len(), 3);
    assert_eq!(
        train
            .qrels
            .relevant("5225754983651766092")
            .collect::<Vec<_>>(),
        ["0"]
    );
    assert_eq!(
        train
            .qrels
            .relevant("5076245402049986766")
            .collect::<Vec<_>>(),
        ["0"]
    );
    let test = c.split("test").unwrap();
    assert_eq!(
        test.qrels
            .relevant("797803103760793766")
            .collect::<Vec<_>>(),
        ["1"]
    );
    assert!(c.validate().is_clean(), "{}", c.validate());
}

#[test]
fn nq_reports_missing_fields() {
    let mut b = nq::DsiBuilder::new(8);
    let err = b
        .add(
            "{\"example_id\": 1, \"document_title\": \"t\", \"document_text\": \"x\"}\n".as_bytes(),
            "nq.jsonl",
            "train",
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("nq.jsonl:1: field `question_text`"),
        "{err}"
    );
}

#[test]
fn msmarco_passages_are_repaired_as_ir_datasets_does() {
    use genir_data::formats::tsv;
    // Lines and ir_datasets' FixEncoding output, by fixtures/msmarco/make_fix_encoding.py.
    let pairs: Vec<(String, String)> = serde_json::from_str(
        &std::fs::read_to_string(fixture("msmarco/fix_encoding.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        pairs[0],
        (
            "0\tThe donâ\u{80}\u{99}t of cafÃ©".to_string(),
            "0\tThe don’t of café".to_string()
        )
    );
    for (raw, fixed) in &pairs {
        assert_eq!(tsv::fix_msmarco_encoding(raw), fixed.as_str(), "{raw:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collection.tsv");
    let raw: String = pairs.iter().map(|(r, _)| format!("{r}\n")).collect();
    std::fs::write(&path, raw).unwrap();
    let corpus = read_documents(&path, SourceFormat::MsmarcoPassages).unwrap();
    assert_eq!(corpus.len(), pairs.len());
    for (doc, (_, fixed)) in corpus.iter().zip(&pairs) {
        assert_eq!(format!("{}\t{}", doc.docid, doc.text), *fixed);
    }
    // Plain TSV documents are read as they are.
    let plain = read_documents(&path, SourceFormat::TsvDocuments).unwrap();
    assert_eq!(
        plain.get("0").unwrap().text,
        "The donâ\u{80}\u{99}t of cafÃ©"
    );

    // The registered MS MARCO passage datasets repair their collection.
    let registry = genir_data::registry::Registry::builtin();
    for name in registry.names() {
        if let genir_data::registry::Layout::Files { corpus, .. } =
            &registry.get(name).unwrap().layout
        {
            let marco = name.starts_with("msmarco-passage/");
            assert_eq!(
                corpus.format == SourceFormat::MsmarcoPassages,
                marco,
                "{name}"
            );
        }
    }
}

#[test]
fn cranfield_and_nq_skip_a_byte_order_mark() {
    let docs = cranfield::documents("\u{feff}.I 1\n.T\nt\n.W\nw\n".as_bytes(), "cran").unwrap();
    assert_eq!(docs[0].docid, "1");
    let qrels = cranfield::qrels("\u{feff}1 2 3\n".as_bytes(), "cranqrel").unwrap();
    assert_eq!(qrels[0].qid, "1");
    let mut b = nq::DsiBuilder::new(8);
    b.add(
        "\u{feff}{\"example_id\": 1, \"question_text\": \"q\", \"document_title\": \"t\", \"document_text\": \"x\"}\n"
            .as_bytes(),
        "nq.jsonl",
        "train",
    )
    .unwrap();
    assert_eq!(b.finish("nq").corpus.len(), 1);
}

#[test]
fn cranfield_and_nq_read_errors_name_the_line() {
    let bad = b".I 1\n.W\nw\n\xff\n";
    let err = cranfield::documents(&bad[..], "cran.all.1400").unwrap_err();
    assert!(
        err.to_string().starts_with("cran.all.1400 line 4: "),
        "{err}"
    );
    let err = cranfield::qrels(&b"1 2 3\n1 3 \xff\n"[..], "cranqrel").unwrap_err();
    assert!(err.to_string().starts_with("cranqrel line 2: "), "{err}");
    let err = nq::DsiBuilder::new(8)
        .add(&b"\n\xff\n"[..], "nq.jsonl", "train")
        .unwrap_err();
    assert!(err.to_string().starts_with("nq.jsonl line 2: "), "{err}");
}
