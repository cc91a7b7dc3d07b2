#!/usr/bin/env bash
# scripts/build.sh [TARGET...] — configures and builds moetool (Release) into build/ (or
# $MOETOOL_BUILD_DIR): every target, or only the ones named (the demo builds just `moetool`).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${MOETOOL_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$BUILD_DIR" -j"$(nproc)" "${targets[@]}"
