#!/usr/bin/env bash
# bench/svd_quality.sh — the quality table of docs/svd.md on tinymoe-3domain: the routed experts kept at
# 75 %, 50 % and 30 % of their parameters by `moetool svd` (plain, whitened, shared-basis, delta; ranks
# from the knapsack), file bytes, mean KLD and same-top-1 against the original per domain and on the
# mixed held-out text; beside them merge and prune at the expert count of about the same size, and at
# the bytes of int4 (experts in GGUF q4_0, the rest f32 like the svd files) the best low-rank methods
# at that size. Calibration: the mixed calibration part (the alternating split of bench/moe3_lib.sh).
# Usage: bench/svd_quality.sh [WORKDIR] (default build/svd-quality); prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
M=$SHARED/models/tinymoe-3domain
WORK=${1:-build/svd-quality}
CTX=${CTX:-256}
MOE3_STATS=0
# shellcheck source=bench/moe3_lib.sh
source bench/moe3_lib.sh
CAL="$WORK/calib-mixed.txt"
METHODS=(${METHODS:-plain whitened shared-basis delta})

mib() { python3 -c "import os,sys;p=sys.argv[1];print('%.2f' % (sum(os.path.getsize(os.path.join(p,f)) for f in os.listdir(p) if f.endswith('.safetensors'))/2**20 if os.path.isdir(p) else os.path.getsize(p)/2**20))" "$1"; }
svd_row() {  # svd_row RATIO METHOD
  local out="$WORK/svd"
  "$BIN" svd "$M" -o "$out" --ratio "$1" --method "$2" --calib-text "$CAL" --ctx "$CTX" -q --force >/dev/null
  row "svd $2 | $(mib "$out")" "$out"
  rm -rf "$out"
}
echo "| method | MiB | stories KLD / top-1 | code | prose | mixed |"
echo "|---|---|---|---|---|---|"
echo "| original (f32) | $(mib "$M") | 0 / 100 % | | | |"
for P in ${RATIOS:-0.75 0.5 0.3}; do
  [ "$P" = none ] && continue
  K=$(python3 -c "print(round(8*$P))")
  echo "| **$P of the expert parameters** | | | | | |"
  for meth in "${METHODS[@]}"; do svd_row "$P" "$meth"; done
  [ "${PEERS:-1}" = 1 ] || continue
  out="$WORK/merge"
  "$BIN" merge "$M" -o "$out" --experts "$K" --method msmoe --group-by router-logits --router fit --calib-text "$CAL" \
    --ctx "$CTX" -q --force >/dev/null
  row "merge msmoe to $K of 8 (router fit) | $(mib "$out")" "$out"
  rm -rf "$out"
  for meth in frequency reap; do
    out="$WORK/prune"
    "$BIN" prune "$M" -o "$out" --keep "$K" --method "$meth" --calib-text "$CAL" --ctx "$CTX" -q --force >/dev/null
    row "prune $meth to $K of 8 | $(mib "$out")" "$out"
    rm -rf "$out"
  done
done
# Equal bytes with int4: q4_0 stores 18 bytes per 32 weights (0.5625 of f32's 4 bytes per weight is 0.1406).
[ "${INT4:-1}" = 1 ] || exit 0
echo "| **int4 bytes (0.1406 of the experts' f32 bytes)** | | | | | |"
g="$WORK/q4_0-experts.gguf"
"$BIN" quantize "$M" -o "$g" --type f32 --tensor-type 'ffn_.*_exps=q4_0' -q --force >/dev/null
row "experts GGUF q4_0 (RTN int4), rest f32 | $(mib "$g")" "$g"
"$BIN" quantize "$M" -o "$g" --type f32 --tensor-type 'ffn_.*_exps=q4_0' --calib-text "$CAL" --ctx "$CTX" -q --force >/dev/null
row "experts GGUF q4_0 with importance (--calib-text), rest f32 | $(mib "$g")" "$g"
rm -f "$g"
# GPTQ keeps the attention and the routers in float here (--skip), like the GGUF rows.
SKIP='self_attn|\.gate$'
q="$WORK/gptq"
"$BIN" quantize "$M" -o "$q" --format gptq --bits 4 --group-size 32 --calib-text "$CAL" --ctx "$CTX" --skip "$SKIP" \
  -q --force >/dev/null 2>&1
row "experts GPTQ int4 g32, rest f32 | $(mib "$q")" "$q"
svd_row 0.1406 whitened  # delta cannot go this low in float: its base alone is 0.125 and each delta takes a rank
# Low rank, then the factors quantized (quantize --format gptq of the low-rank checkpoint): delta at 75 and
# 87.5 % with ranks in multiples of 32 (so every U packs with groups of 32), factors int4 g32, bases int8.
for P in 0.75 0.875; do
  "$BIN" svd "$M" -o "$WORK/svd" --ratio "$P" --method delta --rank-multiple 32 --calib-text "$CAL" --ctx "$CTX" -q \
    --force >/dev/null
  "$BIN" quantize "$WORK/svd" -o "$q" --format gptq --bits 4 --group-size 32 --base-bits 8 --calib-text "$CAL" \
    --ctx "$CTX" --skip "$SKIP" -q --force >/dev/null 2>&1
  row "svd delta $P + factors GPTQ int4 g32, bases int8 | $(mib "$q")" "$q"
done
rm -rf "$WORK/svd" "$q"
