// tests/gptq_test_util.h — the correlated calibration layer the GPTQ tests share (integer GPTQ in
// gptq_test.cc, GPTQ and AutoRound over ggml blocks in gptq_ggml_test.cc, autoround_ggml_test.cc):
// W with outlier columns, X = Z·A with uneven column scales (a Hessian far from diagonal), the
// measured layer-output error, and the ggml grid types with their decoder.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "formats/ggml_quants.h"
#include "tests/test_util.h"

namespace moetool::testing {

struct Layer {
  int64_t rows, cols, N;
  std::vector<float> W;   // [rows, cols]
  std::vector<float> X;   // [N, cols] calibration inputs
  std::vector<double> H;  // [cols, cols] XᵀX
};

// W: gaussian rows with outlier columns; X = Z·A (A = I + mixing) with uneven column scales, so
// the Hessian is far from diagonal. `dead` input columns are all zero.
inline Layer make_layer(int64_t rows, int64_t cols, int64_t N, uint64_t seed, std::vector<int64_t> dead = {}) {
  Layer L{rows, cols, N, random_normal(size_t(rows * cols), seed), {}, {}};
  for (int64_t k = 0; k < rows * cols; ++k) {
    L.W[size_t(k)] *= 0.02f;
    if (k % cols % 29 == 3) L.W[size_t(k)] *= 5.0f;
  }
  const auto Z = random_normal(size_t(N * cols), seed + 1);
  const auto G = random_normal(size_t(cols * cols), seed + 2);
  std::vector<float> A(static_cast<size_t>(cols * cols));  // [cols, cols]
  for (int64_t a = 0; a < cols; ++a)
    for (int64_t b = 0; b < cols; ++b)
      A[size_t(a * cols + b)] = (a == b ? 0.5f : 0.0f) + 1.5f * G[size_t(a * cols + b)] / std::sqrt(float(cols));
  std::vector<float> colscale(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) colscale[size_t(j)] = 0.3f + 2.0f * float((j * 7919) % 97) / 97.0f;
  for (int64_t j : dead) colscale[size_t(j)] = 0.0f;
  L.X.assign(size_t(N * cols), 0.0f);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t k = 0; k < cols; ++k) {
      const float z = Z[size_t(t * cols + k)];
      for (int64_t j = 0; j < cols; ++j) L.X[size_t(t * cols + j)] += z * A[size_t(k * cols + j)];
    }
  for (int64_t t = 0; t < N; ++t)
    for (int64_t j = 0; j < cols; ++j) L.X[size_t(t * cols + j)] *= colscale[size_t(j)];
  L.H.assign(size_t(cols * cols), 0.0);
  for (int64_t t = 0; t < N; ++t) {
    const float* x = L.X.data() + t * cols;
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) L.H[size_t(a * cols + b)] += double(x[a]) * x[b];
  }
  return L;
}

// Measured ‖(W − D) Xᵀ‖_F² / N in float64 for a decoded matrix D [rows, cols].
inline double output_error_of(const Layer& L, const float* D) {
  double e = 0;
  for (int64_t t = 0; t < L.N; ++t)
    for (int64_t r = 0; r < L.rows; ++r) {
      double y = 0;
      for (int64_t j = 0; j < L.cols; ++j)
        y += (double(L.W[size_t(r * L.cols + j)]) - D[size_t(r * L.cols + j)]) * L.X[size_t(t * L.cols + j)];
      e += y * y;
    }
  return e / double(L.N);
}

// The ggml types that encoders over ggml blocks (GPTQ, AutoRound) write.
inline const GGMLType kGridTypes[] = {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0,
                                      GGMLType::Q5_1, GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K};

// rows × cols floats decoded from rows of type t.
inline std::vector<float> decode(GGMLType t, const std::vector<uint8_t>& bytes, int64_t rows, int64_t cols) {
  std::vector<float> D(static_cast<size_t>(rows * cols));
  dequantize_rows(t, bytes.data(), D.data(), rows, cols);
  return D;
}

}  // namespace moetool::testing
