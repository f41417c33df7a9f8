use genir_data::perturb::{
    self, tokenize, Chain, CorpusStats, Delete, Inject, Perturbation, Position, Replace,
    Replacement, Shuffle, Targets,
};
use genir_data::{shipped, Corpus, Document};

fn corpus() -> Corpus {
    Corpus::new(vec![
        Document::new("d1", "Cats", "The cat sat on the mat."),
        Document::new("d2", "", "The dog chased the cat, twice!"),
        Document::new("d3", "", "A dog and a bird."),
    ])
}

#[test]
fn tokenizer_lowercases_and_splits_on_non_alphanumerics() {
    assert_eq!(
        tokenize("Hello, World! it's 2024—Ünïcode"),
        ["hello", "world", "it", "s", "2024", "ünïcode"]
    );
    assert!(tokenize(" ,;! ").is_empty());
}

#[test]
fn stats_count_documents_once() {
    let s = CorpusStats::compute(&corpus());
    assert_eq!(s.n_docs(), 3);
    assert_eq!(s.df("the"), 2, "counted once per document");
    assert_eq!(s.df("cats"), 1, "titles count");
    assert_eq!(s.df("zebra"), 0);
    assert!(s.idf("bird") > s.idf("dog"));
    assert_eq!(s.idf("dog"), s.idf("the"), "same df, same idf");
    assert!(s.idf("zebra") > s.idf("bird"));
    let expected = (1.0_f64 + (3.0 - 2.0 + 0.5) / (2.0 + 0.5)).ln();
    assert!((s.idf("the") - expected).abs() < 1e-12);
    assert!((s.mean_length() - 6.0).abs() < 1e-12);
}

#[test]
fn tfc1_and_tdc_append_the_documented_term() {
    let c = corpus();
    let s = CorpusStats::compute(&c);
    let d1 = c.get("d1").unwrap();
    let tfc1 = perturb::tfc1();
    assert_eq!(tfc1.name(), "tfc1");
    // the term as the query writes it (MechIR appends the query's own token; cased models tell them apart)
    assert_eq!(
        tfc1.apply("The Bird", d1, &s).text,
        "The cat sat on the mat. The"
    );
    let tdc = perturb::append_most_discriminative();
    assert_eq!(tdc.name(), "tdc");
    assert_eq!(
        tdc.apply("the bird dog", d1, &s).text,
        "The cat sat on the mat. bird"
    );
    // chosen by the lowercase term's IDF, appended as written
    assert_eq!(
        tdc.apply("THE Bird dog", d1, &s).text,
        "The cat sat on the mat. Bird"
    );
    assert_eq!(tdc.apply("", d1, &s), d1.clone());
    let out = tdc.apply("dog", d1, &s);
    assert_eq!((out.docid.as_str(), out.title.as_str()), ("d1", "Cats"));
}

#[test]
fn tfc1_random_draws_a_distinct_query_term_per_query_and_document() {
    let c = corpus();
    let s = CorpusStats::compute(&c);
    let d1 = c.get("d1").unwrap();
    let p = perturb::tfc1_random(7);
    assert_eq!(p.name(), "tfc1(random, seed=7)");
    let query = "cat cat Dog bird";
    let appended = |p: &perturb::AppendQueryTerm, d: &Document| {
        let out = p.apply(query, d, &s).text;
        out.strip_prefix(&format!("{} ", d.text))
            .unwrap()
            .to_string()
    };
    // the same draw every time, one of the query's terms as written
    let first = appended(&p, d1);
    assert_eq!(appended(&p, d1), first);
    assert!(["cat", "Dog", "bird"].contains(&first.as_str()), "{first}");
    // over seeds every distinct term comes up, each about a third of the time ("cat" is not counted twice)
    let mut counts = std::collections::HashMap::new();
    for seed in 0..300 {
        *counts
            .entry(appended(&perturb::tfc1_random(seed), d1))
            .or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| (60..=140).contains(&n)),
        "{counts:?}"
    );
    // other documents get their own draws
    let draws: std::collections::HashSet<String> = (0..30)
        .map(|i| appended(&p, &Document::new(format!("x{i}"), "", "text")))
        .collect();
    assert!(draws.len() > 1);
    assert_eq!(p.apply("", d1, &s), d1.clone());
}

#[test]
fn a_nan_fraction_targets_nothing() {
    let c = corpus();
    let s = CorpusStats::compute(&c);
    let d1 = c.get("d1").unwrap();
    let del = Delete {
        targets: Targets::Random {
            fraction: f64::NAN,
            seed: 1,
        },
    };
    assert_eq!(del.apply("", d1, &s).text, d1.text);
}

