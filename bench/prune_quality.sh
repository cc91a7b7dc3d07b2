#!/usr/bin/env bash
# bench/prune_quality.sh — the prune quality table of docs/prune.md on tinymoe-3domain: for K = 6, 4, 2
# of 8 experts, per domain (stories, code, prose) and on the mixed text, mean KLD and same-top-1 of the
# pruned model against the unpruned one, for random (mean of 5 seeds), frequency and REAP (calibrated
# on the mixed text) and EASY-EP calibrated on each domain; then --slim and --dynamic-topk rows.
# Each moe3-calib-<domain>.txt is split by documents, alternately: even ones calibrate, odd ones
# evaluate (the calibration never sees them); "mixed" is the three domains' parts together.
# Also `reconstruct` (moetool's measured method: greedy elimination by layer-output error) calibrated
# on each domain. SECTIONS (default "methods reconstruct variants") picks the parts that run.
# Usage: bench/prune_quality.sh [WORKDIR] (default build/prune-quality); prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
M=$SHARED/models/tinymoe-3domain
WORK=${1:-build/prune-quality}
CTX=${CTX:-256}
SECTIONS=${SECTIONS:-methods reconstruct variants}
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
# shellcheck source=bench/moe3_lib.sh
source bench/moe3_lib.sh
prune() {  # prune OUT ARGS...
  local out=$1
  shift
  "$BIN" prune "$M" -o "$out" "$@" -q --force >/dev/null
}

echo "| method (calibration) | stories KLD / top-1 | code | prose | mixed |"
echo "|---|---|---|---|---|"
for K in 6 4 2; do
  echo "| **K = $K of 8** | | | | |"
  if has methods; then
    # random: the mean of 5 seeds, per domain
    declare -A ksum=() tsum=()
    for s in 1 2 3 4 5; do
      prune "$WORK/rand-$K-$s" --keep "$K" --method random --seed "$s" --protect-super-experts off
      for d in "${EVALS[@]}"; do
        read -r k t < <(kld_top1 "$WORK/rand-$K-$s" "$d")
        ksum[$d]=$(python3 -c "print(${ksum[$d]:-0} + $k)")
        tsum[$d]=$(python3 -c "print(${tsum[$d]:-0} + $t)")
      done
      rm -rf "$WORK/rand-$K-$s"
    done
    cells=""
    for d in "${EVALS[@]}"; do cells+=$(python3 -c "print(' %.4f / %.1f %% |' % (${ksum[$d]}/5, 20*${tsum[$d]}))"); done
    echo "| random (mean of 5 seeds) |$cells"
    for meth in frequency reap; do
      prune "$WORK/$meth-$K" --keep "$K" --method "$meth" --calib-stats "$WORK/stats-mixed.safetensors"
      row "$meth (mixed)" "$WORK/$meth-$K"
    done
    for d in "${DOMAINS[@]}"; do
      prune "$WORK/easy-$d-$K" --keep "$K" --method easy-ep --calib-stats "$WORK/stats-$d.safetensors"
      row "easy-ep ($d)" "$WORK/easy-$d-$K"
    done
  fi
  if has reconstruct; then
    for d in "${DOMAINS[@]}"; do
      prune "$WORK/recon-$d-$K" --keep "$K" --method reconstruct --calib-text "$WORK/calib-$d.txt" --ctx "$CTX"
      row "reconstruct ($d)" "$WORK/recon-$d-$K"
    done
  fi
done

has variants || exit 0
echo
echo "| variant (REAP, mixed calibration) | size | stories KLD / top-1 | code | prose | mixed | expert computations skipped |"
echo "|---|---|---|---|---|---|---|"
size_of() { du -cb "$1"/*.safetensors | tail -1 | cut -f1; }
prune "$WORK/slim" --method reap --calib-stats "$WORK/stats-mixed.safetensors" --slim 0.25
prune "$WORK/reap-4-slim" --keep 4 --method reap --calib-stats "$WORK/stats-mixed.safetensors" --slim 0.25
for v in slim reap-4 reap-4-slim; do
  label="keep 8, --slim 0.25"
  [ "$v" = reap-4 ] && label="keep 4"
  [ "$v" = reap-4-slim ] && label="keep 4, --slim 0.25"
  echo "| $label | $(( $(size_of "$WORK/$v") / 1024 )) KiB |$(row x "$WORK/$v" | cut -d'|' -f3-) — |"
done
for T in 0.1 0.2 0.3; do
  cells=""
  skipped=""
  for d in "${EVALS[@]}"; do
    j=$("$BIN" verify "$M" "$M" --text "$WORK/eval-$d.txt" --ctx "$CTX" --no-hidden -q --json --dynamic-topk "$T")
    cells+=$(python3 -c "import json,sys;j=json.loads(sys.argv[1]);print(' %.4f / %.1f %% |' % (j['kld']['mean']['value'], 100*j['same_top_p']['value']))" "$j")
    skipped=$(python3 -c "import json,sys;j=json.loads(sys.argv[1]);print('%.1f %%' % (100*j['dynamic_topk']['skipped_fraction']))" "$j")
  done
  echo "| --dynamic-topk $T (unpruned) | $(( $(size_of "$M") / 1024 )) KiB |$cells $skipped (mixed) |"
done
