#!/usr/bin/env bash
# bench/gguf_gptq_quality.sh — GGUF type × rounding method: ggml's rounding (--method rtn, what
# llama-quantize writes without an imatrix, byte for byte), importance-weighted rounding (imatrix,
# llama-quantize --imatrix), GPTQ over ggml blocks (--method gptq) and AutoRound over ggml blocks
# (--method autoround), at the same file size: mean KLD, same-top-1 and PPL ratio against the float
# model on held-out text (`moetool verify`), and the quantize wall time as a ratio to imatrix's
# measured in the same run.
#   1. TinyStories-656K, ../shared/data/tinystories-calib.txt split by lines (first half
#      calibrates, second half evaluates). Rows of 128/384: the K-quants fall back (Q5_0/Q8_0).
#   2. tinymoe-3domain (trained 8-expert Mixtral, untied output head), each of
#      ../shared/data/moe3-calib-{stories,code,prose}.txt split by lines the same way.
#   3. A synthetic llama (moetool synth --preset small: hidden 256, intermediate 768, 4 layers),
#      where the K-quants apply; seeded word texts calibrate (seed 1) and evaluate (seed 2).
# Usage: bench/gguf_gptq_quality.sh [WORKDIR] (default build/gguf-gptq-quality); prints Markdown.
# TABLES="ts moe3 synth" (the default) selects the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
WORK=${1:-build/gguf-gptq-quality}
CTX=${CTX:-128}
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*

TEXT=$SHARED/data/tinystories-calib.txt
lines=$(wc -l <"$TEXT")
head -n $((lines / 2)) "$TEXT" >"$WORK/ts-calib.txt"
tail -n +$((lines / 2 + 1)) "$TEXT" >"$WORK/ts-eval.txt"
words() {  # words SEED COUNT > FILE: seeded words of a small mixed vocabulary, a sentence every 17
  python3 - "$1" "$2" <<'EOF'
import random, sys
random.seed(int(sys.argv[1]))
w = "the cat ran over a hill and then saw dog def return self license terms of use x = 1 story code".split()
print("".join(random.choice(w) + (".\n" if i % 17 == 16 else " ") for i in range(int(sys.argv[2]))))
EOF
}
: >"$WORK/moe3-calib.txt"
: >"$WORK/moe3-eval.txt"
for d in stories code prose; do
  f=$SHARED/data/moe3-calib-$d.txt
  n=$(wc -l <"$f")
  head -n $((n / 2)) "$f" >>"$WORK/moe3-calib.txt"
  tail -n +$((n / 2 + 1)) "$f" >>"$WORK/moe3-eval.txt"
done
words 1 6000 >"$WORK/syn-calib.txt"
words 2 3000 >"$WORK/syn-eval.txt"
"$BIN" synth --family llama --preset small --seed 5 -o "$WORK/synth-llama" -q >/dev/null

now() { date +%s.%N; }
# row MODEL LABEL OUT EVAL SECONDS BASE_SECONDS
row() {
  "$BIN" verify "$1" "$3" --text "$4" --ctx "$CTX" --no-hidden -q --json >"$3.verify.json"
  python3 - "$2" "$3.verify.json" "$(stat -c %s "$3")" "$5" "$6" <<'EOF'
import json, sys
label, j, size, sec, base = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"| {label} | {size:,} | {j['kld']['mean']['value']:.5f} | {100*j['same_top_p']['value']:.1f} % | "
      f"{j['perplexity']['ppl_ratio']['value']:.4f} | {sec:.1f} s ({sec/base:.1f}×) |")
EOF
}
# table NAME MODEL CALIB EVAL TYPES...
table() {
  local name=$1 M=$2 calib=$3 eval=$4 t m t0 base sec
  shift 4
  echo
  echo "### $name"
  echo
  echo "| type, method | file bytes | mean KLD | same top-1 | PPL ratio | quantize time (× imatrix) |"
  echo "|---|---|---|---|---|---|"
  for t in "$@"; do
    for m in imatrix rtn gptq autoround; do  # imatrix first: the time baseline of its row group
      local args=(--type "$t" --method "$m" --ctx "$CTX" -q --force)
      [ "$m" != rtn ] && args+=(--calib-text "$calib")
      t0=$(now)
      "$BIN" quantize "$M" -o "$WORK/$t-$m.gguf" "${args[@]}" >/dev/null
      sec=$(echo "$(now) - $t0" | bc -l)
      [ "$m" = imatrix ] && base=$sec
      row "$M" "$t $m" "$WORK/$t-$m.gguf" "$eval" "$sec" "$base"
    done
  done
}
# goal ARGS...: the --bpw row (same budget, imatrix, gptq and autoround).
goal() {
  local M=$1 calib=$2 eval=$3 m t0 sec base
  shift 3
  for m in imatrix gptq autoround; do
    t0=$(now)
    "$BIN" quantize "$M" -o "$WORK/goal-$m.gguf" --method "$m" --calib-text "$calib" --ctx "$CTX" -q --force \
      "$@" >/dev/null 2>&1
    sec=$(echo "$(now) - $t0" | bc -l)
    [ "$m" = imatrix ] && base=$sec
    row "$M" "$* $m" "$WORK/goal-$m.gguf" "$eval" "$sec" "$base"
  done
}

TABLES=${TABLES:-ts moe3 synth}
[[ " $TABLES " == *" ts "* ]] && table "TinyStories-656K (held-out half of tinystories-calib.txt)" "$SHARED/models/tinystories-656k" \
  "$WORK/ts-calib.txt" "$WORK/ts-eval.txt" q8_0 q5_1 q5_0 q4_1 q4_0 q4_k_m
[[ " $TABLES " == *" ts "* ]] && goal "$SHARED/models/tinystories-656k" "$WORK/ts-calib.txt" "$WORK/ts-eval.txt" --type q4_0 --bpw 6.17 --bpw-all \
  --output-type q5_1
[[ " $TABLES " == *" moe3 "* ]] && table "tinymoe-3domain (held-out halves of the three moe3-calib texts)" "$SHARED/models/tinymoe-3domain" \
  "$WORK/moe3-calib.txt" "$WORK/moe3-eval.txt" q8_0 q5_0 q4_0 q4_k_m
[[ " $TABLES " == *" synth "* ]] && table "synthetic llama, hidden 256 (K-quants apply)" "$WORK/synth-llama" "$WORK/syn-calib.txt" "$WORK/syn-eval.txt" \
  q4_0 q4_k_m q5_k_m q6_k
exit 0
