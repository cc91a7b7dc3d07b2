#!/usr/bin/env bash
# scripts/demo.sh — the main job on the built-in default, no download and no ../shared: installs
# dependencies, builds, and runs examples/tinystories-moe.yaml (the vendored dense TinyStories-656K
# factorized into an 8-expert MoE, pruned to 6 experts, quantized with per-expert mixed precision,
# each step verified against the original), ending with the summary table and summary.html's path.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh moetool
BUILD_DIR=${MOETOOL_BUILD_DIR:-build}
OUT=${1:-$BUILD_DIR/demo/tinystories-moe}
"$BUILD_DIR/moetool" --version
"$BUILD_DIR/moetool" run examples/tinystories-moe.yaml -o "$OUT"
