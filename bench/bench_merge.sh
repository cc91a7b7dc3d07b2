#!/usr/bin/env bash
# bench/bench_merge.sh — merge speed and memory on the synth Mixtral bench model (`moetool synth
# --family mixtral --preset bench --dtype bf16`: 8 layers, 8 experts of [3584, 1024], top-2): 8 → 4
# experts with msmoe (router-logit grouping, permutation alignment or none) and hc (output grouping),
# calibrated on CALIB_WORDS of seeded text at ctx 256. Reports the job's wall time, the alignment's
# share (from --json), time per layer after calibration, peak RSS and peak anonymous memory
# (bench/peak_anon.py), against `cp -r` of the output in the same run; then bench_merge_align for one
# expert pair; sub-moe (output grouping, joint SVD per group at its default rank) with the SVD's share.
# VARIANTS: comma-separated "method group-by align" triples. Usage: bench/bench_merge.sh [WORKDIR]
# (default build/bench-merge).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
WORK=${1:-build/bench-merge}
WORDS=${CALIB_WORDS:-500}
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
src="$WORK/src"
"$BIN" synth --family mixtral --preset bench --dtype bf16 -o "$src" -q >/dev/null
python3 - "$WORK/calib.txt" "$WORDS" <<'PY'
import random, sys
words = "the town river mill harbour boat school teacher children measure water bridge winter summer".split()
r = random.Random(7)
open(sys.argv[1], "w").write(" ".join(r.choice(words) + ("." if i % 13 == 12 else "") for i in range(int(sys.argv[2]))))
PY
# Calibration alone (the sweep every variant runs first), for the per-layer figures below.
line=$(python3 bench/peak_anon.py "$BIN" calibrate "$src" --text "$WORK/calib.txt" -o "$WORK/stats.safetensors" 2>&1 >/dev/null | grep '^peak_anon.py:')
calib_s=$(awk '{print $2}' <<<"$line")
echo "calibration alone: $calib_s s"
echo
echo "| merge 8 → 4 | total s | alignment s | joint SVD s | (total − calibration) / layer | cp -r s | peak RSS | peak anonymous |"
echo "|---|---|---|---|---|---|---|---|"
IFS=, read -r -a VARIANTS <<<"${VARIANTS:-msmoe router-logits permutation,msmoe router-logits none,hc outputs permutation,sub-moe outputs none}"
for v in "${VARIANTS[@]}"; do
  read -r meth by align <<<"$v"
  out="$WORK/out"
  rm -rf "$out" "$out.cp"
  line=$(python3 bench/peak_anon.py "$BIN" merge "$src" -o "$out" --experts 4 --method "$meth" --group-by "$by" \
    --align "$align" --calib-text "$WORK/calib.txt" --json -q 2>&1 >"$WORK/r.json" | grep '^peak_anon.py:')
  read -r _ s _ _ _ rss _ _ _ anon _ <<<"$line"
  al=$(python3 -c "import json;print('%.1f' % json.load(open('$WORK/r.json'))['align_seconds'])")
  sv=$(python3 -c "import json;print('%.1f' % json.load(open('$WORK/r.json')).get('svd_seconds', 0))")
  sync
  t0=$(date +%s.%N); cp -r "$out" "$out.cp"; sync; t1=$(date +%s.%N)
  printf "| %s, %s, align %s | %s | %s | %s | %s | %s | %s MiB | %s MiB |\n" "$meth" "$by" "$align" "$s" "$al" "$sv" \
    "$(python3 -c "print('%.1f' % (($s - $calib_s) / 8))")" "$(python3 -c "print('%.2f' % ($t1 - $t0))")" "$rss" "$anon"
done
echo
"$(dirname "$BIN")/bench_merge_align" 3584 1024 1
rm -rf "$WORK"
