// bench/bench_dequant.cc — CPU dequantization speed per ggml type: dequantize_rows on a ROWS × COLS
// matrix of random weights (quantized once), RUNS timed runs; prints the fastest and the median run in
// ms, the float32 output rate of the fastest in GB/s and the least process CPU time of a run (steadier
// than wall time on a busy machine). Threads as OpenMP gives them (OMP_NUM_THREADS=1 for one core).
// Usage: bench_dequant [ROWS=4096] [COLS=4096] [RUNS=5]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <random>
#include <vector>

#include "formats/ggml_quants.h"

using namespace moetool;

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 4096, cols = argc > 2 ? std::atoll(argv[2]) : 4096;
  const int runs = argc > 3 ? std::atoi(argv[3]) : 5;
  std::vector<float> w(static_cast<size_t>(rows * cols));  // [rows, cols]
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& v : w) v = normal(rng);
  std::vector<float> out(w.size());  // [rows, cols]
  std::printf("dequantize_rows %lld x %lld, %d runs, %d threads\n", static_cast<long long>(rows),
              static_cast<long long>(cols), runs, omp_get_max_threads());
  for (GGMLType t : {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1, GGMLType::Q4_K,
                     GGMLType::Q5_K, GGMLType::Q6_K, GGMLType::F16, GGMLType::BF16}) {
    std::vector<uint8_t> q(static_cast<size_t>(rows) * ggml_row_size(t, cols));
    quantize_rows(t, w.data(), q.data(), rows, cols);
    std::vector<double> ms, cpu_ms;
    for (int r = 0; r < runs; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      dequantize_rows(t, q.data(), out.data(), rows, cols);
      cpu_ms.push_back(1e3 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    const double gb = 4.0 * static_cast<double>(out.size()) / 1e9;
    std::printf("%-5s min %8.2f ms  median %8.2f ms  %6.2f GB/s  cpu min %8.2f ms\n", ggml_type_name(t), ms.front(),
                ms[ms.size() / 2], gb / (ms.front() / 1e3), *std::min_element(cpu_ms.begin(), cpu_ms.end()));
  }
  return 0;
}
