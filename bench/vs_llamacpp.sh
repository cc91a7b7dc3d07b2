#!/usr/bin/env bash
# bench/vs_llamacpp.sh — moetool against llama.cpp on this machine, CPU only, same model, same files.
# The peer: the llama.cpp vendored in the llama-cpp-python 0.3.36 sdist (PyPI), built once (Release,
# GGML_NATIVE, static, CPU only) into build-llamacpp/. The model: the synth llama bench preset in f32
# (1.04 B parameters, 4.15 GB of safetensors) and moetool's F32 GGUF of it. Each job is a pair of whole
# processes run in turn (A B A B … after WARMUP unpaired rounds): medians of wall / user / sys seconds
# and peak RSS (GNU time), and the pair-wise median of A/B wall. Jobs:
#   quantize → Q8_0 and → Q4_0: `moetool quantize` from the safetensors, and from the same F32 GGUF
#     (requantizing), vs `llama-quantize` from the F32 GGUF (THREADS threads); then the outputs are
#     compared tensor by tensor (raw bytes, by name);
#   teacher-forced logits of 2 chunks of 512 tokens on the F32 GGUF and on llama.cpp's Q8_0 and Q4_0
#     files (both tools read the identical file): `moetool logits` (default --dot int8) vs
#     `llama-perplexity`; plus one unpaired `moetool logits --dot float` run on Q8_0.
# Each row says how much CPU other processes took during its timed runs (/proc/stat less the runs'
# own): the figures mean something only where that is near 0. Before each job the script waits up to
# IDLE_WAIT s for an idle machine (< 5 % busy over 5 s); a job where others took more than MAX_OTHERS %
# is run again, TRIES times at most. Writes WORK/results.md; reuses the build and the inputs.
# Usage: [WORK=/tmp/vs_llamacpp] [MOETOOL=build/moetool] [RUNS=3] [WARMUP=1] [THREADS=2] [IDLE_WAIT=300]
#   [MAX_OTHERS=10] [TRIES=3] bench/vs_llamacpp.sh [build|inputs|all] (build: the peer only; inputs: + inputs)
# Needs: pip, cmake, a C++ compiler, python3 with numpy and gguf, /usr/bin/time; ~10 GB in WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAGE=${1:-all}
WORK=${WORK:-/tmp/vs_llamacpp}
MOETOOL=${MOETOOL:-$ROOT/build/moetool}
PEER=${PEER_DIR:-$ROOT/build-llamacpp}
PYPKG_VERSION=0.3.36
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-2}
IDLE_WAIT=${IDLE_WAIT:-300} MAX_OTHERS=${MAX_OTHERS:-10} TRIES=${TRIES:-3}
CTX=512 CHUNKS=2
NTOK=$((CTX * CHUNKS))

die() { echo "vs_llamacpp: $*" >&2; exit 1; }
need() { for t in "$@"; do command -v "$t" >/dev/null 2>&1 || die "missing tool: $t (install it or put it on PATH)"; done; }
need python3 /usr/bin/time
python3 -c 'import numpy, gguf' 2>/dev/null || die "python3 lacks numpy or gguf (pip install numpy gguf)"
case $STAGE in build | inputs | all) ;; *) die "unknown stage '$STAGE' (build, inputs or all)" ;; esac
mkdir -p "$WORK/logs"

