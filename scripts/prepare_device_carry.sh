#!/usr/bin/env bash
# Builds .device_carry/ (git-ignored) for a GPU run of benchmarks/bench_gpu.py on a machine with
# torch but without the host or network access:
#   .device_carry/comfyui/  the pinned host trimmed to what runs in-process: comfy/, comfy_api/,
#                           comfy_execution/ and its top-level .py files (no __pycache__, no
#                           tokenizer data of comfy/text_encoders: no text is encoded there)
#   .device_carry/wheels/   CPython 3.12 manylinux wheels of the host's imports that such a machine
#                           lacks (av, torchsde, trampoline), pinned to the versions tested here
# The one command to run there is in benchmarks/README.md ("On a GPU").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${SC_HOST_DIR:-$HOME/.cache/stable-cascade-comfyui/comfyui}"
CARRY="$ROOT/.device_carry"
WHEELS="av==18.1.0 torchsde==0.2.6 trampoline==0.1.2"

[ -d "$HOST/comfy" ] || { echo "host not found at $HOST: run scripts/setup_env.sh first (or set SC_HOST_DIR)" >&2; exit 1; }
PY="${PYTHON:-$(bash "$ROOT/scripts/setup_env.sh" --print-python 2>/dev/null | tail -1)}"

rm -rf "$CARRY"
mkdir -p "$CARRY/comfyui" "$CARRY/wheels"
cp -r "$HOST/comfy" "$HOST/comfy_api" "$HOST/comfy_execution" "$CARRY/comfyui/"
cp "$HOST"/*.py "$CARRY/comfyui/"
find "$CARRY/comfyui" -name __pycache__ -type d -prune -exec rm -rf {} +
# Tokenizer data of text encoders the benchmark never runs (~15 MB; the carry limit is 64 MiB).
find "$CARRY/comfyui/comfy/text_encoders" -mindepth 1 -maxdepth 1 -type d -name "*_tokenizer" -exec rm -rf {} +

# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$CARRY/wheels" $WHEELS

du -sh "$CARRY/comfyui" "$CARRY/wheels"
echo "ready: $CARRY (carry it as '.device_carry'; with the working tree it must stay under 64 MiB)"
