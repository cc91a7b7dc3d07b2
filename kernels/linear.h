// kernels/linear.h — a weight matrix W [rows = out_features, cols = in_features] that the engine
// multiplies by, whatever its storage: dense in any float dtype (memory-mapped; converted to f32
// when used), and — added by the compress passes — quantized blocks or low-rank factors. The
// checker runs every storage kind directly through this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace moetool {

// The stored form of a quantized matrix, for a backend that decodes it itself (the CUDA engine
// uploads these bytes and dequantizes on the GPU). Views, valid while the matrix lives.
struct PackedWeight {
  enum class Kind { Ggml, Gptq, Df11 };
  Kind kind = Kind::Ggml;
  // Ggml: rows · (cols / block size) blocks of ggml type `ggml_type` (a GGMLType value), the GGUF bytes.
  int ggml_type = -1;
  const uint8_t* blocks = nullptr;
  uint64_t bytes = 0;
  // Gptq (kernels/linear_gptq.h): qweight [cols·bits/32, rows], qzeros [ngroups, rows·bits/32],
  // scales f16 bits [ngroups, rows], g_idx [cols].
  int bits = 0;
  int64_t ngroups = 0;
  const int32_t* qweight = nullptr;
  const int32_t* qzeros = nullptr;
  const uint16_t* scales = nullptr;
  const int32_t* g_idx = nullptr;
  // Df11 (formats/df11.h, lossless BF16): rows · cols values in df11_nblocks blocks of df11_block;
  // lengths [256], offsets [nblocks + 1] into exp [exp_bytes], sm [rows · cols], hash [nblocks].
  int64_t df11_block = 0, df11_nblocks = 0, df11_exp_bytes = 0;
  const uint8_t* df11_lengths = nullptr;
  const int64_t* df11_offsets = nullptr;
  const uint8_t* df11_exp = nullptr;
  const uint8_t* df11_sm = nullptr;
  const uint64_t* df11_hash = nullptr;
  std::string what;  // the matrix, for a decoder's errors (Df11)
};

// The factors of a low-rank matrix W = U·V (+ base) (kernels/linear_lowrank.h), as float32 views
// valid while the matrix lives: U [rows, rank], V [rank, cols], base [rows, cols] or null. For a
// backend that multiplies by the factors itself (X·Vᵀ, then ·Uᵀ) instead of forming W.
struct LowRankFactors {
  int64_t rank = 0;
  const float* U = nullptr;
  const float* V = nullptr;
  const float* base = nullptr;
};

class WeightMatrix {
 public:
  virtual ~WeightMatrix() = default;
  virtual int64_t rows() const = 0;  // out_features
  virtual int64_t cols() const = 0;  // in_features
  // Y[n, rows] = X[n, cols] · Wᵀ (+ beta · Y). Row-major float32.
  virtual void matmul(const float* X, int64_t n, float* Y, float beta = 0.0f) const = 0;
  // Dense float32 copy of W into out[rows, cols].
  virtual void to_dense(float* out) const = 0;
  // What the storage is, for reports: "F32", "BF16", "Q4_0", "lowrank(r=64)", ...
  virtual std::string storage() const = 0;
  // Bytes the stored form occupies.
  virtual uint64_t stored_bytes() const = 0;
  // The quantized storage itself (see PackedWeight), or null: dense and factored matrices.
  virtual const PackedWeight* packed() const { return nullptr; }
  // The low-rank factors (see LowRankFactors), or null: every other storage.
  virtual const LowRankFactors* lowrank() const { return nullptr; }
  // Does now what the first multiplication would do first (a DF11 matrix decodes itself), so a CPU
  // engine that loads a layer meets a corrupt weight there, whichever experts the tokens route to.
  virtual void prepare() const {}
};

// A dense matrix from a 2-D float tensor. F32 tensors are used in place (zero-copy); other float
// dtypes are converted to f32 once, here.
std::shared_ptr<const WeightMatrix> make_dense_matrix(const Tensor& t, const std::string& name);

}  // namespace moetool
