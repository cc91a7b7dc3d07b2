// bench/bench_df11.cc — DF11 throughput on the CPU: df11_encode and df11_decode (with its per-block
// hash check, and without it) of N BF16 values drawn like trained weights (N(0, 0.02) rounded to BF16), against a plain
// memcpy of the same BF16 bytes measured in the same run; RUNS timed runs, the fastest and the median,
// in GB/s of BF16 (2 bytes a value), and the stored size as a fraction of BF16. Threads as OpenMP gives
// them (OMP_NUM_THREADS=1 for one core).
// Usage: bench_df11 [N=67108864] [RUNS=5] [BLOCK=65536]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench/bench_util.h"
#include "core/dtype.h"
#include "formats/df11.h"

using namespace moetool;

using bench::timed;

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : (int64_t{1} << 26);
  const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  const int64_t block = argc > 3 ? std::atoll(argv[3]) : 65536;
  std::vector<uint16_t> v(static_cast<size_t>(n)), out(v.size()), copy(v.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& x : v) x = f32_to_bf16(normal(rng));
  const double gb = 2.0 * static_cast<double>(n) / 1e9;
  std::printf("DF11 on %lld BF16 values (%.2f GB), block %lld, %d runs, %d threads\n", static_cast<long long>(n), gb,
              static_cast<long long>(block), runs, omp_get_max_threads());
  timed("memcpy", runs, gb, [&] { std::memcpy(copy.data(), v.data(), v.size() * 2); });
  DF11Encoded e;
  timed("encode", runs, gb, [&] { e = df11_encode(v.data(), n, block); });
  timed("decode", runs, gb, [&] {
    df11_decode(e.lengths.data(), e.offsets.data(), static_cast<int64_t>(e.offsets.size()) - 1, e.exp.data(),
                static_cast<int64_t>(e.exp.size()), e.sm.data(), n, block, out.data(), "bench", e.hash.data());
  });
  timed("decode-nohash", runs, gb, [&] {
    df11_decode(e.lengths.data(), e.offsets.data(), static_cast<int64_t>(e.offsets.size()) - 1, e.exp.data(),
                static_cast<int64_t>(e.exp.size()), e.sm.data(), n, block, out.data(), "bench");
  });
  if (out != v) {
    std::printf("MISMATCH: decode is not bit-exact\n");
    return 1;
  }
  std::printf("stored %.4f of BF16 (exponent %.3f bits a value), bit-exact\n", static_cast<double>(e.bytes()) / (2.0 * n),
              8.0 * static_cast<double>(e.exp.size()) / static_cast<double>(n));
  return 0;
}
