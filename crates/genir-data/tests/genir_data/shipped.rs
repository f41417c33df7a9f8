use std::path::PathBuf;

use genir_data::shipped;
use genir_data::Error;

fn counts(name: &str) -> serde_json::Value {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../data/{name}/counts.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn shipped_collections_match_their_counts_and_are_consistent() {
    for name in shipped::names() {
        let c = shipped::load(name).unwrap();
        let expected = counts(name);
        assert_eq!(
            c.corpus.len() as u64,
            expected["documents"].as_u64().unwrap(),
            "{name}"
        );
        let words: usize = c
            .corpus
            .iter()
            .map(|d| d.text.split_whitespace().count())
            .sum();
        assert_eq!(words as u64, expected["words"].as_u64().unwrap(), "{name}");
        assert_eq!(c.split_names(), ["test", "train", "validation"]);
        for (split, set) in &c.splits {
            assert_eq!(
                set.queries.len() as u64,
                expected[split]["queries"].as_u64().unwrap()
            );
            assert_eq!(
                set.qrels.len() as u64,
                expected[split]["qrels"].as_u64().unwrap()
            );
        }
        let report = c.validate();
        assert!(report.is_clean(), "{name}: {report}");
    }
}

#[test]
fn default_collection_is_sized_for_cpu_training() {
    let c = shipped::load_default().unwrap();
    assert_eq!(c.name, shipped::DEFAULT);
    assert!(
        (1000..=3000).contains(&c.corpus.len()),
        "{}",
        c.corpus.len()
    );
    let lengths: Vec<usize> = c
        .corpus
        .iter()
        .map(|d| d.text.split_whitespace().count())
        .collect();
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
    assert!((60.0..=130.0).contains(&mean), "mean passage length {mean}");
    let mini = shipped::load("wiki-genir-mini").unwrap();
    assert!(mini.corpus.len() <= 200 && mini.corpus.len() >= 100);
    for d in &mini.corpus {
        assert_eq!(
            c.corpus.get(&d.docid),
            Some(d),
            "mini is a subset of the full collection"
        );
    }
}

#[test]
fn inverse_cloze_queries_are_removed_from_their_passage() {
    let c = shipped::load_default().unwrap();
    let mut ict = 0;
    let mut title = 0;
    for set in c.splits.values() {
        for q in &set.queries {
            let relevant: Vec<&str> = set.qrels.relevant(&q.qid).collect();
            if q.qid.starts_with("ict-") {
                ict += 1;
                assert_eq!(relevant.len(), 1, "{}", q.qid);
                let doc = c.corpus.get(relevant[0]).unwrap();
                assert_eq!(q.qid, format!("ict-{}", doc.docid));
                assert!(
                    !doc.text.contains(&q.text),
                    "{}: query sentence still in the passage",
                    q.qid
                );
                assert!(q.text.split_whitespace().count() >= 6);
            } else {
                assert!(q.qid.starts_with("title-"), "{}", q.qid);
                title += 1;
                assert!(!relevant.is_empty());
                for d in relevant {
                    assert_eq!(c.corpus.get(d).unwrap().title, q.text);
                }
            }
        }
    }
    assert!(ict > 1000 && title > 50, "ict {ict}, title {title}");
}

#[test]
fn unknown_shipped_name_is_an_error() {
    assert!(matches!(
        shipped::load("wiki"),
        Err(Error::UnknownDataset { .. })
    ));
}
