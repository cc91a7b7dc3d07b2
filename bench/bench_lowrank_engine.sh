#!/usr/bin/env bash
# bench/bench_lowrank_engine.sh — factored against dense expert throughput in the CPU engine: the synth
# Mixtral bench model (`moetool synth --family mixtral --preset bench --dtype f32`: 8 layers, 8 experts
# top-2, hidden 1024, expert FFN 3584) and its `moetool svd --method plain --rank R` twins (every expert
# matrix as U [out, R] · V [R, in], multiplied as two thin GEMMs). Teacher-forced logits with
# bench_engine at ctx CTX, the dense model and each factored one interleaved, ROUNDS times, medians.
# Expert FLOPs per token and matrix: dense 2·1024·3584, rank R 2·R·(1024 + 3584) (R = 256: 32 %).
# Usage: bench/bench_lowrank_engine.sh [WORKDIR] (default build/bench-lowrank). RANKS (default "256 512").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
BENCH=${BENCH_ENGINE:-build/bench_engine}
WORK=${1:-build/bench-lowrank}
CTX=${CTX:-512}
ROUNDS=${ROUNDS:-3}
RANKS=(${RANKS:-256 512})
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*
"$BIN" synth --family mixtral --preset bench --dtype f32 --seed 1 -o "$WORK/dense" -q >/dev/null
for r in "${RANKS[@]}"; do
  "$BIN" svd "$WORK/dense" -o "$WORK/r$r" --rank "$r" --method plain -q >/dev/null
done
tps() { "$BENCH" "$1" "$CTX" 1 | python3 -c "import json,sys;print(json.load(sys.stdin)['tokens_per_s'])"; }
median() { python3 -c "import statistics,sys;print(f'{statistics.median(map(float,sys.argv[1:])):.1f}')" "$@"; }
declare -A runs
for ((i = 0; i < ROUNDS; i++)); do
  for m in dense "${RANKS[@]/#/r}"; do runs[$m]+=" $(tps "$WORK/$m")"; done
done
gib() { du -sb "$1" | python3 -c "import sys;print('%.2f' % (int(sys.stdin.read().split()[0])/2**30))"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "| model | GiB | tokens/s (median of $ROUNDS) | vs dense |"
echo "|---|---|---|---|"
d=$(median ${runs[dense]})
echo "| dense experts | $(gib "$WORK/dense") | $d | 1.00× |"
for r in "${RANKS[@]}"; do
  t=$(median ${runs[r$r]})
  echo "| rank $r (plain) | $(gib "$WORK/r$r") | $t | $(python3 -c "print(f'{$t/$d:.2f}×')") |"
done
