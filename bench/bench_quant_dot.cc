// bench/bench_quant_dot.cc — the CPU engine's quantized matmul, float path (tiles dequantized, sgemm)
// against the integer path (kernels/quant_dot.h: int8 activations, integer dot products), per ggml type
// on a ROWS × COLS matrix of random weights, N tokens, RUNS timed runs each; prints the fastest run and
// the least process CPU time of a run (steadier than wall time on a busy machine) in ms, the GMAC/s of
// the fastest, and float/int8. Also the integer kernel alone (weights unpacked once) per instruction
// set with `--kernels`. Threads as OpenMP gives them.
// Usage: bench_quant_dot [ROWS=4096] [COLS=2048] [N=512] [RUNS=5] [--kernels]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <vector>

#include "formats/ggml_quants.h"
#include "kernels/linear_quant.h"
#include "kernels/quant_dot.h"

using namespace moetool;

namespace {

struct Time {
  double ms, cpu_ms;
};
Time best_of(int runs, const std::function<void()>& f) {
  Time b{1e30, 1e30};
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    f();
    b.cpu_ms = std::min(b.cpu_ms, 1e3 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
    b.ms = std::min(b.ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 4096, cols = argc > 2 ? std::atoll(argv[2]) : 2048;
  const int64_t n = argc > 3 ? std::atoll(argv[3]) : 512;
  const int runs = argc > 4 ? std::atoi(argv[4]) : 5;
  const bool kernels = argc > 5 && std::strcmp(argv[5], "--kernels") == 0;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(n * cols));
  for (float& v : w) v = 0.02f * normal(rng);
  for (float& v : x) v = normal(rng);
  std::vector<float> y(static_cast<size_t>(n * rows));
  const double gmac = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(n) / 1e9;
  std::printf("quantized matmul [%lld x %lld] by %lld tokens, %d runs, %d threads, int8 kernel %s\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n), runs,
              omp_get_max_threads(), dot_path_name(best_dot_path()));
  for (GGMLType t : {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1, GGMLType::Q4_K,
                     GGMLType::Q5_K, GGMLType::Q6_K}) {
    const auto m = quantize_matrix(t, w.data(), rows, cols, "w");
    set_quant_dot(QuantDot::Float);
    const Time f = best_of(runs, [&] { m->matmul(x.data(), n, y.data()); });
    set_quant_dot(QuantDot::Int8);
    const Time i = best_of(runs, [&] { m->matmul(x.data(), n, y.data()); });
    std::printf("%-5s float %8.2f ms (cpu %8.2f, %6.1f GMAC/s)  int8 %8.2f ms (cpu %8.2f, %6.1f GMAC/s)  float/int8 %.2f\n",
                ggml_type_name(t), f.ms, f.cpu_ms, gmac / (f.ms / 1e3), i.ms, i.cpu_ms, gmac / (i.ms / 1e3),
                f.ms / i.ms);
    if (!kernels) continue;
    std::vector<uint8_t> q(static_cast<size_t>(rows) * ggml_row_size(t, cols));
    quantize_rows(t, w.data(), q.data(), rows, cols);
    U8Rows u;
    unpack_ggml_rows(t, q.data(), rows, cols, &u);
    Q8Acts a;
    quantize_acts(x.data(), n, cols, u.offset, &a);
    for (DotPath p : {DotPath::Scalar, DotPath::Avx2, DotPath::Avx512Vnni}) {
      if (!dot_path_supported(p) || (p == DotPath::Scalar && gmac > 0.5)) continue;
      const Time k = best_of(runs, [&] { dot_rows(u, a, y.data(), rows, 0.0f, p); });
      std::printf("      kernel %-12s one thread, unpacked once: %8.2f ms, %6.1f GMAC/s\n", dot_path_name(p), k.ms,
                  gmac / (k.ms / 1e3));
    }
  }
  return 0;
}
