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
