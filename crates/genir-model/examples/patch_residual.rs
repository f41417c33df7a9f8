//! Activation patching in a few lines: cache a clean run, patch its last decoder residual stream into a
//! corrupted run, and compare the logits. `cargo run --release -p genir-model --example patch_residual`

use burn::prelude::*;
use genir_model::hooks::{HookFilter, HookPoint, Hooks, Selection};
use genir_model::t5::{Seq2SeqInput, T5Model};
use genir_model::tokenizer::TextTokenizer;

fn main() -> Result<(), genir_model::ModelError> {
    let device = Device::flex();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5/relu-tied");
    let model = T5Model::from_pretrained(&dir, &device)?;
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), model.config.vocab_size)?;
    let clean = Seq2SeqInput::from_ids(
        &[tok.encode("The quick brown fox.")?],
        &[vec![0]],
        0,
        &device,
    )?;
    let corrupt =
        Seq2SeqInput::from_ids(&[tok.encode("The slow red fox.")?], &[vec![0]], 0, &device)?;

    let (clean_logits, cache) = model.run_with_cache(&clean, HookFilter::all())?;
    let corrupt_logits = model.forward(&corrupt, &mut Hooks::none())?;
    let point: HookPoint = "decoder.blocks.2.hook_resid_post".parse()?;
    let mut hooks = Hooks::none().patch_from(&cache, point, Selection::all())?;
    let patched = model.forward(&corrupt, &mut hooks)?;

    let diff =
        |a: &Tensor<3>, b: &Tensor<3>| (a.clone() - b.clone()).abs().max().into_scalar::<f32>();
    println!("cached {} hook points", cache.len());
    println!(
        "clean vs corrupted:           max |diff| = {:.4}",
        diff(&clean_logits, &corrupt_logits)
    );
    println!(
        "clean vs patched at {point}: max |diff| = {:.2e}",
        diff(&clean_logits, &patched)
    );
    Ok(())
}
