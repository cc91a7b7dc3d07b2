// bench/bench_merge_align.cc — the cost of merge's neuron alignment per expert pair: the similarity
// GEMMs and the exact linear assignment (kernels/assignment.h) for one pair of random experts of
// shape [I, H] (the mixtral bench preset: I 3584, H 1024), against the frequency-weighted average of
// the same pair in the same run. Prints seconds for each part (best of RUNS).
// Usage: bench_merge_align [I=3584] [H=1024] [RUNS=1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "compress/merge_align.h"

using namespace moetool;

static ExpertMatrices random_expert(int64_t I, int64_t H, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  ExpertMatrices e{I, H, std::vector<float>(I * H), std::vector<float>(I * H), std::vector<float>(I * H)};
  for (auto* v : {&e.gate, &e.up, &e.down})
    for (auto& x : *v) x = n(g);
  return e;
}

int main(int argc, char** argv) {
  const int64_t I = argc > 1 ? std::atoll(argv[1]) : 3584, H = argc > 2 ? std::atoll(argv[2]) : 1024;
  const int runs = argc > 3 ? std::atoi(argv[3]) : 1;
  const ExpertMatrices a = random_expert(I, H, 1), b = random_expert(I, H, 2);
  using C = std::chrono::steady_clock;
  double align = 1e30, avg = 1e30;
  for (int r = 0; r < runs; ++r) {
    auto t = C::now();
    const auto p = align_neurons(a, b);
    const ExpertMatrices pb = permute_neurons(b, p);
    align = std::min(align, std::chrono::duration<double>(C::now() - t).count());
    t = C::now();
    const ExpertMatrices m = weighted_average({&a, &pb}, {3, 1});
    avg = std::min(avg, std::chrono::duration<double>(C::now() - t).count());
    if (m.gate.empty()) return 1;
  }
  std::printf("expert pair [%lld, %lld]: align (similarity + assignment + permute) %.2f s, weighted average %.3f s, "
              "ratio %.0fx\n", static_cast<long long>(I), static_cast<long long>(H), align, avg, align / avg);
  return 0;
}
