// bench/bench_fp8.cc — block-FP8 throughput on the CPU: fp8_quantize (128 × 128 blocks, transformers'
// rounding) and fp8_dequantize of a ROWS × COLS f32 matrix of N(0, 0.02) weights, against a plain memcpy
// of the f32 matrix in the same run; RUNS timed runs, fastest and median, in GB/s of f32 input (quantize)
// or f32 output (dequantize). Threads as OpenMP gives them.
// Usage: bench_fp8 [ROWS=8192] [COLS=8192] [RUNS=5]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench/bench_util.h"
#include "formats/fp8.h"

using namespace moetool;

using bench::timed;

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 8192, cols = argc > 2 ? std::atoll(argv[2]) : 8192;
  const int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  std::vector<float> w(static_cast<size_t>(rows * cols)), copy(w.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& x : w) x = normal(rng);
  const double gb = 4.0 * static_cast<double>(w.size()) / 1e9;
  std::printf("FP8 128x128 on %lld x %lld f32 (%.2f GB), %d runs, %d threads\n", static_cast<long long>(rows),
              static_cast<long long>(cols), gb, runs, omp_get_max_threads());
  timed("memcpy", runs, gb, [&] { std::memcpy(copy.data(), w.data(), w.size() * 4); });
  FP8Quantized q;
  timed("quantize", runs, gb, [&] { q = fp8_quantize(w.data(), rows, cols, 128, 128); });
  Tensor qt = Tensor::zeros(DType::F8_E4M3, {rows, cols});
  std::memcpy(qt.data, q.q.data(), q.q.size());
  const Shape g = fp8_scale_shape(rows, cols, 128, 128);
  Tensor st = Tensor::zeros(DType::F32, g);
  std::memcpy(st.data, q.scale.data(), q.scale.size() * 4);
  timed("dequantize", runs, gb, [&] { fp8_dequantize(qt, st, 128, 128, "bench"); });
  return 0;
}