# ---- the peer: llama.cpp from llama-cpp-python's sdist --------------------------------------------
QUANTIZE=$PEER/build/bin/llama-quantize
PERPLEXITY=$PEER/build/bin/llama-perplexity
if [[ ! -x $QUANTIZE || ! -x $PERPLEXITY ]]; then
  need pip cmake c++
  mkdir -p "$PEER/dl"
  sdist=$PEER/dl/llama_cpp_python-$PYPKG_VERSION.tar.gz
  [[ -f $sdist ]] || pip download --no-binary :all: --no-deps "llama-cpp-python==$PYPKG_VERSION" -d "$PEER/dl" \
    || die "pip download of llama-cpp-python==$PYPKG_VERSION failed"
  rm -rf "$PEER/src" "$PEER/dl/llama_cpp_python-$PYPKG_VERSION"
  tar -xzf "$sdist" -C "$PEER/dl"
  mv "$PEER/dl/llama_cpp_python-$PYPKG_VERSION/vendor/llama.cpp" "$PEER/src"
  # the sdist has no git history: the commit is the one its CHANGELOG names for this release
  awk -v v="## [$PYPKG_VERSION]" '$0 == v {f = 1; next} f && /^## / {exit} f && /llama.cpp@/ {sub(/.*llama.cpp@/, ""); print; exit}' \
    "$PEER/dl/llama_cpp_python-$PYPKG_VERSION/CHANGELOG.md" >"$PEER/commit.txt"
  gen=(); command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  t0=$(date +%s)
  cmake -S "$PEER/src" -B "$PEER/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DGGML_CUDA=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF >"$PEER/build.log" 2>&1 \
    || die "llama.cpp cmake configure failed: see $PEER/build.log"
  cmake --build "$PEER/build" --target llama-quantize llama-perplexity -j "$(nproc)" >>"$PEER/build.log" 2>&1 \
    || die "llama.cpp build failed: see $PEER/build.log"
  echo $(($(date +%s) - t0)) >"$PEER/build-seconds.txt"
fi
ggml_v=$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' "$PEER/src/ggml/CMakeLists.txt" | paste -sd.)
PEER_VERSION="llama.cpp ggml-org/llama.cpp@$(cat "$PEER/commit.txt" 2>/dev/null || echo unknown) (vendored by llama-cpp-python $PYPKG_VERSION; ggml $ggml_v)"
echo "peer: $PEER_VERSION; build took $(cat "$PEER/build-seconds.txt" 2>/dev/null || echo '?') s"
[[ $STAGE == build ]] && exit 0

# ---- inputs ---------------------------------------------------------------------------------------
[[ -x $MOETOOL ]] || die "moetool not found at $MOETOOL (set MOETOOL)"
MT=$WORK/moetool  # a private copy: the original may be rebuilt while this runs
cmp -s "$MOETOOL" "$MT" 2>/dev/null || cp "$MOETOOL" "$MT"
MT_VERSION="$("$MT" --version | head -1), binary sha256 $(sha256sum "$MT" | cut -c1-12) (repo HEAD at run time\
 $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ', tree modified'))"
M=$WORK/llama-bench
if [[ ! -f $WORK/.synth.done ]]; then
  "$MT" synth --family llama --preset bench --dtype f32 -o "$M" --force -q
  touch "$WORK/.synth.done"
fi
if [[ ! -f $WORK/f32.gguf ]]; then
  "$MT" quantize "$M" -o "$WORK/f32.part.gguf" --format gguf --type f32 --force -q
  mv "$WORK/f32.part.gguf" "$WORK/f32.gguf"
fi
TEXT=$ROOT/examples/texts/stories-eval.txt
ntok() { "$MT" tokenize "$M" --text "$(cat "$1")" --json | python3 -c "import json,sys;print(len(json.load(sys.stdin)['ids']))"; }
if (($(ntok "$TEXT") < NTOK + CHUNKS)); then
  cat "$TEXT" "$ROOT/examples/texts/stories-calib.txt" >"$WORK/text.txt"
  TEXT=$WORK/text.txt
  (($(ntok "$TEXT") >= NTOK + CHUNKS)) || die "$TEXT has fewer than $NTOK tokens"
fi
echo "text: $TEXT ($(ntok "$TEXT") tokens with moetool's tokenizer)"
[[ $STAGE == inputs ]] && exit 0

