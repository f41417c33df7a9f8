#!/usr/bin/env python3
"""PyTorch baseline for genir-interp's criterion bench crates/genir-interp/benches/sweep.rs: an activation-patching
sweep over a T5 encoder-decoder, done the way TransformerLens's generic patching (and MechIR) do it: one full
forward pass (encoder and decoder both rerun) per patched cell, the whole batch of pairs patched at once through
PyTorch forward hooks.

Model: the T5 of bench_t5_forward.py (d_model 256, d_ff 1024, 4+4 layers, 4 heads, d_kv 64, vocabulary 9000,
ReLU, tied embeddings, dropout 0), random init with torch.manual_seed(0), f32 on CPU, eval(), inference_mode,
2 threads. Inputs: 8 pairs of clean / corrupted sources, random token ids in [100, 8900), 64 tokens, no padding;
one decoder position (the decoder start id 0, atomic docids). Metric per pair: logit difference at the decoder
position between docid 8950+i (clean) and 8900+i (corrupted), normalised (m - m_corr) / (m_clean - m_corr).

Timed sweep = one clean run caching every activation + one corrupted run + 117 patched forwards of batch 8:
  * 20 components: per decoder layer, resid_pre, self-attention out, cross-attention out, MLP out, resid_post;
  * 32 heads: per decoder layer, self- and cross-attention, 4 heads each (input columns of the `o` projection);
  * 64 encoder positions: the encoder output (after its final layer norm), one source position at a time;
  * 1 decoder final layer norm output.
Also timed on its own: the 12 decoder components (self-attention, cross-attention and MLP outputs x 4 layers,
one full forward each; the 12 patched forwards only, no caching run), the subset the model issue quotes (about 590 ms on this machine, with other builds running).
Prints progress lines, then one JSON line (last line; parsed like the other tools/reference/bench_*.py) with the
medians over --repeat runs (after one warm-up sweep), the FLOP of one forward and of the sweep, and GFLOP/s.

GENIR_TORCH_DEVICE=cuda runs it on the GPU instead (synchronised before each clock read).

Usage (from the repository root, on an otherwise idle machine):
  HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/bench_patching_sweep.py [--repeat N]
"""
import json
import os
import statistics
import sys
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

B, S, T = 8, 64, 1  # pairs, source tokens, decoder positions
D, DFF, LAYERS, HEADS, DKV, VOCAB = 256, 1024, 4, 4, 64, 9000

repeat = 3
if "--repeat" in sys.argv:
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1])

torch.manual_seed(0)
torch.set_num_threads(2)
cfg = T5Config(vocab_size=VOCAB, d_model=D, d_kv=DKV, d_ff=DFF, num_layers=LAYERS, num_decoder_layers=LAYERS,
               num_heads=HEADS, feed_forward_proj="relu", dropout_rate=0.0, tie_word_embeddings=True,
               decoder_start_token_id=0)
dev = torch.device(os.environ.get("GENIR_TORCH_DEVICE", "cpu"))
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
model = T5ForConditionalGeneration(cfg).eval().to(dev)
gen = torch.Generator().manual_seed(1234)
clean_ids = torch.randint(100, 8900, (B, S), generator=gen).to(dev)
corr_ids = torch.randint(100, 8900, (B, S), generator=gen).to(dev)
mask = torch.ones_like(clean_ids)
dec = torch.zeros(B, T, dtype=torch.long, device=dev)
rows = torch.arange(B, device=dev)
clean_tok = 8950 + rows
corr_tok = 8900 + rows
dec_blocks = model.decoder.block


def forward_flops(b, s, t):
    """Multiply-adds (2*m*n*k) of every matmul of one forward: encoder, decoder, LM head over the full vocabulary."""
    inner = HEADS * DKV
    mm = lambda m, n, k: 2 * m * n * k  # noqa: E731
    enc = (4 * mm(b * s, inner, D)  # q, k, v, o
           + 2 * mm(b * HEADS * s, s, DKV)  # scores, weighted values
           + 2 * mm(b * s, DFF, D))  # wi, wo
    dec_self = 4 * mm(b * t, inner, D) + 2 * mm(b * HEADS * t, t, DKV)
    dec_cross = 2 * mm(b * t, inner, D) + 2 * mm(b * s, inner, D) + 2 * mm(b * HEADS * t, s, DKV)
    dec_ff = 2 * mm(b * t, DFF, D)
    return LAYERS * enc + LAYERS * (dec_self + dec_cross + dec_ff) + mm(b * t, VOCAB, D)


