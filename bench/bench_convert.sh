#!/usr/bin/env bash
# bench/bench_convert.sh — conversion speed and memory on the synth bench model (`moetool synth
# --family llama --preset bench --dtype bf16`, ~1B parameters, 16 layers, FFN 2048 → 8192).
# Upcycling is timed against `cp -r` (and `cat`, which moves every byte through user space like
# moetool) of the upcycled output's bytes in the same run; peak RSS via GNU time (%M). Two upcycle
# variants: plain copies (bytes copied as they are) and fine-grained with a shared expert (down_proj
# slices scaled in f32). Factorization (weights only: random and k-means splits, centroid router)
# reports seconds per layer.
# Usage: bench/bench_convert.sh [WORKDIR] (default: build/bench-convert). EXPERTS (default 4) sets
# the upcycled expert count: the output is ~(0.45 + 1.6·EXPERTS) GB, written twice (moetool, cp).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
WORK=${1:-build/bench-convert}
N=${EXPERTS:-4}
mkdir -p "$WORK"
rm -rf "${WORK:?}"/*

secs() { python3 -c "import sys;print(f'{float(sys.argv[1]):.2f}')" "$1"; }
ratio() { python3 -c "print(f'{float($1)/max(float($2),1e-3):.2f}x')"; }
measure() {  # measure VAR cmd...: wall seconds and peak RSS (KiB) via GNU time
  local tf; tf=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$tf" "${@:2}" >/dev/null 2>&1
  read -r "${1}_s" "${1}_kb" <"$tf"; rm -f "$tf"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "moetool: $("$BIN" --version | head -1)"
dense="$WORK/dense"
"$BIN" synth --family llama --preset bench --dtype bf16 -o "$dense" -q >/dev/null
echo "dense: $(du -sb "$dense" | cut -f1) bytes (llama bench, bf16)"
echo
echo "| conversion | output bytes | moetool s (median of 3) | cp s | cat s | moetool vs cp | moetool vs cat | moetool peak RSS | one layer of output |"
echo "|---|---|---|---|---|---|---|---|---|"
median() { python3 -c "import statistics,sys;print(statistics.median(map(float,sys.argv[1:])))" "$@"; }
for variant in "plain:--experts $N --top-k 2" "granular+shared:--experts $((2 * N)) --top-k 4 --granularity 2 --shared-expert"; do
  label=${variant%%:*}
  args=${variant#*:}
  out="$WORK/moe"
  to=mixtral
  [[ $args == *shared* ]] && to=qwen2_moe
  us=() cs=() ks=() kb=0
  # Interleaved repetitions (page cache and writeback vary run to run): the medians are reported.
  for rep in 1 2 3; do
    rm -rf "$out"
    sync
    # shellcheck disable=SC2086
    measure u "$BIN" convert upcycle "$dense" -o "$out" --to "$to" $args -q
    us+=("$u_s"); kb=$(( u_kb > kb ? u_kb : kb ))
    sync
    measure c cp -r "$out" "$out.cp"
    cs+=("$c_s")
    rm -rf "$out.cp"
    sync
    measure k sh -c "mkdir -p '$out.cat' && for f in '$out'/*; do cat \"\$f\" > '$out.cat'/\$(basename \"\$f\"); done"
    ks+=("$k_s")
    rm -rf "$out.cat"
  done
  bytes=$(du -sb "$out" | cut -f1)
  layer_bytes=$((bytes / 16))
  u_s=$(median "${us[@]}") c_s=$(median "${cs[@]}") k_s=$(median "${ks[@]}")
  printf "| upcycle %s (%s, %s) | %s | %s | %s | %s | %s | %s | %s MiB | ~%s MiB |\n" "$label" "$to" "$args" "$bytes" \
    "$(secs "$u_s")" "$(secs "$c_s")" "$(secs "$k_s")" "$(ratio "$c_s" "$u_s")" "$(ratio "$k_s" "$u_s")" \
    "$((kb / 1024))" "$((layer_bytes / 1048576))"
  echo "  runs (moetool / cp / cat s): ${us[*]} / ${cs[*]} / ${ks[*]}" >&2
  rm -rf "$out"
done
echo
echo "| factorization (8 experts, top-2, weights only) | total s | seconds per layer (mean) | peak RSS |"
echo "|---|---|---|---|"
for split in random kmeans; do
  out="$WORK/fact"
  sync
  measure f "$BIN" convert factorize "$dense" -o "$out" --experts 8 --top-k 2 --split "$split" --router centroid \
    --to mixtral -q --report "$WORK/fact.json"
  per=$(python3 -c "import json,sys;l=json.load(open(sys.argv[1]))['per_layer'];print(f'{sum(x[\"seconds\"] for x in l)/len(l):.2f}')" "$WORK/fact.json")
  printf "| split %s, router centroid | %s | %s | %s MiB |\n" "$split" "$(secs "$f_s")" "$per" "$((f_kb / 1024))"
  rm -rf "$out"
done
rm -rf "$WORK"
