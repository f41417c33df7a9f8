//! Initialises small random T5 models in genir, saves them in Hugging Face layout with genir's logits on a
//! fixed batch, for `tools/reference/check_hf_export.py` to open with transformers and compare.
//!
//! `cargo run --release -p genir-model --example export_for_hf -- OUT_DIR`

use std::collections::BTreeMap;

use burn::prelude::*;
use genir_model::hooks::Hooks;
use genir_model::t5::{Seq2SeqInput, T5Config, T5Model};
use genir_model::weights::{write_safetensors, HostTensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: export_for_hf OUT_DIR")?,
    );
    let device = Device::flex();
    for (name, gated, tied) in [("relu-tied", false, true), ("gated-untied", true, false)] {
        let mut config = T5Config::small(120, 32, 64, 2, 4);
        config.num_decoder_layers = Some(3);
        config.dropout_rate = 0.0;
        if gated {
            config.feed_forward_proj = "gated-gelu".into();
        }
        config.tie_word_embeddings = Some(tied);
        let model = T5Model::init(config, 42, &device)?;
        let dir = out.join(name);
        model.save_pretrained(&dir)?;
        let sources = vec![vec![5u32, 17, 33, 8, 1], vec![9, 4, 1]];
        let decoder = vec![vec![0u32, 7, 3, 11], vec![0, 2, 2, 90]];
        let input = Seq2SeqInput::from_ids(&sources, &decoder, 0, &device)?;
        let logits = model.forward(&input, &mut Hooks::none())?;
        let dims = logits.dims().to_vec();
        let values = logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let mut t = BTreeMap::new();
        t.insert("logits".to_string(), HostTensor::new(dims, values));
        write_safetensors(&dir.join("genir_logits.safetensors"), &t, None)?;
        println!("saved {}", dir.display());
    }
    Ok(())
}
