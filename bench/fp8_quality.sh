#!/usr/bin/env bash
# bench/fp8_quality.sh — the FP8 rows of docs/quantize.md on tinymoe-3domain: `quantize --format fp8`
# at 128x128 blocks (the DeepSeek-V3 / Qwen3 layout; the [64, 128] k/v projections stay float) and at
# 64x64 and 32x32 blocks (everything FP8), beside GPTQ RTN int8 and int4 (g128, no calibration, same
# float tensors), and the f32 model converted to bf16: file MiB, mean KLD and same-top-1 against the
# original on the held-out part of each domain and on the mixed text (the split of bench/moe3_lib.sh;
# nothing here calibrates).
# Usage: bench/fp8_quality.sh [WORKDIR] (default build/fp8-quality); prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
M=$SHARED/models/tinymoe-3domain
WORK=${1:-build/fp8-quality}
CTX=${CTX:-256}
MOE3_STATS=0
# shellcheck source=bench/moe3_lib.sh
source bench/moe3_lib.sh

mib() { python3 -c "import os,sys;p=sys.argv[1];print('%.2f' % (sum(os.path.getsize(os.path.join(p,f)) for f in os.listdir(p) if f.endswith('.safetensors'))/2**20))" "$1"; }
one() {  # one LABEL QUANTIZE-ARGS...
  local label=$1 out="$WORK/q"
  shift
  "$BIN" quantize "$M" -o "$out" "$@" -q --force >/dev/null 2>&1
  row "$label | $(mib "$out")" "$out"
  rm -rf "$out"
}
echo "| storage | MiB | stories KLD / top-1 | code | prose | mixed |"
echo "|---|---|---|---|---|---|"
echo "| original (f32) | $(mib "$M") | 0 / 100 % | | | |"
one "FP8 E4M3, 128x128 blocks" --format fp8
one "FP8 E4M3, 64x64 blocks" --format fp8 --fp8-block 64x64
one "FP8 E4M3, 32x32 blocks" --format fp8 --fp8-block 32x32
one "GPTQ RTN int8 g128" --format gptq --method rtn --bits 8
one "GPTQ RTN int4 g128" --format gptq --method rtn --bits 4
