#!/usr/bin/env python3
"""PyTorch baseline for crates/genir-model/benches/forward.rs: the same T5 (d_model 256, d_ff 1024, 4+4 layers,
4 heads, vocabulary 9000, ReLU, tied), batch 32 x 64 source tokens, one decoder step, f32 on CPU, no_grad.
Prints the median and mean of 20 timed runs after 3 warm-ups. Run by hand in the reference venv:
  /path/to/venv/bin/python tools/reference/bench_t5_forward.py
GENIR_TORCH_DEVICE=cuda runs it on the GPU instead (synchronised before each clock read), for the wgpu/cuda
comparison on a GPU machine.
"""
import os
import json
import statistics
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

torch.manual_seed(0)
torch.set_num_threads(torch.get_num_threads())
cfg = T5Config(vocab_size=9000, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=4,
               feed_forward_proj="relu", dropout_rate=0.0, tie_word_embeddings=True)
dev = torch.device(os.environ.get("GENIR_TORCH_DEVICE", "cpu"))
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
model = T5ForConditionalGeneration(cfg).eval().to(dev)
ids = (torch.arange(32 * 64) * 7919 % 8990 + 3).reshape(32, 64).to(dev)
mask = torch.ones_like(ids)
dec = torch.zeros(32, 1, dtype=torch.long, device=dev)
times = []
with torch.inference_mode():
    for i in range(23):
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t0)
print(json.dumps({"torch": torch.__version__, "device": str(dev), "threads": torch.get_num_threads(),
                  "median_ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.mean(times),
                  "min_ms": 1000 * min(times)}))
