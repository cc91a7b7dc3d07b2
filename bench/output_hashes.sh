#!/usr/bin/env bash
# bench/output_hashes.sh — sha256 of every file moetool writes for a fixed set of jobs on TinyStories-656K
# (convert upcycle/factorize, quantize gguf/gptq/--bpw, calibrate). Run it before and after a refactor that
# must not change outputs and diff the two lists:
#   bench/output_hashes.sh build > before.txt; ...; bench/output_hashes.sh build > after.txt; diff before.txt after.txt
# The command line is recorded in the output metadata, so every job runs as ./moetool inside the work
# directory ($MOETOOL_HASH_DIR, default /tmp/moetool-hashes) with relative paths: the same bytes from any checkout.
set -euo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/moetool
M=./moetool
SHARED=${MOETOOL_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
TS=$SHARED/models/tinystories-656k
TXT=$SHARED/data/tinystories-calib.txt
W=${MOETOOL_HASH_DIR:-/tmp/moetool-hashes}
rm -rf "$W" && mkdir -p "$W" && cd "$W"
ln -s "$BIN" moetool
cp -r "$TS" ts && chmod -R u+w ts && cp "$TXT" calib.txt
run() { "$M" "$@" -q >/dev/null 2>&1; }
for f in llama mixtral qwen2_moe deepseek_v3; do run synth --family $f --preset tiny --seed 5 -o synth-$f; done
run synth --family olmoe --preset tiny --seed 5 --dtype bf16 --max-shard-size 100KB -o synth-olmoe
run convert upcycle ts -o up --to mixtral --experts 4 --top-k 2 --noise 0.01 --seed 3
run convert upcycle ts -o upq --to qwen2_moe --experts 4 --top-k 2 --shared-expert --granularity 2
run convert factorize ts -o fac --to mixtral --experts 4 --top-k 2 --split coactivation --router fit --calib-text calib.txt --ctx 128 --chunks 4
run convert factorize ts -o fac3 --to qwen2_moe --experts 4 --top-k 2 --split kmeans --router fit --shared-neurons 10 --calib-text calib.txt --ctx 128 --chunks 4
"$M" calibrate ts --text calib.txt -o cal.safetensors --ctx 128 --chunks 4 --hidden --activations --gram >/dev/null 2>&1
"$M" calibrate fac --text calib.txt -o calfac.safetensors --ctx 128 --chunks 4 --gram >/dev/null 2>&1
run quantize ts -o q8.gguf --type q8_0
run quantize ts -o q4km.gguf --type q4_k_m --imatrix cal.safetensors
run quantize fac -o fac-q4.gguf --type q4_0
run quantize ts -o gptq --format gptq --bits 4 --group-size 64 --calib-text calib.txt --ctx 128 --chunks 4
run quantize fac -o facgptq --format gptq --bits 4 --group-size 64 --calib-text calib.txt --ctx 128 --chunks 4 --act-order
run quantize fac -o facbpw --format gptq --bpw 4.5 --group-size 64 --calib-text calib.txt --ctx 128 --chunks 4
run quantize fac -o facbpw.gguf --bpw 5 --calib-text calib.txt --ctx 128 --chunks 4
find . -type f ! -path './ts/*' ! -name calib.txt ! -name moetool | LC_ALL=C sort | xargs sha256sum
