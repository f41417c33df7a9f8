#!/usr/bin/env python3
"""Reference outputs of the real flan-t5-small checkpoint installed by tools/models/install_reference_models.sh
(models/flan-t5-small-traceforge: a sequence-distilled flan-t5-small, dequantised from int8 ONNX graphs), for
crates/genir-model/tests/t5_reference.rs (run by hand, not by CI; the test skips when the folder is absent).

Hugging Face transformers runs `T5ForConditionalGeneration` (eager, float32) on three sources and a teacher-forced
target (the model's own greedy continuation, so the logits are those of real decoding); the fixture keeps, small
enough to commit: the token ids (tokenizer.json through transformers' fast tokenizer), the encoder's last hidden
state at the first 3 positions of each row, and for every decoder position the greedy token, the log-sum-exp of the
logits and the logits of 24 ids (the 12 largest and 12 fixed ids spread over the vocabulary).

Usage: HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/make_flan_t5_fixture.py [MODEL_DIR] [OUT]
  (defaults models/flan-t5-small-traceforge, crates/genir-model/tests/fixtures/t5/flan-t5-small-traceforge.json)
"""
import json
import sys

import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration

MODEL = sys.argv[1] if len(sys.argv) > 1 else "models/flan-t5-small-traceforge"
OUT = sys.argv[2] if len(sys.argv) > 2 else "crates/genir-model/tests/fixtures/t5/flan-t5-small-traceforge.json"
SOURCES = [
    "summarize: The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "translate English to German: The weather is nice today.",
    "Anarchism is a political philosophy and movement that is sceptical of authority.",
]
STEPS = 12
FIXED = [0, 1, 2, 3, 5, 100, 1000, 5000, 10000, 20000, 32099, 32127]


def f32(x):
    """Seven significant digits: a float32's precision, in fewer characters."""
    return float(f"{float(x):.7g}")


def main():
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = T5ForConditionalGeneration.from_pretrained(MODEL).eval()
    enc = tok(SOURCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=False, num_beams=1)
        dec = gen[:, :STEPS]  # starts with the decoder start id (0)
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, decoder_input_ids=dec,
                    output_hidden_states=True)
    logits = out.logits  # [batch, STEPS, vocab]
    enc_last = out.encoder_last_hidden_state
    rows = []
    for b in range(len(SOURCES)):
        positions = []
        for t in range(STEPS):
            lg = logits[b, t]
            top = torch.topk(lg, 12).indices.tolist()
            ids = top + [i for i in FIXED if i not in top]
            positions.append({
                "argmax": int(lg.argmax()),
                "logsumexp": f32(torch.logsumexp(lg.double(), 0)),
                "ids": ids,
                "logits": [f32(lg[i]) for i in ids],
            })
        n = int(enc.attention_mask[b].sum())
        rows.append({
            "source": SOURCES[b],
            "input_ids": enc.input_ids[b, :n].tolist(),
            "decoder_input_ids": dec[b].tolist(),
            "encoder_first3": [[f32(x) for x in enc_last[b, p]] for p in range(3)],
            "positions": positions,
        })
    doc = {
        "model": MODEL,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "greedy_text": tok.batch_decode(gen, skip_special_tokens=True),
        "rows": rows,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print("wrote", OUT, doc["greedy_text"])


if __name__ == "__main__":
    main()
