//! Bi-encoder (`Dot`) and cross-encoder (`Cat`) scores on the test fixtures, and one patching experiment.
//! Run: `cargo run --release -p genir-model --example retrieval`

use burn::prelude::*;
use genir_model::bert::{Cat, Dot};
use genir_model::hooks::{HookFilter, HookPoint, Hooks, Intervention, Selection};

fn main() -> Result<(), genir_model::ModelError> {
    let device = Device::flex();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert");
    let (query, doc) = ("open file", "Open file and return a stream.");

    // Bi-encoder from a sentence-transformers folder (modules.json: mean pooling + Normalize; cosine).
    let dot = Dot::from_pretrained(&fixtures.join("bert-dot-bin"), &device)?;
    let emb = dot.embed(&[query, doc], &mut Hooks::none())?; // [2, hidden]
    println!(
        "Dot: embeddings {:?}, score {:.4}",
        emb.dims(),
        dot.score(query, doc, &mut Hooks::none())?
    );
    // `score` runs [query; doc] as one batch: ablate the document's (row 1) last MLP output only.
    let mlp: HookPoint = "encoder.blocks.1.hook_mlp_out".parse()?;
    let mut hooks = Hooks::none().with(mlp, Intervention::Zero(Selection::batch(vec![1])));
    println!(
        "Dot: score with the document's last MLP ablated {:.4}",
        dot.score(query, doc, &mut hooks)?
    );

    // Cross-encoder (BertForSequenceClassification): `[CLS] q [SEP] d [SEP]`, relevance = the logit.
    let cat = Cat::from_pretrained(&fixtures.join("bert-cat"), &device)?;
    let pairs = [(query, doc), (query, "The quick fox.")];
    println!(
        "Cat: scores {:?}",
        cat.score_batch(&pairs, &mut Hooks::none())?
    );
    // Patch the first pair's CLS state after the last block into the second pair's run: the head reads only that
    // state, so the second run now scores like the first. The runs have different lengths, so a patch from the
    // cache (which needs equal shapes) becomes a custom hook that replaces position 0.
    let clean = cat.encode_pairs(&pairs[..1])?;
    let last = cat.encoder.depth() - 1;
    let point: HookPoint = format!("encoder.blocks.{last}.hook_resid_post").parse()?;
    let (_, cache) = cat
        .encoder
        .run_with_cache(&clean, HookFilter::points(&[point]))?;
    let clean_act = cache.require(&point)?.rank3(&point)?;
    let hidden = clean_act.dims()[2];
    let cls = clean_act.slice([0..1, 0..1, 0..hidden]);
    let mut hooks = Hooks::none().with(
        point,
        Intervention::Custom(Box::new(move |_, act| {
            let x = act.rank3(&point)?;
            let [b, s, h] = x.dims();
            let rest = x.slice([0..b, 1..s, 0..h]);
            Ok(genir_model::hooks::Activation::Rank3(Tensor::cat(
                vec![cls.clone(), rest],
                1,
            )))
        })),
    );
    let patched = cat.score_batch(&pairs[1..], &mut hooks)?[0];
    println!("Cat: second pair with the first pair's final CLS state: {patched:.4}");
    Ok(())
}
