// bench/bench_gguf_encode.cc — the cost of one weight matrix under each GGUF encoder, in the same
// run: ggml's importance-weighted rounding (--method imatrix), GPTQ over ggml blocks (--method gptq,
// compress/gptq_ggml.h) and AutoRound over ggml blocks (--method autoround, compress/autoround_ggml.h),
// for a ROWS × COLS matrix of type TYPE with the Hessian of T random correlated tokens. Prints the
// seconds of each, the ratio to rounding, and the output error tr(ΔW H ΔWᵀ)/T of each (so a speed-up
// that loses quality shows). Random data: the layer-output errors are for comparing encoders only.
// Usage: bench_gguf_encode [ROWS=3584] [COLS=1024] [T=2048] [TYPE=q4_k] [ITERS=200]
#include <Eigen/Dense>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "compress/autoround_ggml.h"
#include "compress/gptq_ggml.h"
#include "formats/ggml_quants.h"
#include "formats/ggml_types.h"

using namespace moetool;

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 3584, cols = argc > 2 ? std::atoll(argv[2]) : 1024;
  const int64_t T = argc > 3 ? std::atoll(argv[3]) : 2048;
  const std::string tname = argc > 4 ? argv[4] : "q4_k";
  const int iters = argc > 5 ? std::atoi(argv[5]) : 200;
  const auto parsed = parse_ggml_type(tname);
  if (!parsed) {
    std::fprintf(stderr, "bench_gguf_encode: unknown ggml type '%s'\n", tname.c_str());
    return 2;
  }
  const GGMLType t = *parsed;
  std::mt19937_64 g(1);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> W(static_cast<size_t>(rows * cols));
  for (auto& x : W) x = 0.02f * nd(g);
  // X = Z·A: correlated inputs with uneven column scales.
  Eigen::MatrixXf Z(T, cols), A(cols, cols);
  for (int64_t i = 0; i < Z.size(); ++i) Z.data()[i] = nd(g);
  for (int64_t i = 0; i < A.size(); ++i) A.data()[i] = nd(g) / std::sqrt(static_cast<float>(cols));
  A.diagonal().array() += 1.0f;
  Eigen::MatrixXf X = Z * A;
  for (int64_t j = 0; j < cols; ++j) X.col(j) *= 0.3f + 2.0f * static_cast<float>((j * 7919) % 97) / 97.0f;
  const Eigen::MatrixXd Hm = (X.transpose() * X).cast<double>();
  std::vector<double> H(Hm.data(), Hm.data() + Hm.size());  // symmetric: row- and column-major alike
  std::vector<float> imp(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) imp[static_cast<size_t>(j)] = static_cast<float>(Hm(j, j) / static_cast<double>(T));

  const auto loss = [&](const std::vector<uint8_t>& b) {
    std::vector<float> D(W.size());
    dequantize_rows(t, b.data(), D.data(), rows, cols);
    Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Wm(W.data(), rows, cols),
        Dm(D.data(), rows, cols);
    const Eigen::MatrixXd d = (Wm - Dm).cast<double>();
    return (d * Hm).cwiseProduct(d).sum() / static_cast<double>(T);
  };
  using C = std::chrono::steady_clock;
  const auto secs = [](C::time_point a) { return std::chrono::duration<double>(C::now() - a).count(); };
  auto t0 = C::now();
  std::vector<uint8_t> r(static_cast<size_t>(rows) * ggml_row_size(t, cols));
  quantize_rows(t, W.data(), r.data(), rows, cols, imp.data());
  const double s_r = secs(t0);
  t0 = C::now();
  const auto q = gptq_quantize_ggml(W.data(), rows, cols, H.data(), T, t, {}, nullptr, "bench");
  const double s_g = secs(t0);
  AutoRoundOptions ao;
  ao.iters = iters;
  t0 = C::now();
  const auto a = autoround_quantize_ggml(W.data(), rows, cols, H.data(), T, t, ao, nullptr, "bench");
  const double s_a = secs(t0);
  std::printf("%lld x %lld %s, T %lld: imatrix rounding %.3f s (loss %.4g) | gptq %.2f s (%.0fx, loss %.4g) | "
              "autoround %d steps %.2f s (%.0fx, loss %.4g)\n",
              static_cast<long long>(rows), static_cast<long long>(cols), tname.c_str(), static_cast<long long>(T), s_r,
              loss(r), s_g, s_g / s_r, loss(q), iters, s_a, s_a / s_r, loss(a));
  return 0;
}
