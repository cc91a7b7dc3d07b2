#!/usr/bin/env bash
# scripts/gpu_check.sh — issue 6's acceptance runs on a machine with an NVIDIA GPU: the CUDA tests,
# the whole suite, the CLI with --device cuda against --device cpu, and the GPU benchmarks.
#
#   scripts/gpu_check.sh BUILD_DIR OUT_DIR [STEP...]     steps: info cuda cli bench all (default: all five)
#
# BUILD_DIR is a build made with nvcc (scripts/build.sh on a machine with the CUDA toolkit). Each step
# writes OUT_DIR/<step>.log and runs under its own time limit (GPU_CHECK_<STEP>_S seconds), so one
# slow step cannot starve the others. MOETOOL_SHARED must point at the shared test data.
set -u
B=$(cd "$1" && pwd); O=$2; shift 2
mkdir -p "$O"; O=$(cd "$O" && pwd)
STEPS=${*:-"info cuda cli bench all sanitize"}
MT="$B/moetool"; TESTS="$B/tests/moetool_tests"
SH=${MOETOOL_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
TS="$SH/models/tinystories-656k"; TEXT="$SH/data/tinystories-calib.txt"
W=$(mktemp -d)
lim() { local v="GPU_CHECK_${1^^}_S"; echo "${!v:-$2}"; }
say() { echo "== $*"; }

step_info() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  nproc; uname -r
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
}

step_cuda() {
  # every CUDA test (kernels, linear algebra, engine per family and dtype, CLI)
  timeout "$(lim cuda 240)" "$TESTS" --gtest_filter='*Cuda*' --gtest_output="xml:$O/cuda.xml"
  local rc=$?
  if [ $rc -ne 0 ] && command -v compute-sanitizer >/dev/null; then
    # the first failing tests once more under compute-sanitizer (memcheck): out-of-bounds, bad launches
    local failed
    failed=$(grep -o 'testcase name="[^"]*"[^>]*classname="[^"]*"[^>]*>\s*<failure' "$O/cuda.xml" 2>/dev/null |
      sed -E 's/testcase name="([^"]*)".*classname="([^"]*)".*/\2.\1/' | head -3 | paste -sd: -)
    if [ -n "$failed" ]; then
      say "compute-sanitizer on $failed"
      timeout "$(lim sanitizer 90)" compute-sanitizer --print-limit 20 "$TESTS" --gtest_filter="$failed" 2>&1 | tail -80
    fi
  fi
  return $rc
}

step_cli() {
  # the checker end to end on the GPU, against the CPU: logits, verify (also of quantized outputs),
  # calibrate, generate
  local rc=0
  head -c 1500 "$TEXT" > "$W/short.txt"  # within the model's context of 512
  "$MT" logits "$TS" --text "$W/short.txt" -o "$W/cpu.npy" || rc=1
  "$MT" logits "$TS" --text "$W/short.txt" -o "$W/cuda.npy" --device cuda || rc=1
  "$MT" logits "$TS" --text "$W/short.txt" -o "$W/bf16.npy" --device cuda --dtype bf16 || rc=1
  "$MT" logits "$TS" --text "$W/short.txt" -o "$W/cpu-bf16.npy" --dtype bf16 || rc=1
  python3 - "$W" <<'EOF' || rc=1
import sys, numpy as np
w = sys.argv[1]
def agree(ref, got):
    a = np.load(w + f"/{ref}.npy").astype(np.float64); b = np.load(w + f"/{got}.npy").astype(np.float64)
    nmse = ((a - b) ** 2).sum() / (a ** 2).sum(); top1 = (a.argmax(-1) == b.argmax(-1)).mean()
    print(f"logits {ref} vs {got}: {a.shape} nmse {nmse:.3e} top1 {top1:.4f}")
agree("cpu", "cuda"); agree("cpu", "bf16"); agree("cpu-bf16", "bf16")  # the last: the CPU's bf16 emulation
EOF
  "$MT" quantize "$TS" -o "$W/q4_0.gguf" --type q4_0 -q || rc=1
  "$MT" quantize "$TS" -o "$W/gptq" --format gptq --calib-text "$TEXT" -q || rc=1
  for cand in "$TS" "$W/q4_0.gguf" "$W/gptq"; do
    for dev in cpu cuda cuda-keep; do
      extra=(); [ "$dev" = cuda-keep ] && extra=(--gpu-keep-quantized)
      "$MT" verify "$TS" "$cand" --text "$TEXT" --device "${dev%-keep}" "${extra[@]}" --json -q > "$W/v.json" || rc=1
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], json.dumps(r.get("metrics", r))[:400])' \
        "$W/v.json" "$(basename "$cand")" "$dev"
    done
  done
  for dev in cpu cuda; do
    "$MT" calibrate "$TS" --text "$TEXT" -o "$W/calib-$dev.safetensors" --device "$dev" --json -q || rc=1
    "$MT" generate "$TS" --prompt "Once upon a time" -n 24 --greedy --device "$dev" || rc=1
  done
  python3 - "$W" <<'EOF' || rc=1
import sys, numpy as np
from safetensors.numpy import load_file
w = sys.argv[1]; a = load_file(w + "/calib-cpu.safetensors"); b = load_file(w + "/calib-cuda.safetensors")
assert a.keys() == b.keys(), (sorted(a)[:5], sorted(b)[:5])
worst = max((float(np.abs(a[k].astype(np.float64) - b[k]).max() / (np.abs(a[k]).max() + 1e-30)), k) for k in a if a[k].dtype.kind == "f")
print("calibrate cpu vs cuda: tensors", len(a), "worst relative max difference", worst)
EOF
  return $rc
}

step_bench() {
  local rc=0
  for f in llama mixtral; do
    [ -f "$W/$f-bench/config.json" ] || "$MT" synth --family "$f" --preset bench --dtype bf16 -o "$W/$f-bench" -q || rc=1
  done
  # --verify: a verify chunk on the device path against the host path; --profile: time per section
  timeout "$(lim bench 200)" "$B/bench_cuda" --ctx 2048 --dtype bf16 --svd 4096 --verify --profile \
    "$W/llama-bench" "$W/mixtral-bench" || rc=1
  timeout "$(lim transformers 200)" env PYTHONUNBUFFERED=1 python3 "$(dirname "$0")/../bench/bench_cuda_transformers.py" \
    --moetool "$MT" --bench "$B/bench_cuda" --ctx 2048 --dtype bf16 "$W/llama-bench" "$W/mixtral-bench" || rc=1
  return $rc
}

step_all() {
  # the rest of the suite with a GPU present (nothing else may break when one is usable); the CUDA
  # tests ran in step cuda, the fuzzers are CPU-only
  OMP_NUM_THREADS=2 timeout "$(lim all 300)" ctest --test-dir "$B" --output-on-failure -j8 -E 'Cuda|fuzz_parsers'
}

step_sanitize() {
  # compute-sanitizer (memcheck) over the kernels' tests: out-of-bounds accesses, misaligned loads
  timeout "$(lim sanitize 150)" compute-sanitizer --print-limit 20 --error-exitcode 3 "$TESTS" \
    --gtest_filter='CudaKernels.*:CudaLinalg.*'
}

status=0
for s in $STEPS; do
  say "step $s ($(date +%T))"
  t0=$SECONDS
  "step_$s" > "$O/$s.log" 2>&1
  rc=$?
  say "step $s: rc=$rc in $((SECONDS - t0)) s"
  tail -n 40 "$O/$s.log"
  [ $rc -eq 0 ] || status=1
done
rm -rf "$W"
exit $status
