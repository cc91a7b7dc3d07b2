#!/usr/bin/env bash
# bench/bench_foundation.sh — checkpoint writing and inspect speed (issue: foundation).
# Writes the synth bench models with `moetool synth`; then, in the same run, copies them with `cp`
# (the baseline) and with bench_writer (the safetensors writer alone: mmap in, positional writes
# out); reports speed ratios against cp, `inspect` time, and peak RSS for a tiny and a bench-sized
# model (memory must not grow with model size: the writer streams, the reader maps). `cp` may
# clone or offload the copy (copy_file_range), so `cat` — which moves every byte through user
# space like the writer — is reported beside it.
# Usage: bench/bench_foundation.sh [WORKDIR] (default: build/bench; needs ~10 GB free).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOETOOL_BIN:-build/moetool}
WRITER=${MOETOOL_BENCH_WRITER:-$(dirname "$BIN")/bench_writer}
WORK=${1:-build/bench}
mkdir -p "$WORK"
rm -rf "$WORK"/*

secs() { python3 -c "import sys;print(f'{float(sys.argv[1]):.2f}')" "$1"; }
measure() {  # measure OUTVAR_PREFIX cmd...: wall seconds and peak RSS (KiB) via GNU time; stdout kept
  local tf; tf=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$tf" "${@:2}" >"$tf.out" 2>/dev/null
  read -r "${1}_s" "${1}_kb" <"$tf"; LAST_OUT=$(cat "$tf.out"); rm -f "$tf" "$tf.out"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "moetool: $($BIN --version | head -1)"
printf "| model | dtype | bytes | cp s | cat s | writer copy s | writer vs cp | writer vs cat | writer peak heap | synth s (generate+write) | synth vs cat | synth peak RSS | inspect s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
for spec in "llama tiny f32" "llama bench bf16" "mixtral bench bf16"; do
  read -r fam preset dt <<<"$spec"
  out="$WORK/$fam-$preset"
  sync
  measure w "$BIN" synth --family "$fam" --preset "$preset" --dtype "$dt" -o "$out" -q --force
  bytes=$(du -sb "$out" | cut -f1)
  sync
  measure c cp -r "$out" "$out.copy"
  sync
  measure k sh -c "mkdir -p '$out.cat' && for f in '$out'/*; do cat \"\$f\" > '$out.cat'/\$(basename \"\$f\"); done"
  sync
  measure r "$WRITER" "$out" "$out.rewrite"
  anon_kb=$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['peak_anon_kib'])" "$LAST_OUT")
  sync
  measure i "$BIN" inspect "$out"
  ratio() { python3 -c "print(f'{float($1)/max(float($2),1e-3):.2f}x')"; }
  printf "| %s %s | %s | %s | %s | %s | %s | %s | %s | %s MiB | %s | %s | %s MiB | %s |\n" "$fam" "$preset" "$dt" \
    "$bytes" "$(secs "$c_s")" "$(secs "$k_s")" "$(secs "$r_s")" "$(ratio "$c_s" "$r_s")" "$(ratio "$k_s" "$r_s")" \
    "$((anon_kb / 1024))" "$(secs "$w_s")" "$(ratio "$k_s" "$w_s")" "$((w_kb / 1024))" "$(secs "$i_s")"
  rm -rf "$out.copy" "$out.rewrite" "$out.cat"
done
rm -rf "$WORK"
