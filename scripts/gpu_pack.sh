#!/usr/bin/env bash
# scripts/gpu_pack.sh — packs a CUDA build for a GPU machine that has the CUDA toolkit but none of
# this project's Debian packages (docs/cuda.md, "Running on a GPU machine …"): OUT/build.tar.xz (the
# build directory without objects: moetool, bench_cuda, tests/moetool_tests and the CTest files) and
# OUT/deps.tar.xz (lib/: the non-CUDA shared libraries the binaries load, resolved with ldd here;
# shared/: a copy of the shared test data).
#
#   scripts/gpu_pack.sh BUILD_DIR [OUT_DIR]        (OUT_DIR: .devcarry, git-ignored)
#
# On the GPU machine, from the repository root (with /work/main pointing at it: the tests carry
# absolute paths):
#   mkdir -p /tmp/dc && tar -xJf OUT/deps.tar.xz -C /tmp/dc && tar -xJf OUT/build.tar.xz
#   LD_LIBRARY_PATH=/tmp/dc/lib:/usr/local/cuda/lib64 MOETOOL_SHARED=/tmp/dc/shared \
#     MOETOOL_REQUIRE_SHARED=1 scripts/gpu_check.sh BUILD_DIR OUT
set -euo pipefail
B=${1:?usage: gpu_pack.sh BUILD_DIR [OUT_DIR]}
O=${2:-.devcarry}
SH=${MOETOOL_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
[ -x "$B/moetool" ] && [ -x "$B/tests/moetool_tests" ] || { echo "gpu_pack: $B has no moetool / tests/moetool_tests" >&2; exit 2; }
[ -d "$SH/models" ] || { echo "gpu_pack: no shared test data at $SH (set MOETOOL_SHARED)" >&2; exit 2; }
mkdir -p "$O"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib"
# Every library the binaries load except the C runtime and CUDA's own (the GPU machine has those).
for bin in "$B/moetool" "$B/tests/moetool_tests" "$B/bench_cuda"; do
  [ -x "$bin" ] || continue
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas[^/]*|libcusolver|libcusparse|libnvJitLink|libz)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
cp -rL "$SH" "$stage/shared"
tar -C "$stage" -cf - lib shared | xz -T0 -6 > "$O/deps.tar.xz"
tar -cf - --exclude=CMakeFiles --exclude='*.a' --exclude=fuzz --exclude=Testing --exclude=bench_engine \
  --exclude=bench_writer --exclude=bench_quantize --exclude=compile_commands.json --exclude=Makefile \
  --exclude=generated "$B" | xz -T0 -6 > "$O/build.tar.xz"
ls -l "$O/deps.tar.xz" "$O/build.tar.xz"
