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

table() {  # table NAME MODEL
  local name=$1 M=$2 W=$WORK/$1
  mkdir -p "$W"
  echo
  echo "### $name"
  echo
  echo "| mode | size | bpw (linears) | mean KLD | same top-1 | PPL ratio |"
  echo "|---|---|---|---|---|---|"
  for t in q8_0 q4_0 q4_k_m; do
    "$BIN" quantize "$M" -o "$W/$t.gguf" --format gguf --type "$t" --json -q >"$W/$t.json"
    row "$M" "GGUF $t" "$W/$t.gguf" "$(qbpw "$W/$t.json")"
  done
  "$BIN" quantize "$M" -o "$W/q4_0-imat.gguf" --format gguf --type q4_0 --calib-text "$WORK/calib.txt" --ctx "$CTX" \
    --json -q >"$W/q4_0-imat.json"
  row "$M" "GGUF q4_0 + importance" "$W/q4_0-imat.gguf" "$(qbpw "$W/q4_0-imat.json")"
  for g in 128 64 32; do
    for meth in rtn gptq; do
      local o="$W/gptq-int4-g$g-$meth"
      "$BIN" quantize "$M" -o "$o" --format gptq --method "$meth" --bits 4 --group-size "$g" \
        --calib-text "$WORK/calib.txt" --ctx "$CTX" --json -q >"$o.json"
      row "$M" "GPTQ format int4 g$g $meth" "$o" "$(qbpw "$o.json")"
    done
  done
  "$BIN" quantize "$M" -o "$W/gptq-int4-g64-act" --format gptq --bits 4 --group-size 64 --act-order \
    --calib-text "$WORK/calib.txt" --ctx "$CTX" --json -q >"$W/gptq-int4-g64-act.json"
  row "$M" "GPTQ format int4 g64 gptq act-order" "$W/gptq-int4-g64-act" "$(qbpw "$W/gptq-int4-g64-act.json")"
  for b in 4.5 3.5 2.5; do
    local o="$W/bpw-$b"
    "$BIN" quantize "$M" -o "$o" --format gptq --bpw "$b" --bpw-all --group-size 64 \
      --calib-text "$WORK/calib.txt" --ctx "$CTX" --json -q >"$o.json"
    row "$M" "GPTQ --bpw $b (all linears, g64)" "$o" "$(qbpw "$o.json")"
  done
  if [ "$3" = moe ]; then
    for b in 4.5 3.5 2.5; do
      local o="$W/bpw-experts-$b"
      "$BIN" quantize "$M" -o "$o" --format gptq --bpw "$b" --group-size 64 \
        --calib-text "$WORK/calib.txt" --ctx "$CTX" --json -q >"$o.json"
      row "$M" "GPTQ --bpw $b (experts, g64)" "$o" "$(qbpw "$o.json")"
    done
  fi
}

"$BIN" convert factorize "$DENSE" -o "$WORK/moe" --to mixtral --experts 8 --top-k 2 --router fit \
  --calib-text "$WORK/calib.txt" --ctx "$CTX" -q >/dev/null
table "TinyStories-656K (dense llama)" "$DENSE" dense
table "TinyStories-656K factorized to 8 experts, top-2 (mixtral)" "$WORK/moe" moe