#[test]
fn delete_and_replace_work_on_terms_and_keep_punctuation() {
    let c = corpus();
    let s = CorpusStats::compute(&c);
    let d2 = c.get("d2").unwrap();
    let del = Delete {
        targets: Targets::QueryTerms,
    };
    assert_eq!(del.apply("CAT dog", d2, &s).text, "The chased the, twice!");
    let rep = Replace {
        targets: Targets::Terms(vec!["the".into()]),
        with: Replacement::Word("a".into()),
    };
    assert_eq!(rep.apply("", d2, &s).text, "a dog chased a cat, twice!");
    let random = Replace {
        targets: Targets::Random {
            fraction: 1.0,
            seed: 5,
        },
        with: Replacement::RandomVocabulary { seed: 5 },
    };
    let out = random.apply("", d2, &s);
    let vocab = s.vocabulary();
    for t in tokenize(&out.text) {
        assert!(vocab.contains(&t.as_str()), "{t}");
    }
    assert_eq!(out, random.apply("", d2, &s), "seeded");
    let none = Delete {
        targets: Targets::Random {
            fraction: 0.0,
            seed: 1,
        },
    };
    assert_eq!(none.apply("", d2, &s).text, d2.text);
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let wiki = shipped::load("wiki-genir-mini").unwrap();
    let s = CorpusStats::compute(&wiki.corpus);
    let d = &wiki.corpus.as_slice()[0];
    let a = Shuffle { seed: 1 }.apply("", d, &s);
    assert_eq!(a, Shuffle { seed: 1 }.apply("", d, &s));
    assert_ne!(a.text, Shuffle { seed: 2 }.apply("", d, &s).text);
    assert_ne!(a.text, d.text);
    let mut x: Vec<&str> = a.text.split_whitespace().collect();
    let mut y: Vec<&str> = d.text.split_whitespace().collect();
    x.sort_unstable();
    y.sort_unstable();
    assert_eq!(x, y);
}

#[test]
fn inject_at_positions_and_combinators() {
    let c = corpus();
    let s = CorpusStats::compute(&c);
    let d3 = c.get("d3").unwrap();
    let at = |position| {
        Inject {
            text: "[{query}]".into(),
            position,
        }
        .apply("q", d3, &s)
        .text
    };
    assert_eq!(at(Position::Start), "[q] A dog and a bird.");
    assert_eq!(at(Position::End), "A dog and a bird. [q]");
    assert_eq!(at(Position::Word(2)), "A dog [q] and a bird.");
    assert_eq!(at(Position::Word(99)), "A dog and a bird. [q]");
    assert_eq!(at(Position::Fraction(0.4)), "A dog [q] and a bird.");

    let upper = perturb::from_fn("upper", |_q: &str, d: &Document, _s: &CorpusStats| {
        Document {
            text: d.text.to_uppercase(),
            ..d.clone()
        }
    });
    let chain = Chain::new().then(perturb::tfc1()).then(upper);
    assert_eq!(chain.name(), "tfc1 + upper");
    assert_eq!(chain.apply("bird", d3, &s).text, "A DOG AND A BIRD. BIRD");
    assert_eq!(Chain::new().apply("x", d3, &s), d3.clone());
    let boxed: Vec<Box<dyn Perturbation>> =
        vec![Box::new(perturb::tfc1()), Box::new(Shuffle { seed: 0 })];
    assert_eq!(
        boxed[0].apply("bird", d3, &s).text,
        "A dog and a bird. bird"
    );
}

#[test]
fn deleting_words_leaves_single_spaces() {
    let c = Corpus::new(vec![Document::new("d", "", "Dog and cat and dog")]);
    let s = CorpusStats::compute(&c);
    let del = Delete {
        targets: Targets::Terms(vec!["dog".into()]),
    };
    assert_eq!(del.apply("", c.get("d").unwrap(), &s).text, "and cat and");
    let del = Delete {
        targets: Targets::QueryTerms,
    };
    assert_eq!(
        del.apply("and", c.get("d").unwrap(), &s).text,
        "Dog cat dog"
    );
}

#[test]
fn corpus_caches_its_stats_until_it_changes() {
    let mut c = corpus();
    let a = c.stats();
    let b = c.stats();
    assert!(std::sync::Arc::ptr_eq(&a, &b), "computed once");
    assert_eq!(*a, CorpusStats::compute(&c));
    let clone = c.clone();
    assert!(
        std::sync::Arc::ptr_eq(&clone.stats(), &a),
        "shared by clones"
    );
    c.push(Document::new("d4", "", "zebra"));
    assert_eq!(c.stats().n_docs(), 4, "recomputed after a change");
    assert_eq!(c.stats().df("zebra"), 1);
    assert_eq!(clone.stats().n_docs(), 3);
}

#[test]
fn tokenize_is_stable_on_its_own_terms() {
    // Lowercasing `İ` (U+0130) adds a combining dot, which is not alphanumeric.
    assert_eq!(tokenize("İzmir"), ["izmir"]);
    for text in [
        "İzmir İSTANBUL",
        "Hello, World! it's 2024—Ünïcode",
        "ΟΔΟΣ.ΑΒ Σ ΣΑΣ",
        "Straße ǅemal ﬁne",
    ] {
        for term in tokenize(text) {
            assert_eq!(tokenize(&term), std::slice::from_ref(&term), "{text:?}");
        }
    }
    // Greek final sigma is decided per term, as before.
    assert_eq!(tokenize("ΟΔΟΣ.ΑΒ"), ["οδος", "αβ"]);
    // Deleting a query term finds it in the document however it is cased.
    let doc = Document::new("d", "", "İzmir is in Türkiye.");
    let del = Delete {
        targets: Targets::QueryTerms,
    };
    let stats = CorpusStats::default();
    assert_eq!(del.apply("izmir", &doc, &stats).text, "is in Türkiye.");
}
