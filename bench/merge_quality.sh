#!/usr/bin/env bash
# bench/merge_quality.sh — the merge quality table of docs/merge.md on tinymoe-3domain: 8 → 6, 4, 2
# experts, per domain (stories, code, prose) and on the mixed held-out text, mean KLD and same-top-1
# of the merged model against the original, for each grouping × similarity × router (leader's row or
# fitted; neurons aligned by weight matching; sub-moe at its default --rank-fraction 0.5), beside prune's domain-agnostic methods (frequency, REAP) at the same K, all calibrated
# on the mixed calibration text (the same alternating split as prune_quality.sh, bench/moe3_lib.sh).
# Usage: bench/merge_quality.sh [WORKDIR] (default build/merge-quality); prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
M=$SHARED/models/tinymoe-3domain
WORK=${1:-build/merge-quality}
CTX=${CTX:-256}
MOE3_STATS=0  # merge calibrates from the text itself; prune rows use --calib-text too
# shellcheck source=bench/moe3_lib.sh
source bench/moe3_lib.sh

# VARIANTS (newline-separated "method group-by router") and PRUNE_ROWS=0 run a subset.
if [ -n "${VARIANTS:-}" ]; then mapfile -t VARIANTS <<<"$VARIANTS"; else
  VARIANTS=("msmoe router-logits leader" "msmoe router-logits fit" "msmoe weights leader" "hc outputs leader"
    "hc outputs fit" "hc router-logits leader" "sub-moe outputs leader" "sub-moe outputs fit")
fi
echo "| method (group by, router) | stories KLD / top-1 | code | prose | mixed |"
echo "|---|---|---|---|---|"
for K in 6 4 2; do
  echo "| **K = $K of 8** | | | | |"
  # --align none is left out: on this upcycled model alignment moves no neuron (the merge reports it).
  for v in "${VARIANTS[@]}"; do
    read -r meth by router <<<"$v"
    out="$WORK/merge-$K"
    "$BIN" merge "$M" -o "$out" --experts "$K" --method "$meth" --group-by "$by" --router "$router" \
      --calib-text "$WORK/calib-mixed.txt" --ctx "$CTX" -q --force --json >"$WORK/merge.json"
    moved=$(python3 -c "import json;print(json.load(open('$WORK/merge.json'))['moved_neurons'])")
    [ "$moved" = 0 ] || echo "note: alignment moved $moved neurons (K=$K $v)" >&2
    row "merge $meth ($by, router $router)" "$out"
    rm -rf "$out"
  done
  for meth in frequency reap; do
    [ "${PRUNE_ROWS:-1}" = 1 ] || break
    out="$WORK/prune-$K"
    "$BIN" prune "$M" -o "$out" --keep "$K" --method "$meth" --calib-text "$WORK/calib-mixed.txt" --ctx "$CTX" -q \
      --force >/dev/null
    row "prune $meth (for comparison)" "$out"
    rm -rf "$out"
  done
done
