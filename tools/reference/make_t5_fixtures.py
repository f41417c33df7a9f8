#!/usr/bin/env python3
"""Builds the small T5 fixtures that genir-model is tested against (run by hand, not by CI).

For each variant it makes a seeded random `T5ForConditionalGeneration` with Hugging Face transformers, trains a
small Unigram tokenizer (T5's kind) on Python standard-library docstrings, saves the model folder in HF layout
(config.json, model.safetensors, tokenizer.json), runs a padded batch, and writes `reference.safetensors` with the
logits and every hidden state and component output, named with genir's hook names. Component outputs come from
torch forward hooks on the HF modules, independent of genir's code.

Usage: tools/reference/make_t5_fixtures.py [OUT_DIR]   (default crates/genir-model/tests/fixtures/t5)
Needs the reference venv (../shared/tools/reference-venv.sh): torch, transformers 4.57, tokenizers, safetensors.
"""
import inspect
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers, normalizers
from transformers import T5Config, T5ForConditionalGeneration, PreTrainedTokenizerFast

OUT = sys.argv[1] if len(sys.argv) > 1 else "crates/genir-model/tests/fixtures/t5"

SOURCES = [
    "Return a new list containing all items from the iterable in ascending order.",
    "The quick brown fox.",
    "Open file and return a stream. Raise OSError upon failure; the mode defaults to reading text, "
    "and buffering policy is chosen by the size of the device blocks of the underlying file.",
]
DECODER_LEN = 32

VARIANTS = [
    # name, feed_forward_proj, tie_word_embeddings, buckets, max_distance, enc layers, dec layers
    ("relu-tied", "relu", True, 32, 128, 2, 3),
    ("gated-untied", "gated-gelu", False, 16, 20, 3, 2),
]


def corpus():
    import collections, json as j, os as o, re, string, textwrap
    texts = []
    for mod in (collections, j, o, re, string, textwrap, inspect):
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj)
            if doc:
                texts.append(doc)
    return texts


def make_tokenizer(vocab):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                        special_tokens=[("</s>", 1)])
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == 1
    return tok


