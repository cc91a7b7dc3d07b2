#!/usr/bin/env bash
# bench/quantize_quality.sh — quality of every quantize mode on the TinyStories checkpoint and on an
# MoE made from it by `convert factorize` (8 experts, top-2, fitted router): size, bits per weight,
# mean KLD, same-top-1 and PPL ratio against the unquantized model of the same row, from
# `moetool verify`. The calibration text is split by lines: the first half calibrates (GPTQ
# Hessians, importance, the --bpw error measurements), the second half evaluates.
# Usage: bench/quantize_quality.sh [WORKDIR] (default: build/quantize-quality); prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
DENSE=$SHARED/models/tinystories-656k
TEXT=$SHARED/data/tinystories-calib.txt
WORK=${1:-build/quantize-quality}
CTX=${CTX:-128}
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*

lines=$(wc -l <"$TEXT")
head -n $((lines / 2)) "$TEXT" >"$WORK/calib.txt"
tail -n +$((lines / 2 + 1)) "$TEXT" >"$WORK/eval.txt"

# size_of PATH -> bytes of tensor data (GGUF file size or safetensors files)
size_of() {
  if [ -d "$1" ]; then du -cb "$1"/*.safetensors | tail -1 | cut -f1; else stat -c %s "$1"; fi
}
row() {  # row MODEL_BASE LABEL OUT EXTRA
  local j
  j=$("$BIN" verify "$1" "$3" --text "$WORK/eval.txt" --ctx "$CTX" --no-hidden -q --json)
  python3 - "$2" "$3" "$j" "$(size_of "$3")" "$4" <<'EOF'
import json, sys
label, out, j, size, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print(f"| {label} | {size/1024:.0f} KiB | {extra} | {j['kld']['mean']['value']:.5f} | "
      f"{100*j['same_top_p']['value']:.1f} % | {j['perplexity']['ppl_ratio']['value']:.4f} |")
EOF
}
# bits per weight over the quantized linears, from quantize --json
qbpw() { python3 -c "import json,sys;j=json.load(open(sys.argv[1]));print(f\"{j.get('bpw_quantized', j.get('bpw_weights', 0)):.3f}\")" "$1"; }

# q MODEL LABEL OUT QUANTIZE-ARGS... : quantize, then one table row (or a row saying why it could not).
q() {
  local M=$1 label=$2 out=$3
  shift 3
  if "$BIN" quantize "$M" -o "$out" "$@" --json -q >"$out.json" 2>"$out.err"; then
    row "$M" "$label" "$out" "$(qbpw "$out.json")"
  else
    echo "| $label | — | — | not possible: $(sed 's/^moetool: error: //; s/|/\\|/g' "$out.err" | tail -1) | | |"
  fi
}

table() {  # table NAME MODEL dense|moe
  local name=$1 M=$2 W
  W=$WORK/$(echo "$1" | tr -c 'A-Za-z0-9\n' '_')
  mkdir -p "$W"
  local C=(--calib-text "$WORK/calib.txt" --ctx "$CTX")
  echo
  echo "### $name"
  echo
  echo "| mode | size | bpw (weight matrices) | mean KLD | same top-1 | PPL ratio |"
  echo "|---|---|---|---|---|---|"
  for t in q8_0 q4_0 q4_k_m; do q "$M" "GGUF $t" "$W/$t.gguf" --format gguf --type "$t"; done
  q "$M" "GGUF q4_0 + importance" "$W/q4_0-imat.gguf" --format gguf --type q4_0 "${C[@]}"
  q "$M" "GGUF q4_k_m + importance" "$W/q4_k_m-imat.gguf" --format gguf --type q4_k_m "${C[@]}"
  # The tied embedding/output head is outside the --bpw budget and follows --output-type; Q4_0's rule keeps it
  # Q8_0. Spending its bytes on the linears instead: same file size or less than q4_0.
  q "$M" "GGUF --bpw 4.5 (all linears, importance)" "$W/gguf-bpw-4.5.gguf" --format gguf --bpw 4.5 --bpw-all "${C[@]}"
  q "$M" "GGUF --bpw 6.0 --output-type q5_0 (importance)" "$W/gguf-bpw-6.0-o5.gguf" --format gguf --bpw 6.0 \
    --bpw-all --output-type q5_0 "${C[@]}"
  q "$M" "GGUF --bpw 6.5 --output-type q4_1 (importance)" "$W/gguf-bpw-6.5-o41.gguf" --format gguf --bpw 6.5 \
    --bpw-all --output-type q4_1 "${C[@]}"
  if [ "$3" = moe ]; then
    q "$M" "GGUF --bpw 4.5 (experts, importance)" "$W/gguf-bpw-experts-4.5.gguf" --format gguf --bpw 4.5 "${C[@]}"
  fi
  for g in 128 32; do
    for meth in rtn gptq; do
      q "$M" "GPTQ format int4 g$g $meth" "$W/gptq-int4-g$g-$meth" --format gptq --method "$meth" --bits 4 \
        --group-size "$g" "${C[@]}"
    done
  done
  q "$M" "GPTQ format int4 g32 gptq asym act-order" "$W/gptq-int4-g32-asym-act" --format gptq --bits 4 \
    --group-size 32 --asym --act-order "${C[@]}"
  for b in 4.5 3.5 2.5; do
    q "$M" "GPTQ --bpw $b (all linears, g128)" "$W/bpw-$b" --format gptq --bpw "$b" --bpw-all --group-size 128 "${C[@]}"
  done
  if [ "$3" = moe ]; then
    for b in 4.5 3.5 2.5; do
      q "$M" "GPTQ --bpw $b (experts, g128)" "$W/bpw-experts-$b" --format gptq --bpw "$b" --group-size 128 "${C[@]}"
    done
    q "$M" "GPTQ --bpw 3.5 --fused-widths (all linears, g128)" "$W/bpw-fused-3.5" --format gptq --bpw 3.5 --bpw-all \
      --fused-widths --group-size 128 "${C[@]}"
  fi
}

"$BIN" convert factorize "$DENSE" -o "$WORK/moe" --to mixtral --experts 8 --top-k 2 --router fit \
  --calib-text "$WORK/calib.txt" --ctx "$CTX" -q >/dev/null
table "TinyStories-656K (dense llama)" "$DENSE" dense
table "TinyStories-656K factorized to 8 experts, top-2 (mixtral)" "$WORK/moe" moe
