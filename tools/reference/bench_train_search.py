#!/usr/bin/env python3
"""PyTorch + HF transformers baseline for crates/genir-train/benches/train_search.rs, same shapes:

- training: T5 (d_model 256, d_ff 1024, 4+4 layers, 4 heads, ReLU, tied head) with a vocabulary of 9,000 text
  tokens + 2,000 atomic docid tokens; batch 32 x 64 source tokens, one docid token; AdamW (lr 1e-3, wd 0.01),
  gradient clipping at 1.0; examples/s over 10 timed steps after 2 warm-ups.
- constrained search, atomic docids: 64 queries x 16 tokens, top 10 of 2,000 docids; HF generate with
  num_beams=10, num_return_sequences=10, max_new_tokens=1 and prefix_allowed_tokens_fn (the usual DSI code).
- constrained search, multi-token docids: 2,000 semantic-style ids of 3 tokens (10 x 10 x 20) + </s>, a prefix
  trie through prefix_allowed_tokens_fn, num_beams=10, top 10.

Run by hand in the reference venv (prints one JSON line):
  /path/to/venv/bin/python tools/reference/bench_train_search.py
GENIR_TORCH_DEVICE=cuda runs it on the GPU instead (synchronised before each clock read).
"""
import os
import json
import statistics
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

torch.manual_seed(0)
TEXT, DOCS, B, S = 9000, 2000, 32, 64
cfg = T5Config(vocab_size=TEXT + DOCS, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4,
               num_heads=4, feed_forward_proj="relu", dropout_rate=0.0, tie_word_embeddings=True,
               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
dev = torch.device(os.environ.get("GENIR_TORCH_DEVICE", "cpu"))
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
model = T5ForConditionalGeneration(cfg).to(dev)
ids = (torch.arange(B * S) * 7919 % 8990 + 3).reshape(B, S).to(dev)
mask = torch.ones_like(ids)
labels = (TEXT + torch.arange(B) * 61 % DOCS).reshape(B, 1).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
model.train()
times = []
for i in range(12):
    t0 = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sync()
    if i >= 2:
        times.append(time.perf_counter() - t0)
train_eps = B / statistics.median(times)

model.eval()
Q, QL = 64, 16
q = (torch.arange(Q * QL) * 104729 % 8990 + 3).reshape(Q, QL).to(dev)
qm = torch.ones_like(q)
docid_tokens = list(range(TEXT, TEXT + DOCS))

def atomic_allowed(batch_id, prefix):
    return docid_tokens

def timed(fn, reps=3):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

with torch.inference_mode():
    atomic_s = timed(lambda: model.generate(input_ids=q, attention_mask=qm, num_beams=10, num_return_sequences=10,
                                            max_new_tokens=1, prefix_allowed_tokens_fn=atomic_allowed,
                                            do_sample=False, early_stopping=True))
# multi-token ids: 10 x 10 x 20 = 2000 codes over 20 shared docid tokens, then </s>
trie = {}
for d in range(DOCS):
    code = [d // 200, (d // 20) % 10, d % 20]
    node = trie
    for t in [TEXT + c for c in code] + [1]:
        node = node.setdefault(t, {})

def trie_allowed(batch_id, prefix):
    node = trie
    for t in prefix.tolist()[1:]:
        node = node.get(t)
        if node is None:
            return [0]
    return list(node.keys()) or [0]

with torch.inference_mode():
    multi_s = timed(lambda: model.generate(input_ids=q, attention_mask=qm, num_beams=10, num_return_sequences=10,
                                           max_new_tokens=5, prefix_allowed_tokens_fn=trie_allowed,
                                           do_sample=False, early_stopping=True), reps=2)
print(json.dumps({"torch": torch.__version__, "device": str(dev), "threads": torch.get_num_threads(),
                  "train_examples_per_s": train_eps, "train_step_ms": 1000 * statistics.median(times),
                  "atomic_search_queries_per_s": Q / atomic_s, "multi_search_queries_per_s": Q / multi_s}))
