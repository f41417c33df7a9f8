#!/usr/bin/env python3
"""Opens the folders written by `cargo run --release -p genir-model --example export_for_hf -- OUT` with
transformers' T5ForConditionalGeneration and checks that its logits equal genir's (max abs diff < 1e-4).
Run by hand in the reference venv: python tools/reference/check_hf_export.py OUT
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import T5ForConditionalGeneration

out = sys.argv[1]
ids = torch.tensor([[5, 17, 33, 8, 1], [9, 4, 1, 0, 0]])
mask = (torch.arange(5)[None, :] < torch.tensor([[5], [3]])).long()
dec = torch.tensor([[0, 7, 3, 11], [0, 2, 2, 90]])
for name in ("relu-tied", "gated-untied"):
    d = os.path.join(out, name)
    model = T5ForConditionalGeneration.from_pretrained(d).eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    want = load_file(os.path.join(d, "genir_logits.safetensors"))["logits"]
    diff = (logits - want).abs().max().item()
    print(f"{name}: tie_word_embeddings={model.config.tie_word_embeddings} max abs diff {diff:.2e}")
    assert diff < 1e-4, name
print("ok: transformers reproduces genir's logits on genir-saved models")
