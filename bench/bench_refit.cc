// bench/bench_refit.cc — the cost of factorize's down refit (convert/expert_refit.h) for one layer:
// T calibration tokens, I intermediate neurons in 8 experts of I/8 (top-2), H hidden, random data;
// against the layer's FFN output on the same tokens (Y = A·downᵀ, the GEMM every calibrated
// factorization already does) in the same run. Prints seconds of each (best of RUNS) and the memory
// the refit's normal equations take (I² doubles, twice).
// Usage: bench_refit [I=2048] [H=1024] [T=2048] [RUNS=1]
#include <Eigen/Dense>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "convert/expert_refit.h"

using namespace moetool;

int main(int argc, char** argv) {
  const int64_t I = argc > 1 ? std::atoll(argv[1]) : 2048, H = argc > 2 ? std::atoll(argv[2]) : 1024;
  const int64_t T = argc > 3 ? std::atoll(argv[3]) : 2048;
  const int runs = argc > 4 ? std::atoi(argv[4]) : 1;
  const int64_t E = 8, k = 2;
  std::mt19937_64 g(1);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> A(static_cast<size_t>(T * I)), down(static_cast<size_t>(H * I));
  for (auto& x : A) x = n(g);
  for (auto& x : down) x = n(g);
  NeuronGroups groups(E);
  for (int64_t i = 0; i < I; ++i) groups[static_cast<size_t>(i % E)].push_back(i);
  std::vector<std::vector<int32_t>> sel(static_cast<size_t>(T));
  std::vector<std::vector<float>> w(static_cast<size_t>(T), {0.5f, 0.5f});
  for (int64_t t = 0; t < T; ++t) sel[static_cast<size_t>(t)] = {static_cast<int32_t>(t % E), static_cast<int32_t>((t + 3) % E)};
  using C = std::chrono::steady_clock;
  double refit = 1e30, gemm = 1e30;
  for (int r = 0; r < runs; ++r) {
    auto t0 = C::now();
    const DownRefit rf = refit_down(A.data(), T, I, down.data(), H, groups, {}, sel, w, k, 0.3);
    refit = std::min(refit, std::chrono::duration<double>(C::now() - t0).count());
    t0 = C::now();
    const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Am(A.data(), T, I),
        Dm(down.data(), H, I);
    const Eigen::MatrixXf Y = Am * Dm.transpose();
    gemm = std::min(gemm, std::chrono::duration<double>(C::now() - t0).count());
    if (rf.G.empty() || Y.size() == 0) return 1;
  }
  std::printf("I %lld H %lld T %lld: refit %.3f s, FFN output GEMM %.3f s (refit %.1fx), normal equations %.0f MiB\n",
              static_cast<long long>(I), static_cast<long long>(H), static_cast<long long>(T), refit, gemm,
              refit / gemm, 2.0 * static_cast<double>(I * I) * 8 / (1 << 20));
  return 0;
}
