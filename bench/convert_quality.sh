#!/usr/bin/env bash
# bench/convert_quality.sh — quality of dense → MoE factorization on the TinyStories checkpoint:
# N = 8 experts, top-k ∈ {1, 2, 4}, every split (random, kmeans, coactivation) × router (random,
# centroid, fit), each output compared with the dense model by `moetool verify` (mean KLD, same-top-1,
# PPL ratio). The calibration text is split by lines: the first half calibrates (splits, shared
# neurons, the fitted router), the second half evaluates, so the fit is scored on text it never saw.
# Sanity rows: top-k = N with a zero router (exact by construction) and upcycling (identical experts).
# Usage: bench/convert_quality.sh [WORKDIR] (default: build/convert-quality); prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
SHARED=${MOETOOL_SHARED:-../shared}
MODEL=$SHARED/models/tinystories-656k
TEXT=$SHARED/data/tinystories-calib.txt
WORK=${1:-build/convert-quality}
CTX=${CTX:-128}
N=${EXPERTS:-8}
SEED=${SEED:-0}
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*

lines=$(wc -l <"$TEXT")
head -n $((lines / 2)) "$TEXT" >"$WORK/calib.txt"
tail -n +$((lines / 2 + 1)) "$TEXT" >"$WORK/eval.txt"
"$BIN" calibrate "$MODEL" --text "$WORK/calib.txt" --ctx "$CTX" --hidden --activations --no-router \
  -o "$WORK/stats.safetensors" -q --json >"$WORK/calibrate.json"
calib_tokens=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['tokens'])" "$WORK/calibrate.json")

# verify OUT -> "kld top1 ppl_ratio tokens"
metrics() {
  "$BIN" verify "$MODEL" "$1" --text "$WORK/eval.txt" --ctx "$CTX" --no-hidden -q --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(j["kld"]["mean"]["value"], j["same_top_p"]["value"], j["perplexity"]["ppl_ratio"]["value"], j["counts"]["tokens"])'
}
# mean of a per-layer report field (or "-")
layer_mean() {
  python3 -c '
import json, sys
v = [l[sys.argv[2]] for l in json.load(open(sys.argv[1]))["per_layer"] if l.get(sys.argv[2]) is not None]
print(f"{sum(v)/len(v):.3f}" if v else "-")' "$1" "$2"
}
row() {  # row LABEL K SPLIT ROUTER OUT REPORT
  read -r kld top1 ppl tokens <<<"$(metrics "$5")"
  printf "| %s | %s | %s | %s | %.4f | %.1f %% | %.3f | %s | %s | %s |\n" "$1" "$2" "$3" "$4" "$kld" \
    "$(python3 -c "print(100*$top1)")" "$ppl" "$(layer_mean "$6" recon_rel_err)" "$(layer_mean "$6" recon_oracle_err)" \
    "$(layer_mean "$6" router_r2)"
  EVAL_TOKENS=$tokens
}

echo "moetool: $("$BIN" --version | head -1); model: $MODEL; calibration: first half of $(basename "$TEXT") ($calib_tokens tokens); evaluation: second half, ctx $CTX"
echo
echo "| method | top-k | split | router | mean KLD | same top-1 | PPL ratio | calib. recon. error | oracle-routing error | router R² |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for K in 1 2 4; do
  for split in random kmeans coactivation; do
    for router in random centroid fit; do
      out="$WORK/f-$K-$split-$router"
      "$BIN" convert factorize "$MODEL" -o "$out" --experts "$N" --top-k "$K" --split "$split" --router "$router" \
        --to mixtral --calib-stats "$WORK/stats.safetensors" --seed "$SEED" -q --json --report "$out.report.json" >/dev/null
      row "factorize" "$K" "$split" "$router" "$out" "$out.report.json"
      rm -rf "$out"
    done
  done
done
out="$WORK/f-exact"
"$BIN" convert factorize "$MODEL" -o "$out" --experts "$N" --top-k "$N" --split kmeans --router zero --to mixtral \
  --calib-stats "$WORK/stats.safetensors" -q --report "$out.report.json" >/dev/null
row "factorize (sanity: all experts)" "$N" kmeans zero "$out" "$out.report.json"
out="$WORK/u-2"
"$BIN" convert upcycle "$MODEL" -o "$out" --experts "$N" --top-k 2 --to mixtral --seed "$SEED" -q \
  --report "$out.report.json" >/dev/null
row "upcycle (identical experts)" 2 "-" random "$out" "$out.report.json"
echo
echo "evaluation tokens scored per row: $EVAL_TOKENS"
