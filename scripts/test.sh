#!/usr/bin/env bash
# scripts/test.sh — the whole test suite: installs missing dependencies, builds, runs every test
# (unit, CLI, bad-input and bounded fuzzing) with ctest. Tests find ../shared via MOETOOL_SHARED.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BUILD_DIR=${MOETOOL_BUILD_DIR:-build}
export MOETOOL_SHARED=${MOETOOL_SHARED:-$(cd .. && pwd)/shared}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$(nproc)"