# ---- paired timing --------------------------------------------------------------------------------
# run1 LOG CMD…: one run under GNU time, output appended to LOG; prints "wall user sys peak_kib"
run1() {
  local tf r; tf=$(mktemp)
  /usr/bin/time -f "%e %U %S %M %x" -o "$tf" "${@:2}" >>"$1" 2>&1 || true
  r=$(tail -1 "$tf"); rm -f "$tf"
  [[ ${r##* } == 0 ]] || die "exit status ${r##* } from: ${*:2} (see $1)"
  echo "${r% *}"
}
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }  # jiffies, all CPUs
wait_idle() {
  local t=0 b
  while ((t < IDLE_WAIT)); do
    b=$(busy); sleep 5; (($(busy) - b < $(nproc) * 25)) && return; t=$((t + 5))
  done
}
# row JOB TOKENS BUSY_JIFFIES A.txt [B.txt]: one table row from the runs' "wall user sys peak_kib" lines
row() { python3 - "$(nproc)" "$@" <<'PY'
import statistics as st, sys
ncpu, job, tok, busy, *files = sys.argv[1:]
runs = [[list(map(float, l.split())) for l in open(f)] for f in files]
med = [[st.median(c) for c in zip(*r)] for r in runs]
cell = lambda m: f"{m[0]:.2f} s ({m[1]:.2f} u, {m[2]:.2f} s, {m[3] / 1024:.0f} MiB)"
allr = [x for r in runs for x in r]
others = max(0.0, int(busy) / 100 - sum(x[1] + x[2] for x in allr)) / sum(x[0] for x in allr) / int(ncpu)
b = len(runs) > 1
ratio = f"{st.median(x[0] / y[0] for x, y in zip(*runs)):.2f}" if b else "—"
tps = " / ".join(f"{int(tok) / m[0]:.0f}" for m in med) + ("" if b else " / —") if tok else "—"
print(f"| {job} | {cell(med[0])} | {cell(med[1]) if b else '—'} | {ratio} | {tps} | {others:.0%} |")
PY
}
TABLE=$WORK/table.md; : >"$TABLE"; : >"$WORK/pairs.tsv"
# pair JOB "A" ["B"] [TOKENS] ["FILES"]: A = moetool, B = llama.cpp (none: A alone); plain word lists, no
# shell syntax. FILES (A's outputs) are removed before each of A's runs, outside the timing, so both tools
# write into a fresh file: llama-quantize truncates its output at open, dropping the previous output's
# unwritten pages; moetool writes a temporary file and renames it when complete, so they would stay dirty
# while it writes — back-to-back 1 GB rewrites then cross the kernel's background dirty threshold on this
# VM and cost moetool ~1.5 s more system time.
pair() {
  local job=$1 tok=${4:-} log=$WORK/logs/${1//[^A-Za-z0-9_.-]/_} a b i b0 x try line o rmf
  read -r -a a <<<"$2"; read -r -a b <<<"$3"; read -r -a rmf <<<"${5:-}"
  fresh() { ((${#rmf[@]} == 0)) || rm -f "${rmf[@]}"; }
  [[ -n $3 ]] && printf '%s\t%s\t%s\n' "$job" "$2" "$3" >>"$WORK/pairs.tsv"
  : >"$log.a.log"; : >"$log.b.log"
  x=("$log.a.txt"); [[ -z $3 ]] || x+=("$log.b.txt")
  for ((try = 1; try <= TRIES; try++)); do  # again while other processes took > MAX_OTHERS % of the CPUs
    wait_idle; echo "== $job" >&2; : >"$log.a.txt"; : >"$log.b.txt"
    for ((i = 0; i < WARMUP; i++)); do
      fresh; run1 "$log.a.log" "${a[@]}" >/dev/null; [[ -z $3 ]] || run1 "$log.b.log" "${b[@]}" >/dev/null
    done
    b0=$(busy)
    for ((i = 0; i < RUNS; i++)); do
      fresh; run1 "$log.a.log" "${a[@]}" >>"$log.a.txt"
      [[ -z $3 ]] || run1 "$log.b.log" "${b[@]}" >>"$log.b.txt"
    done
    line=$(row "$job" "$tok" $(($(busy) - b0)) "${x[@]}"); o=${line%\%*}
    ((${o##* } <= MAX_OTHERS)) && break; echo "$line (busy machine)" >&2
  done
  echo "$line" | tee -a "$TABLE" >&2
}
check_logits() {  # JOB: moetool wrote NTOK rows, llama-perplexity ran CHUNKS chunks of CTX
  local r; r=$(python3 -c "import numpy,sys;print(numpy.load(sys.argv[1],mmap_mode='r').shape[0])" "$WORK/x.npy")
  ((r == NTOK)) || die "$1: moetool wrote $r rows of logits, expected $NTOK"
  grep -q "calculating perplexity over $CHUNKS chunks.*n_ctx=$CTX" "$WORK/logs/${1//[^A-Za-z0-9_.-]/_}.b.log" \
    || die "$1: llama-perplexity did not run $CHUNKS chunks of $CTX (see $WORK/logs/)"
  rm -f "$WORK/x.npy"
}

for t in q8_0:Q8_0:q8 q4_0:Q4_0:q4; do
  IFS=: read -r mt lt s <<<"$t"
  pair "quantize → $lt" "$MT quantize $M -o $WORK/m_$s.gguf --format gguf --type $mt --force -q" \
    "$QUANTIZE $WORK/f32.gguf $WORK/l_$s.gguf $lt $THREADS" "" "$WORK/m_$s.gguf"
  pair "quantize F32 GGUF → $lt" "$MT quantize $WORK/f32.gguf -o $WORK/g_$s.gguf --type $mt --force -q" \
    "$QUANTIZE $WORK/f32.gguf $WORK/l_$s.gguf $lt $THREADS" "" "$WORK/g_$s.gguf"
done

IDENT=$WORK/identity.txt
python3 - "$WORK" >"$IDENT" <<'PY' || die "the tensor identity check failed"
import sys, numpy as np
from gguf import GGUFReader
w = sys.argv[1]
for s, p0 in (("q8", "m"), ("q4", "m"), ("q8", "g"), ("q4", "g")):
    m, l = ({t.name: t for t in GGUFReader(f"{w}/{p}_{s}.gguf").tensors} for p in (p0, "l"))
    diff = [f"{n}: only in {'moetool' if n in m else 'llama.cpp'}" for n in sorted(set(m) ^ set(l))]
    for n in sorted(set(m) & set(l)):
        a, b = m[n], l[n]
        x, y = (np.asarray(t.data).view(np.uint8).ravel() for t in (a, b))
        if a.tensor_type != b.tensor_type or list(a.shape) != list(b.shape) or x.size != y.size:
            diff.append(f"{n}: {a.tensor_type.name}{list(a.shape)} vs {b.tensor_type.name}{list(b.shape)}")
        elif not np.array_equal(x, y):
            diff.append(f"{n} ({a.tensor_type.name}): {int((x != y).sum())} of {x.size} bytes differ")
    print(f"{s} ({'from the F32 GGUF' if p0 == 'g' else 'from safetensors'}): {len(set(m) & set(l))} common tensors, {len(diff)} differ" + "".join(f"\n  {d}" for d in diff))
PY
cat "$IDENT" >&2

for f in f32:f32.gguf q8:l_q8.gguf q4:l_q4.gguf; do
  IFS=: read -r s g <<<"$f"
  job="logits $s, ${NTOK} tok"
  pair "$job" "$MT logits $WORK/$g --text $TEXT --ctx $CTX --chunks $CHUNKS -o $WORK/x.npy" \
    "$PERPLEXITY -m $WORK/$g -f $TEXT -c $CTX --chunks $CHUNKS -t $THREADS -b $CTX" "$NTOK" "$WORK/x.npy"
  check_logits "$job"
done
RUNS=1 WARMUP=0 pair "logits q8 --dot float (1 run)" \
  "$MT logits $WORK/l_q8.gguf --text $TEXT --ctx $CTX --chunks $CHUNKS --dot float -o $WORK/x.npy" "" "$NTOK"
rm -f "$WORK/x.npy"

cat >"$WORK/results.md" <<EOF
# moetool vs llama.cpp (CPU)

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
- moetool: $MT_VERSION; llama.cpp: $PEER_VERSION
- model: synth llama bench preset, f32 (1.04 B parameters); text: ${TEXT#"$ROOT"/}; $THREADS threads
- $RUNS paired runs (A = moetool, B = llama.cpp, in turn) after $WARMUP warm-up round(s); medians of whole-process
  wall seconds (user, sys, peak RSS by GNU time); speed ratio = pair-wise median of moetool wall / llama.cpp wall
  (> 1: llama.cpp faster); tok/s = $NTOK / median wall; others: CPU share other processes took meanwhile

| job | moetool wall (user, sys, peak RSS) | llama.cpp wall (user, sys, peak RSS) | speed llama.cpp/moetool | tok/s moetool / llama.cpp | others |
|---|---|---|---|---|---|
$(cat "$TABLE")

Commands (A vs B):

$(while IFS=$'\t' read -r j a b; do echo "- $j: \`${a//$WORK/WORK}\` vs \`${b//$WORK/WORK}\`"; done <"$WORK/pairs.tsv")

Tensor identity (moetool's GGUF vs llama-quantize's, raw bytes by name):

\`\`\`
$(cat "$IDENT")
\`\`\`
EOF
echo "wrote $WORK/results.md"
