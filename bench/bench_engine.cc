// bench/bench_engine.cc — teacher-forced logits throughput of the CPU engine against the same
// run's measured OpenBLAS sgemm rate (the peak the engine's GEMMs can reach on this machine).
// Usage: bench_engine MODEL_DIR [CTX=512] [CHUNKS=1]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "kernels/ops.h"
#include "engine/engine.h"

using namespace moetool;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best-of-5 sgemm GFLOP/s for C[M,N] = A[M,K]·B[N,K]ᵀ.
static double sgemm_gflops(int64_t M, int64_t N, int64_t K) {
  std::vector<float> A(static_cast<size_t>(M * K)), B(static_cast<size_t>(N * K)), C(static_cast<size_t>(M * N));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& x : A) x = u(rng);
  for (auto& x : B) x = u(rng);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    auto t = Clock::now();
    ops::gemm_nt(M, N, K, A.data(), K, B.data(), K, C.data(), N);
    best = std::max(best, 2.0 * M * N * K / seconds_since(t) / 1e9);
  }
  return best;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [CTX] [CHUNKS]\n", argv[0]);
    return 2;
  }
  const int64_t ctx = argc > 2 ? std::atoll(argv[2]) : 512;
  const int64_t chunks = argc > 3 ? std::atoll(argv[3]) : 1;
  try {
    auto w = open_weights(argv[1]);
    Engine eng(w);
    const ModelConfig& c = eng.config();
    // Peak: the best sgemm rate on the model's own FFN shapes (up/gate and down) at this context.
    const int64_t I = std::max<int64_t>(c.intermediate_size, c.moe ? c.moe->expert_intermediate : 0);
    const double peak = std::max(sgemm_gflops(ctx, I, c.hidden_size), sgemm_gflops(ctx, c.hidden_size, I));
    // FLOPs per token: 2 × every linear's weights used by the token (+ attention's QK and PV).
    double linear = 0;
    const auto count = [&](Role r, int64_t l, int64_t e) {
      if (w->has(r, l, e)) {
        auto m = w->matrix(r, l, e);
        linear += 2.0 * m->rows() * m->cols();
      }
    };
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (Role r : {Role::Q, Role::K, Role::V, Role::O, Role::QA, Role::QB, Role::KVA, Role::KVB, Role::Gate,
                     Role::Up, Role::Down, Role::Router, Role::SharedGate, Role::SharedUp, Role::SharedDown})
        count(r, l, -1);
      if (c.moe && c.is_moe_layer(l))  // top_k experts per token (expert 0's size)
        for (int64_t k = 0; k < c.moe->top_k; ++k)
          for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown}) count(r, l, 0);
    }
    count(Role::LmHead, -1, -1);
    const double attn = 2.0 * 2.0 * c.num_layers * c.num_heads * c.head_dim * (ctx / 2.0);  // causal, avg ctx/2
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> tokd(0, static_cast<int32_t>(c.vocab_size - 1));
    std::vector<int32_t> toks(static_cast<size_t>(ctx));
    for (auto& t : toks) t = tokd(rng);
    eng.logits(std::vector<int32_t>(toks.begin(), toks.begin() + std::min<int64_t>(ctx, 8)));  // warm-up (page-in)
    auto t0 = Clock::now();
    for (int64_t i = 0; i < chunks; ++i) eng.logits(toks);
    const double s = seconds_since(t0);
    const double tps = static_cast<double>(ctx * chunks) / s;
    const double gflops = (linear + attn) * tps / 1e9;
    std::printf("{\"model\": \"%s\", \"family\": \"%s\", \"ctx\": %lld, \"chunks\": %lld, \"seconds\": %.3f, "
                "\"tokens_per_s\": %.1f, \"achieved_gflops\": %.1f, \"sgemm_peak_gflops\": %.1f, "
                "\"fraction_of_peak\": %.3f}\n",
                argv[1], c.family.c_str(), static_cast<long long>(ctx), static_cast<long long>(chunks), s, tps, gflops,
                peak, gflops / peak);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_engine: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
