#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] — builds the libFuzzer targets in fuzz/ with clang
# (-fsanitize=fuzzer,address,undefined) and runs each for SECONDS (default 20) from its seed corpus.
# Any crash, leak, hang or sanitizer report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
BUILD_DIR=${MOETOOL_FUZZ_BUILD_DIR:-build/fuzz}
CXX_FUZZ=${CXX_FUZZ:-clang++}
command -v "$CXX_FUZZ" >/dev/null || { echo "fuzz: $CXX_FUZZ not found (scripts/setup.sh installs clang)"; exit 1; }
cmake -S fuzz -B "$BUILD_DIR" -DCMAKE_CXX_COMPILER="$CXX_FUZZ" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null
for t in "$BUILD_DIR"/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t"); name=${name#fuzz_}
  work="$BUILD_DIR/corpus-$name"
  mkdir -p "$work"
  [ -d "fuzz/corpus/$name" ] && cp -f fuzz/corpus/"$name"/* "$work"/ 2>/dev/null || true
  echo "fuzz: $name for ${SECS}s"
  "$t" "$work" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=0 -artifact_prefix="$BUILD_DIR/crash-$name-" 2>"$BUILD_DIR/$name.log" \
    || { tail -40 "$BUILD_DIR/$name.log"; echo "fuzz: $name FAILED"; exit 1; }
  grep -E "^#[0-9]+ +DONE" "$BUILD_DIR/$name.log" | tail -1 || true
done
echo "fuzz: all targets ran ${SECS}s without a finding"
