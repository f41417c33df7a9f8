"""The paper's analyses (technion-cs-nlp/re-gen-ir) as TransformerLens computes them on a DSI checkpoint, shared by
make_tl_interp_fixture.py (the committed fixture of genir-interp's test) and check_paper_lens.py (by-hand checks
of exported models). Written here, not copied from the paper's code. Every run reads the first decoder position
(decoder input [[0]], as the paper).
"""
import torch
from transformer_lens import HookedEncoderDecoder
from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

torch.set_grad_enabled(False)
START = torch.tensor([[0]])
# genir's logit-lens component names -> TransformerLens decoder hooks
LENS = {"resid_pre": "hook_resid_pre", "self_attn_out": "hook_attn_out", "resid_mid": "hook_resid_mid",
        "cross_attn_out": "hook_cross_attn_out", "resid_mid_cross": "hook_resid_mid_cross",
        "mlp_out": "hook_mlp_out", "resid_post": "hook_resid_post"}
# genir's contribution components -> TransformerLens decoder hooks
PARTS = {"self_attn": "hook_attn_out", "cross_attn": "hook_cross_attn_out", "mlp": "hook_mlp_out"}
# genir's ablatable decoder hook points -> TransformerLens decoder hooks
ABLATABLE = {"hook_self_attn_out": "hook_attn_out", "hook_cross_attn_out": "hook_cross_attn_out",
             "hook_mlp_out": "hook_mlp_out"}


def load(folder, hf_model):
    """HookedEncoderDecoder of a local folder (the paper's way: TransformerLens loads only names it knows)."""
    OFFICIAL_MODEL_NAMES.append(folder)
    return HookedEncoderDecoder.from_pretrained(folder, hf_model=hf_model, device="cpu")


def first(t):
    """The first decoder position of a cached activation or logits, batch dimension removed or not."""
    return t.reshape(-1, t.shape[-1])[0]


def lens_rank(tl, cache, layer, hook, target):
    """Rank (1 = top) of token `target` in the full-vocabulary logits of a decoder hook read through the final
    norm (times d_model^-0.5 for a tied head) and the unembedding."""
    x = tl.decoder_final_ln(cache[f"decoder.{layer}.{hook}"])
    if tl.cfg.tie_word_embeddings:
        x = x * tl.cfg.d_model ** -0.5
    logits = tl.unembed(x)[0]
    return int((logits > logits[target]).sum()) + 1


def measures(cache, layer, hook):
    """A component's length, its ratio to the layer's residual change and its cosine with resid_post."""
    post = cache[f"decoder.{layer}.hook_resid_post"][0]
    delta = post - cache[f"decoder.{layer}.hook_resid_pre"][0]
    v = cache[f"decoder.{layer}.{hook}"][0]
    return {
        "norm": torch.linalg.norm(v).item(),
        "ratio_to_delta": (torch.linalg.norm(v) / torch.linalg.norm(delta)).item(),
        "cos_resid_post": torch.cosine_similarity(v, post, dim=-1).item(),
    }


def mean_outputs(tl, inputs):
    """Each ablatable decoder output's mean over the encoded `inputs` at the first decoder position (f64)."""
    means = {}
    for ids in inputs:
        _, cache = tl.run_with_cache(ids, START, remove_batch_dim=True)
        for layer in range(tl.cfg.n_layers):
            for hook in ABLATABLE.values():
                name = f"decoder.{layer}.{hook}"
                means[name] = means.get(name, 0) + first(cache[name]).double() / len(inputs)
    return means


def ablation_hooks(points, mode, means):
    """TransformerLens hooks putting zeros (mode "zero") or the mean output ("mean") at genir hook points
    `decoder.blocks.<l>.<hook>`."""
    hooks = []
    for p in points:
        parts = p.split(".")
        if len(parts) != 4 or parts[:2] != ["decoder", "blocks"] or parts[3] not in ABLATABLE:
            raise ValueError(f"ablation point {p} has no TransformerLens counterpart here")
        name = f"decoder.{parts[2]}.{ABLATABLE[parts[3]]}"
        if mode == "zero":
            hooks.append((name, lambda act, hook: torch.zeros_like(act)))
        else:
            value = means[name]
            hooks.append((name, lambda act, hook, value=value: value.to(act.dtype).expand_as(act).clone()))
    return hooks


def ablated_metrics(tl, probes, rows, hooks):
    """Hits@1, Hits@10 and MRR@10 among the docid token ids `rows` of `(input ids, index into rows)` probes,
    with `hooks` applied."""
    h1 = h10 = mrr = 0.0
    for ids, target in probes:
        lg = tl.run_with_hooks(ids, START, fwd_hooks=hooks)[0, 0, rows]
        rank = int((lg > lg[target]).sum()) + 1
        h1 += rank == 1
        h10 += rank <= 10
        mrr += 1.0 / rank if rank <= 10 else 0.0
    n = len(probes)
    return {"hits_at_1": h1 / n, "hits_at_10": h10 / n, "mrr_at_10": mrr / n}