def run(ids):
    return model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits


def logit_diff(logits):
    last = logits[:, -1, :]
    return last[rows, clean_tok] - last[rows, corr_tok]


# Sites: name -> (module, kind); kind "pre" caches/patches the module's first input, "out" its output (first
# element of a tuple output).
SITES = {}
for l, blk in enumerate(dec_blocks):
    SITES[f"dec{l}.resid_pre"] = (blk, "pre")
    SITES[f"dec{l}.self_attn_out"] = (blk.layer[0].SelfAttention, "out")
    SITES[f"dec{l}.cross_attn_out"] = (blk.layer[1].EncDecAttention, "out")
    SITES[f"dec{l}.mlp_out"] = (blk.layer[2].DenseReluDense, "out")
    SITES[f"dec{l}.resid_post"] = (blk, "out")
    SITES[f"dec{l}.self_attn_z"] = (blk.layer[0].SelfAttention.o, "pre")
    SITES[f"dec{l}.cross_attn_z"] = (blk.layer[1].EncDecAttention.o, "pre")
SITES["enc.final_norm"] = (model.encoder.final_layer_norm, "out")
SITES["dec.final_norm"] = (model.decoder.final_layer_norm, "out")


def first(x):
    return x[0] if isinstance(x, tuple) else x


def replace_first(x, new):
    return (new,) + tuple(x[1:]) if isinstance(x, tuple) else new


def patch(site, fn):
    """Registers a hook that replaces the site's activation `a` by fn(a) (fn sees the corrupted activation)."""
    module, kind = SITES[site]
    if kind == "pre":
        return module.register_forward_pre_hook(lambda m, args: (fn(args[0]),) + tuple(args[1:]))
    return module.register_forward_hook(lambda m, args, out: replace_first(out, fn(first(out))))


