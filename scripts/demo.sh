#!/usr/bin/env bash
# scripts/demo.sh — the main job on a built-in default, no download: installs dependencies,
# builds, writes a small synthetic Mixtral-style MoE with `moetool synth` and inspects it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BUILD_DIR=${MOETOOL_BUILD_DIR:-build}
OUT=${1:-$BUILD_DIR/demo}
"$BUILD_DIR/moetool" --version
"$BUILD_DIR/moetool" synth --family mixtral --preset small --seed 1 -o "$OUT/mixtral-small" --force -q
"$BUILD_DIR/moetool" inspect "$OUT/mixtral-small"
