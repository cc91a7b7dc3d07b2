// bench/bench_quantize.cc — quantization throughput per format (GB/s of f32 input weights, all
// cores) on a checkpoint's weight matrices, against a baseline measured in the same run (an f32 →
// f16 conversion of the same matrices: one memory-bound pass), and GPTQ time per layer with
// Hessians from correlated random inputs. Memory: one matrix and its output at a time.
// Usage: bench_quantize MODEL_DIR [LAYERS=all] [GPTQ_TOKENS=1024]
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "formats/ggml_quants.h"
#include "compress/gptq.h"
#include "compress/int_quant.h"
#include "compress/quantize_int.h"
#include "core/dtype.h"
#include "core/error.h"
#include "formats/model.h"

using namespace moetool;

namespace {

struct Mat {
  std::string name;
  Role role;
  int64_t layer, expert, rows, cols;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [LAYERS] [GPTQ_TOKENS]\n", argv[0]);
    return 2;
  }
  try {
    Model m = Model::open(argv[1]);
    const int64_t L = argc > 2 ? std::atoll(argv[2]) : m.config().num_layers;
    const int64_t T = argc > 3 ? std::atoll(argv[3]) : 1024;
    std::vector<Mat> mats;
    for (const auto& s : m.family().tensors(m.config()))
      if (int_quantizable_role(s.role) && s.shape.size() == 2 && s.layer < L)
        mats.push_back({s.name, s.role, s.layer, s.expert, s.shape[0], s.shape[1]});
    double in_bytes = 0;
    for (const auto& x : mats) in_bytes += 4.0 * x.rows * x.cols;
    std::printf("model %s: %zu weight matrices in %lld layers, %.2f GB as f32; %d threads\n", argv[1], mats.size(),
                static_cast<long long>(L), in_bytes / 1e9, omp_get_max_threads());

    // Runs `fn` on every matrix (loaded to f32 outside the timer) and returns GB/s of f32 input.
    auto run = [&](const std::function<void(const float*, int64_t, int64_t)>& fn) {
      double secs = 0;
      std::vector<float> W;
      for (const auto& x : mats) {
        W.resize(static_cast<size_t>(x.rows * x.cols));
        const Tensor t = m.weight(x.role, x.layer, x.expert);
        to_f32(t.dtype, t.data, W.data(), W.size());
        const double t0 = now();
        fn(W.data(), x.rows, x.cols);
        secs += now() - t0;
      }
      return in_bytes / secs / 1e9;
    };
    const double base = run([](const float* W, int64_t r, int64_t c) {
      std::vector<uint16_t> h(static_cast<size_t>(r * c));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < r; ++i) convert(DType::F32, W + i * c, DType::F16, h.data() + i * c, static_cast<size_t>(c));
    });
    std::printf("%-28s %8s %10s\n", "format", "GB/s", "vs f16 copy");
    std::printf("%-28s %8.2f %10.2f\n", "f32 -> f16 (baseline)", base, 1.0);
    for (GGMLType t : {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q5_0, GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K}) {
      for (bool imp : {false, true}) {
        const double gbs = run([&](const float* W, int64_t r, int64_t c) {
          if (c % ggml_block_size(t) != 0) return;
          std::vector<uint8_t> out(static_cast<size_t>(r) * ggml_row_size(t, c));
          std::vector<float> importance;
          if (imp) {
            importance.resize(static_cast<size_t>(c));
            for (int64_t j = 0; j < c; ++j) importance[static_cast<size_t>(j)] = 1.0f + static_cast<float>(j % 7);
          }
          quantize_rows(t, W, out.data(), r, c, imp ? importance.data() : nullptr);
        });
        std::printf("%-28s %8.2f %10.2f\n", (std::string(ggml_type_name(t)) + (imp ? " + importance" : "")).c_str(),
                    gbs, gbs / base);
      }
    }
    for (int bits : {4, 3}) {
      for (bool imp : {false, true}) {
        const double gbs = run([&](const float* W, int64_t r, int64_t c) {
          IntQuantSpec s{bits, 128, true};
          if (c % 128 != 0) s.group_size = -1;
          std::vector<float> importance;
          if (imp) {
            importance.resize(static_cast<size_t>(c));
            for (int64_t j = 0; j < c; ++j) importance[static_cast<size_t>(j)] = 1.0f + static_cast<float>(j % 7);
          }
          rtn_quantize(W, r, c, s, imp ? importance.data() : nullptr);
        });
        std::printf("%-28s %8.2f %10.2f\n", str("int", bits, " g128 RTN", imp ? " + importance" : "").c_str(), gbs,
                    gbs / base);
      }
    }
    // GPTQ per layer: Hessians of T correlated random inputs per distinct input width.
    std::mt19937_64 rng(1);
    std::normal_distribution<float> nd;
    std::map<int64_t, std::vector<double>> hess;
    for (const auto& x : mats) {
      if (hess.count(x.cols)) continue;
      const int64_t c = x.cols;
      std::vector<float> Z(static_cast<size_t>(T * 16)), A(static_cast<size_t>(16 * c)), X(static_cast<size_t>(T * c));
      for (auto& v : Z) v = nd(rng);
      for (auto& v : A) v = nd(rng);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < c; ++j) {
          float s = 0.3f * nd(rng);
          for (int k = 0; k < 16; ++k) s += Z[static_cast<size_t>(t * 16 + k)] * A[static_cast<size_t>(k * c + j)];
          X[static_cast<size_t>(t * c + j)] = s;
        }
      std::vector<double> H(static_cast<size_t>(c * c), 0.0);
#pragma omp parallel for schedule(static)
      for (int64_t a = 0; a < c; ++a)
        for (int64_t t = 0; t < T; ++t) {
          const double xa = X[static_cast<size_t>(t * c + a)];
          for (int64_t b = 0; b < c; ++b) H[static_cast<size_t>(a * c + b)] += xa * X[static_cast<size_t>(t * c + b)];
        }
      hess[c] = std::move(H);
    }
    std::vector<double> per_layer(static_cast<size_t>(L), 0.0);
    {
      std::vector<float> W;
      for (const auto& x : mats) {
        W.resize(static_cast<size_t>(x.rows * x.cols));
        const Tensor t = m.weight(x.role, x.layer, x.expert);
        to_f32(t.dtype, t.data, W.data(), W.size());
        GPTQOptions go;
        go.spec = {4, x.cols % 128 == 0 ? 128 : -1, true};
        const double t0 = now();
        gptq_quantize(W.data(), x.rows, x.cols, hess[x.cols].data(), T, go);
        per_layer[static_cast<size_t>(x.layer)] += now() - t0;
      }
    }
    double tot = 0;
    for (double s : per_layer) tot += s;
    std::printf("GPTQ int4 g128: %.3f s per layer (mean of %lld layers; %lld-token Hessians, Hessian time excluded)\n",
                tot / static_cast<double>(L), static_cast<long long>(L), static_cast<long long>(T));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_quantize: %s\n", e.what());
    return 2;
  }
  return 0;
}
