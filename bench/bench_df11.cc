// bench/bench_df11.cc — DF11 throughput on the CPU: df11_encode and df11_decode (with its per-block
// hash check, and without it) of N BF16 values drawn like trained weights (N(0, 0.02) rounded to BF16), against a plain
// memcpy of the same BF16 bytes measured in the same run; RUNS timed runs, the fastest and the median,
// in GB/s of BF16 (2 bytes a value), and the stored size as a fraction of BF16. Threads as OpenMP gives
// them (OMP_NUM_THREADS=1 for one core).
// With --model DIR: every tensor of two or more dimensions of a checkpoint (rounded to BF16 as
// `quantize --format df11` does) coded, decoded and compared bit for bit; per tensor kind (the name
// with layer and expert numbers replaced by N) the tensors, the stored fraction of BF16 (smallest,
// overall, largest) and exponent bits; in all, encode and decode throughput on the CPU and — where a
// GPU is usable — of the CUDA decoder (kernels/cuda/df11_cuda.cu; the coded bytes' upload included).
// Usage: bench_df11 [N=67108864] [RUNS=5] [BLOCK=65536] | bench_df11 --model DIR [BLOCK=65536]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench/bench_util.h"
#include "core/dtype.h"
#include "formats/checkpoint.h"
#include "formats/df11.h"
#include "kernels/backend_cuda.h"
#include "kernels/device.h"

#include <chrono>
#include <map>
#include <regex>
#include <string>

using namespace moetool;

using bench::timed;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Uploads e's coded tensors and decodes them on the GPU; seconds of both, or −1 without a GPU.
double gpu_decode_seconds(const DF11Encoded& e, const std::vector<uint16_t>& want) {
  if (cuda_device_count() == 0) return -1;
  const int64_t nb = static_cast<int64_t>(e.hash.size());
  const auto table = df11_decode_table(e.lengths.data(), "bench");
  cuda::Buffer<uint16_t> out(static_cast<size_t>(e.n));
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  const auto st = cuda::df11_upload_decode(table.data(), e.offsets.data(), nb, e.exp.data(),
                                           static_cast<int64_t>(e.exp.size()), e.sm.data(), e.n, e.block,
                                           e.hash.data(), out.get());
  const double sec = seconds_since(t0);
  for (int32_t x : st)
    if (x != 0) std::printf("GPU: a block failed to decode\n"), std::exit(1);
  if (out.to_host(static_cast<size_t>(e.n)) != want) std::printf("GPU MISMATCH\n"), std::exit(1);
  return sec;
}

int model_mode(const std::string& dir, int64_t block) {
  const Checkpoint ck = Checkpoint::open(dir);
  struct Kind {
    int64_t tensors = 0, values = 0;
    uint64_t bytes = 0, exp_bytes = 0;
    double lo = 1e9, hi = 0;
  };
  std::map<std::string, Kind> kinds;
  Kind all;
  double enc = 0, dec = 0, gpu = 0;
  const std::regex num(R"(\.\d+\.)");
  for (const auto& name : ck.names()) {
    const Tensor t = ck.get(name);
    if (t.shape.size() < 2) continue;
    std::vector<uint16_t> v(static_cast<size_t>(t.numel()));
    if (t.dtype == DType::BF16) {
      std::memcpy(v.data(), t.data, v.size() * 2);
    } else {
      const std::vector<float> f = t.to_f32();
      for (size_t i = 0; i < v.size(); ++i) v[i] = f32_to_bf16(f[i]);
    }
    const int64_t n = static_cast<int64_t>(v.size());
    auto t0 = std::chrono::steady_clock::now();
    const DF11Encoded e = df11_encode(v.data(), n, block);
    enc += seconds_since(t0);
    std::vector<uint16_t> out(v.size());
    t0 = std::chrono::steady_clock::now();
    df11_decode(e.lengths.data(), e.offsets.data(), static_cast<int64_t>(e.offsets.size()) - 1, e.exp.data(),
                static_cast<int64_t>(e.exp.size()), e.sm.data(), n, block, out.data(), name, e.hash.data());
    dec += seconds_since(t0);
    if (out != v) {
      std::printf("MISMATCH: %s does not decode bit-exactly\n", name.c_str());
      return 1;
    }
    const double g = gpu_decode_seconds(e, v);
    if (g >= 0) gpu += g;
    const double ratio = static_cast<double>(e.bytes()) / (2.0 * static_cast<double>(n));
    for (Kind* k : {&kinds[std::regex_replace(name, num, ".N.")], &all}) {
      ++k->tensors;
      k->values += n;
      k->bytes += e.bytes();
      k->exp_bytes += e.exp.size();
      k->lo = std::min(k->lo, ratio);
      k->hi = std::max(k->hi, ratio);
    }
  }
  std::printf("| tensor | tensors | values | stored / BF16 (min, all, max) | exponent bits |\n|---|---|---|---|---|\n");
  kinds["(all)"] = all;
  for (const auto& [name, k] : kinds)
    std::printf("| %s | %lld | %lld | %.4f, %.4f, %.4f | %.3f |\n", name.c_str(), static_cast<long long>(k.tensors),
                static_cast<long long>(k.values), k.lo, static_cast<double>(k.bytes) / (2.0 * static_cast<double>(k.values)),
                k.hi, 8.0 * static_cast<double>(k.exp_bytes) / static_cast<double>(k.values));
  const double gb = 2.0 * static_cast<double>(all.values) / 1e9;
  std::printf("bit-exact: every tensor; %.2f GB of BF16; CPU encode %.2f GB/s, decode %.2f GB/s (%d threads)", gb,
              gb / enc, gb / dec, omp_get_max_threads());
  if (cuda_device_count() > 0) std::printf("; GPU upload + decode %.1f GB/s (%s)", gb / gpu, cuda_device_summary().c_str());
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && std::string(argv[1]) == "--model") return model_mode(argv[2], argc > 3 ? std::atoll(argv[3]) : 65536);
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