def main():
    torch.manual_seed(0)
    tok = make_tokenizer(300)
    n_tok = tok.get_vocab_size()
    vocab = ((n_tok + 7) // 8) * 8 + 8  # padded like T5's 32128 > 32100
    for i, (name, ffp, tie, buckets, maxd, enc_l, dec_l) in enumerate(VARIANTS):
        torch.manual_seed(1000 + i)
        cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=enc_l, num_decoder_layers=dec_l,
                       num_heads=4, relative_attention_num_buckets=buckets, relative_attention_max_distance=maxd,
                       feed_forward_proj=ffp, tie_word_embeddings=tie, dropout_rate=0.0,
                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        model = T5ForConditionalGeneration(cfg).eval()
        # Non-trivial norm gains so a missing or misplaced norm cannot pass.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "layer_norm" in n:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        if name == "relu-tied":
            bd = os.path.join(OUT, name + "-bin")
            model.save_pretrained(bd, safe_serialization=False)
        tok.save(os.path.join(d, "tokenizer.json"))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        enc = fast(SOURCES, padding=True, return_tensors="pt")
        g = torch.Generator().manual_seed(7 + i)
        dec_ids = torch.randint(3, n_tok, (len(SOURCES), DECODER_LEN), generator=g)
        dec_ids[:, 0] = 0

        ref = {}
        handles = []

        def save(key):
            def hook(_m, _inp, out):
                ref[key] = (out[0] if isinstance(out, tuple) else out).detach().clone()
            return hook

        def save_input(key, heads, d_kv):
            def hook(_m, inp):
                x = inp[0].detach().clone()
                ref[key] = x.reshape(x.shape[0], x.shape[1], heads, d_kv)
            return hook

        def save_mlp_post(key):
            def hook(_m, inp):
                ref[key] = inp[0].detach().clone()
            return hook

        for stack_name, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
            for l, block in enumerate(stack.block):
                pre = f"{stack_name}.blocks.{l}"
                sa = block.layer[0].SelfAttention
                handles.append(sa.register_forward_hook(save(f"{pre}.hook_self_attn_out")))
                handles.append(sa.o.register_forward_pre_hook(save_input(f"{pre}.self_attn.hook_z", 4, 8)))
                ff_layer = block.layer[-1]
                handles.append(ff_layer.DenseReluDense.register_forward_hook(save(f"{pre}.hook_mlp_out")))
                handles.append(ff_layer.DenseReluDense.wo.register_forward_pre_hook(save_mlp_post(f"{pre}.mlp.hook_post")))
                handles.append(block.register_forward_hook(save(f"{pre}.hook_resid_post")))
                if stack_name == "decoder":
                    ca = block.layer[1].EncDecAttention
                    handles.append(ca.register_forward_hook(save(f"{pre}.hook_cross_attn_out")))
                    handles.append(ca.o.register_forward_pre_hook(save_input(f"{pre}.cross_attn.hook_z", 4, 8)))
        with torch.no_grad():
            out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, decoder_input_ids=dec_ids,
                        output_hidden_states=True, output_attentions=True, return_dict=True)
            # The decoder is causal: every prefix's logits equal the first rows of the full run.
            for t in (1, 2, 5, 17, DECODER_LEN):
                o2 = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, decoder_input_ids=dec_ids[:, :t])
                assert torch.allclose(o2.logits, out.logits[:, :t], atol=1e-5), t
        for h in handles:
            h.remove()
        ref["logits"] = out.logits
        for stack_name, hs, n_layers in (("encoder", out.encoder_hidden_states, enc_l),
                                         ("decoder", out.decoder_hidden_states, dec_l)):
            # HF hidden_states: input of each block, then the final-normed output.
            for l in range(n_layers):
                ref[f"{stack_name}.blocks.{l}.hook_resid_pre"] = hs[l]
            ref[f"{stack_name}.ln_final.hook_normalized"] = hs[n_layers]
        for l, a in enumerate(out.encoder_attentions):
            ref[f"encoder.blocks.{l}.self_attn.hook_pattern"] = a
        for l, a in enumerate(out.decoder_attentions):
            ref[f"decoder.blocks.{l}.self_attn.hook_pattern"] = a
        for l, a in enumerate(out.cross_attentions):
            ref[f"decoder.blocks.{l}.cross_attn.hook_pattern"] = a
        ref = {k: v.float().contiguous() for k, v in ref.items()}
        save_file(ref, os.path.join(d, "reference.safetensors"))
        with open(os.path.join(d, "inputs.json"), "w") as f:
            json.dump({"sources": SOURCES,
                       "input_ids": enc.input_ids.tolist(),
                       "attention_mask": enc.attention_mask.tolist(),
                       "decoder_input_ids": dec_ids.tolist(),
                       "transformers": __import__("transformers").__version__,
                       "torch": torch.__version__}, f, indent=1)
        print(name, "vocab", vocab, "tokens", n_tok, "tensors", len(ref))

    # Relative-position buckets straight from transformers, for the unit test.
    from transformers.models.t5.modeling_t5 import T5Attention
    rel = torch.arange(-200, 201)
    table = {
        "relative": rel.tolist(),
        "bidirectional_32_128": T5Attention._relative_position_bucket(rel, True, 32, 128).tolist(),
        "causal_32_128": T5Attention._relative_position_bucket(rel, False, 32, 128).tolist(),
        "bidirectional_16_20": T5Attention._relative_position_bucket(rel, True, 16, 20).tolist(),
        "causal_16_20": T5Attention._relative_position_bucket(rel, False, 16, 20).tolist(),
    }
    with open(os.path.join(OUT, "buckets.json"), "w") as f:
        json.dump(table, f)


if __name__ == "__main__":
    main()
