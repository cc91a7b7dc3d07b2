#!/usr/bin/env bash
# bench/bench_foundation.sh — checkpoint writing and inspect speed (issue: foundation).
# Writes the synth bench models with `moetool synth` and, in the same run, copies the same bytes
# with `cp` as the baseline; reports the ratio, `inspect` time, and the writer's peak RSS for a
# tiny and a bench-sized model (to show memory does not grow with model size).
# Usage: bench/bench_foundation.sh [WORKDIR] (default: build/bench; needs ~10 GB free).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
WORK=${1:-build/bench}
mkdir -p "$WORK"
rm -rf "$WORK"/*

secs() { python3 -c "import sys;print(f'{float(sys.argv[1]):.2f}')" "$1"; }
measure() {  # measure OUTVAR_PREFIX cmd...: wall seconds and peak RSS (KiB) via GNU time
  local tf; tf=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$tf" "${@:2}" >/dev/null 2>&1
  read -r "${1}_s" "${1}_kb" <"$tf"; rm -f "$tf"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "moetool: $($BIN --version | head -1)"
printf "| model | dtype | bytes | synth write s | cp s | write/cp speed | writer peak RSS | inspect s |\n|---|---|---|---|---|---|---|---|\n"
for spec in "llama tiny f32" "llama bench bf16" "mixtral bench bf16"; do
  read -r fam preset dt <<<"$spec"
  out="$WORK/$fam-$preset"
  sync
  measure w "$BIN" synth --family "$fam" --preset "$preset" --dtype "$dt" -o "$out" -q --force
  bytes=$(du -sb "$out" | cut -f1)
  sync
  measure c cp -r "$out" "$out.copy"
  sync
  measure i "$BIN" inspect "$out"
  ratio=$(python3 -c "print(f'{float($c_s)/max(float($w_s),1e-3):.2f}x')")
  printf "| %s %s | %s | %s | %s | %s | %s | %s MiB | %s |\n" "$fam" "$preset" "$dt" "$bytes" "$(secs "$w_s")" \
    "$(secs "$c_s")" "$ratio" "$((w_kb / 1024))" "$(secs "$i_s")"
  rm -rf "$out.copy"
done
rm -rf "$WORK"