def clean_cached_run():
    cache, handles = {}, []
    for site, (module, kind) in SITES.items():
        if kind == "pre":
            handles.append(module.register_forward_pre_hook(lambda m, args, s=site: cache.__setitem__(s, args[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, a, out, s=site: cache.__setitem__(s, first(out))))
    try:
        ld = logit_diff(run(clean_ids))
    finally:
        for h in handles:
            h.remove()
    return cache, ld


def cells(cache):
    """(name, site, fn) for the 117 cells of the sweep, in order."""
    out = []
    for l in range(LAYERS):
        for c in ("resid_pre", "self_attn_out", "cross_attn_out", "mlp_out", "resid_post"):
            site = f"dec{l}.{c}"
            out.append((site, site, lambda a, s=site: cache[s]))
    for l in range(LAYERS):
        for c in ("self_attn_z", "cross_attn_z"):
            site = f"dec{l}.{c}"
            for h in range(HEADS):
                def fn(a, s=site, h=h):
                    a = a.clone()
                    a[..., h * DKV:(h + 1) * DKV] = cache[s][..., h * DKV:(h + 1) * DKV]
                    return a
                out.append((f"{site}.h{h}", site, fn))
    for p in range(S):
        def fn(a, p=p):
            a = a.clone()
            a[:, p, :] = cache["enc.final_norm"][:, p, :]
            return a
        out.append((f"enc.final_norm.pos{p}", "enc.final_norm", fn))
    out.append(("dec.final_norm", "dec.final_norm", lambda a: cache["dec.final_norm"]))
    return out


def patched_metric(site, fn, ld_clean, ld_corr):
    h = patch(site, fn)
    try:
        ld = logit_diff(run(corr_ids))
    finally:
        h.remove()
    return (ld - ld_corr) / (ld_clean - ld_corr)


def patch_cells(cache, ld_clean, ld_corr, only=None):
    """One full forward per cell (all cells, or those named in `only`); returns the (cells, pairs) metric."""
    todo = [c for c in cells(cache) if only is None or c[0] in only]
    return torch.stack([patched_metric(site, fn, ld_clean, ld_corr) for _, site, fn in todo]), [c[0] for c in todo]


def sweep():
    """Clean caching run + corrupted run + the 117 patched forwards."""
    cache, ld_clean = clean_cached_run()
    ld_corr = logit_diff(run(corr_ids))
    return patch_cells(cache, ld_clean, ld_corr)


def fail(msg):
    sys.exit(f"bench_patching_sweep.py: sanity check failed: {msg}")


COMPONENTS12 = {f"dec{l}.{c}" for l in range(LAYERS) for c in ("self_attn_out", "cross_attn_out", "mlp_out")}

with torch.inference_mode():
    # Sanity: the hooks really patch. Full patches of the last residual stream give 1, an identity patch gives 0.
    cache, ld_clean = clean_cached_run()
    ld_corr = logit_diff(run(corr_ids))
    if (ld_clean - ld_corr).abs().min() < 1e-3:
        fail(f"clean and corrupted logit differences too close to normalise: {ld_clean - ld_corr}")
    for site in (f"dec{LAYERS - 1}.resid_post", "dec.final_norm"):
        m = patched_metric(site, lambda a, s=site: cache[s], ld_clean, ld_corr)
        if (m - 1).abs().max() > 1e-4:
            fail(f"patching {site} with the clean run should give 1 for every pair, got {m.tolist()}")
    m = patched_metric("dec.final_norm", lambda a: a.clone(), ld_clean, ld_corr)
    if m.abs().max() > 1e-4:
        fail(f"an identity patch should give 0 for every pair, got {m.tolist()}")
    m = patched_metric(f"dec{LAYERS - 1}.mlp_out", lambda a: cache[f"dec{LAYERS - 1}.mlp_out"], ld_clean, ld_corr)
    if m.abs().max() < 1e-6:
        fail("patching the last decoder MLP output changed nothing: the hooks do not patch")
    print("sanity: resid_post of the last decoder layer and the decoder final norm give 1, no patch gives 0",
          flush=True)

    result, names = sweep()  # warm-up, and the cell count
    assert len(names) == 117, len(names)
    sweep_t, comp_t = [], []
    for r in range(repeat):
        t0 = time.perf_counter()
        result, _ = sweep()
        sync()
        sweep_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # the 12 patched forwards only (clean cache and baseline from the sanity runs)
        comp, comp_names = patch_cells(cache, ld_clean, ld_corr, only=COMPONENTS12)
        sync()
        comp_t.append(time.perf_counter() - t0)
        print(f"run {r + 1}/{repeat}: sweep of {len(names)} cells {1000 * sweep_t[-1]:.1f} ms, "
              f"12 decoder components {1000 * comp_t[-1]:.1f} ms", flush=True)
    assert len(comp_names) == 12, comp_names
    checksum = float(result.sum()) + float(comp.sum())

f1 = forward_flops(B, S, T)
forwards = len(names) + 2
med = statistics.median(sweep_t)
comp_forwards = 12
comp_med = statistics.median(comp_t)
print(json.dumps({"torch": torch.__version__, "device": str(dev), "threads": torch.get_num_threads(), "repeat": repeat,
                  "pairs": B, "src_len": S, "cells": len(names), "forwards": forwards,
                  "median_ms": 1000 * med, "mean_ms": 1000 * statistics.mean(sweep_t), "min_ms": 1000 * min(sweep_t),
                  "per_forward_ms": 1000 * med / forwards,
                  "components12_median_ms": 1000 * comp_med, "components12_min_ms": 1000 * min(comp_t),
                  "components12_forwards": comp_forwards,
                  "forward_gflop": f1 / 1e9, "sweep_gflop": forwards * f1 / 1e9,
                  "sweep_gflops": forwards * f1 / 1e9 / med, "components12_gflops": comp_forwards * f1 / 1e9 / comp_med,
                  "metric_checksum": checksum}))
