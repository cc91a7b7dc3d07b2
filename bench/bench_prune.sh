#!/usr/bin/env bash
# bench/bench_prune.sh — prune speed and memory on the synth Mixtral bench model (`moetool synth
# --family mixtral --preset bench --dtype bf16`: 8 layers, 8 experts top-2, hidden 1024, expert FFN 3584,
# ~0.8B parameters). Three jobs, each timed against `cp -r` of its own output bytes in the same run
# (interleaved, medians of 3), peak RSS and peak anonymous memory (heap, not mmap'd checkpoint pages)
# from bench/peak_anon.py:
#   - keep 4 of 8, --method random: no calibration, the checkpoint rewrite alone;
#   - keep 4 of 8, --method reap on CALIB_TOKENS of text (ctx 256): calibration + scores + rewrite;
#   - keep 4 of 8, --method reap, --slim 0.25: the same plus per-neuron importance and narrower experts.
# Peak memory should be one layer's weights plus the calibration buffers, not the model.
# Usage: bench/bench_prune.sh [WORKDIR] (default build/bench-prune). CALIB_WORDS (default 1500).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
WORK=${1:-build/bench-prune}
WORDS=${CALIB_WORDS:-1500}
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*

median() { python3 -c "import statistics,sys;print(f'{statistics.median(map(float,sys.argv[1:])):.2f}')" "$@"; }
measure() {  # measure VAR cmd...: wall seconds, peak RSS and peak anonymous memory (MiB)
  local line _ s rss anon
  line=$(python3 bench/peak_anon.py "${@:2}" 2>&1 >/dev/null | grep '^peak_anon.py:')
  read -r _ s _ _ _ rss _ _ _ anon _ <<<"$line"
  printf -v "${1}_s" %s "$s"
  printf -v "${1}_rss" %s "$rss"
  printf -v "${1}_anon" %s "$anon"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "moetool: $("$BIN" --version | head -1)"
src="$WORK/src"
"$BIN" synth --family mixtral --preset bench --dtype bf16 -o "$src" -q >/dev/null
src_bytes=$(du -sb "$src" | cut -f1)
echo "source: $src_bytes bytes (mixtral bench, bf16; one layer ≈ $((src_bytes / 8 / 1048576)) MiB)"
# Seeded English-like calibration text (the synth tokenizer encodes any text).
python3 - "$WORK/calib.txt" "$WORDS" <<'EOF'
import random, sys
words = "the town river mill harbour boat school teacher children measure water bridge winter summer".split()
r = random.Random(7)
open(sys.argv[1], "w").write(" ".join(r.choice(words) + ("." if i % 13 == 12 else "") for i in range(int(sys.argv[2]))))
EOF
echo
echo "| job (keep 4 of 8) | output bytes | moetool s (median of 3) | cp -r s | moetool / cp | peak RSS | peak anonymous |"
echo "|---|---|---|---|---|---|---|"
for variant in "random:--method random --seed 1" "reap:--method reap --calib-text $WORK/calib.txt" \
  "reap + slim 0.25:--method reap --calib-text $WORK/calib.txt --slim 0.25"; do
  label=${variant%%:*}
  args=${variant#*:}
  out="$WORK/out"
  ps=() cs=() rss=0 anon=0
  for rep in 1 2 3; do
    rm -rf "$out" "$out.cp"
    sync
    # shellcheck disable=SC2086
    measure p "$BIN" prune "$src" -o "$out" --keep 4 $args -q
    ps+=("$p_s")
    rss=$(python3 -c "print(max($rss, $p_rss))") anon=$(python3 -c "print(max($anon, $p_anon))")
    sync
    measure c cp -r "$out" "$out.cp"
    cs+=("$c_s")
  done
  bytes=$(du -sb "$out" | cut -f1)
  p_med=$(median "${ps[@]}") c_med=$(median "${cs[@]}")
  printf "| %s | %s | %s | %s | %sx | %s MiB | %s MiB |\n" "$label" "$bytes" "$p_med" "$c_med" \
    "$(python3 -c "print(f'{$p_med/max($c_med,1e-3):.2f}')")" "$rss" "$anon"
  echo "  runs (moetool / cp s): ${ps[*]} / ${cs[*]}" >&2
  rm -rf "$out" "$out.cp"
done
rm -rf "$WORK"
