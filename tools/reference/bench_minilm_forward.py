"""Times one plain forward pass of all-MiniLM-L6-v2 (transformers AutoModel, PyTorch, 2 threads) on 16 random
documents of 112 tokens: the unit MechIR repeats per patched cell, against genir's
`cargo bench --workspace --bench patching -- forward` (`Dot::embed` of the 16 bench documents, same shape).

Usage (from the repository root, on an otherwise idle machine):
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/bench_minilm_forward.py [MINILM_DIR]
"""

import json
import statistics
import sys
import time

import torch
from transformers import AutoModel

torch.set_num_threads(2)
path = sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2"
model = AutoModel.from_pretrained(path).eval()
gen = torch.Generator().manual_seed(0)
ids = torch.randint(1000, 20000, (16, 112), generator=gen)
mask = torch.ones_like(ids)
with torch.inference_mode():
    for _ in range(3):
        model(input_ids=ids, attention_mask=mask)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        times.append(time.perf_counter() - t)
print(json.dumps({"torch": torch.__version__, "threads": 2, "median_ms": statistics.median(times) * 1e3}))
