// kernels/backend_cuda.h — the CUDA backend's host API: device memory, cuBLAS GEMMs (f32, and bf16
// inputs with f32 accumulation) and the engine's kernels, mirroring kernels/ops.h on device
// pointers. Implemented in kernels/cuda/*.cu when nvcc is found; in builds without CUDA
// (kernels/nocuda/backend_nocuda.cc) every function throws moetool::Error, so code calling it
// compiles everywhere and callers check cuda_device_count() first.
//
// All pointers are device pointers, all buffers row-major; work is queued on one stream per
// process and the functions that return data to the host (download, free_memory) synchronise it.
// Errors (CUDA, cuBLAS) throw moetool::Error naming the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/backend_shared.h"

namespace moetool::cuda {

// Selects the GPU and creates the stream and library handles (idempotent).
void init();
void* alloc(size_t bytes);
void release(void* p) noexcept;
void upload(void* dst, const void* src, size_t bytes);
void download(void* dst, const void* src, size_t bytes);  // synchronises
void copy(void* dst, const void* src, size_t bytes);       // device to device
// dst[rows, width] (row stride dst_stride floats) ← src (row stride src_stride floats).
void copy_2d(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width);
void zero(void* p, size_t bytes);
void synchronize();
size_t free_memory();   // bytes free on the device now
size_t total_memory();

// Owning device buffer of T.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~Buffer() { release(p_); }
  // Grows (contents not kept) when n exceeds the current size.
  void resize(size_t n) {
    if (n <= n_) return;
    release(p_);
    p_ = nullptr;
    n_ = 0;
    p_ = static_cast<T*>(alloc(n * sizeof(T)));
    n_ = n;
  }
  void upload(const T* src, size_t n) {
    resize(n);
    cuda::upload(p_, src, n * sizeof(T));
  }
  std::vector<T> to_host(size_t n) const {
    std::vector<T> v(n);
    if (n) download(v.data(), p_, n * sizeof(T));
    return v;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// ---- GEMM (cuBLAS) ----
// Y[n, R] = X[n, C] · W[R, C]ᵀ + beta · Y (row strides ldx, ldy). Pure float32 (no TF32).
void gemm_nt_f32(int64_t n, int64_t R, int64_t C, const float* X, int64_t ldx, const float* W, float* Y, int64_t ldy,
                 float beta = 0.0f);
// The same with bfloat16 X and W and float32 accumulation and output.
void gemm_nt_bf16(int64_t n, int64_t R, int64_t C, const uint16_t* X, int64_t ldx, const uint16_t* W, float* Y,
                  int64_t ldy, float beta = 0.0f);
// `batch` independent problems of that shape in one launch (cublasGemmStridedBatchedEx): problem b
// multiplies X + b·sx by W + b·sw into Y + b·sy — the MoE's experts, their rows padded to one count.
void gemm_nt_bf16_batched(int64_t batch, int64_t n, int64_t R, int64_t C, const uint16_t* X, int64_t ldx, int64_t sx,
                          const uint16_t* W, int64_t sw, float* Y, int64_t ldy, int64_t sy, float beta = 0.0f);
// Column-major C[m, n] = op(A)·op(B) (cuBLAS conventions), float32 — for the linear algebra.
void gemm_cm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc, float alpha = 1.0f, float beta = 0.0f);
// y[i] = bf16(x[i]).
void to_bf16(const float* x, uint16_t* y, int64_t n);

// ---- element-wise and row kernels (kernels/ops.h semantics) ----
void rmsnorm(const float* x, const float* w, float* out, int64_t n, int64_t d, float eps);
// RoPE (rotate-half) on the part [offset, offset + 2·half) of each of H heads (head_stride floats
// apart) of rows x[n] (row stride `stride`), positions pos0 + t; inv_freq[half] on the device.
void rope(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride, int64_t pos0,
          const float* inv_freq, int64_t half, float scale);
// The interleaved → rotate-half permutation of the same part (see engine/engine.cc).
void deinterleave(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride, int64_t d);
// Causal GQA attention with sliding window (ops::attention semantics), tiled with online softmax.
// bf16: Q, K, V and the probabilities rounded to bf16 and multiplied on tensor cores (float32
// accumulation and softmax) where attention_tc_supported(dk, dv) and n ≥ 16; otherwise float32.
void attention(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
               float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk, int64_t dv, float scale,
               int64_t window, bool bf16 = false);
// Head dims the tensor-core attention kernel takes (dk = dv ∈ {16, 32, 64, 128}).
bool attention_tc_supported(int64_t dk, int64_t dv);
void silu_mul(const float* g, const float* u, float* out, int64_t n);
// The same, rounded to bf16 (the next GEMM's input).
void silu_mul_bf16(const float* g, const float* u, uint16_t* out, int64_t n);
void add_bias(float* y, const float* b, int64_t n, int64_t d);  // y[i, j] += b[j]
void add(float* y, const float* x, int64_t n);                   // y += x
void clamp(float* x, int64_t n, float c);                        // x = clamp(x, −c, c)
// out[t, :] += g(t) · S[t, :] for t < n with g(t) = sigmoid(gate[t]), or 1 when gate is null.
void gated_add(float* out, const float* S, const float* gate, int64_t n, int64_t d);

// ---- MoE ----
// sel[n, k], w[n, k] from logits[n, E] (shared::route_token per token); scratch[2 · n · E].
void route(const shared::RouteParams& p, const float* logits, const float* bias, int64_t n, float* scratch,
           int32_t* sel, float* w);
// out[r, :] = x[idx[r], :] for r < m (d columns); zeros where idx[r] < 0.
void gather_rows(const float* x, const int32_t* idx, int64_t m, int64_t d, float* out);
// out[t, :] += Σ_j w[t, j] · Y[pos[t, j], :] for t < n, j < k (in j order: deterministic).
void combine_rows(const float* Y, const int32_t* pos, const float* w, int64_t n, int64_t k, int64_t d, float* out);
// The same, rounded to bf16.
void gather_rows_bf16(const float* x, const int32_t* idx, int64_t m, int64_t d, uint16_t* out);
// out[idx[r], :] += w[r] · y[r, :] (idx distinct within one call).
void scatter_add_rows(const float* y, const int32_t* idx, const float* w, int64_t m, int64_t d, float* out);

// Groups the R = n·k (token, slot) entries of sel[n, k] by expert, stably (entry order within an
// expert, as the host loop t = 0…n−1, j = 0…k−1 does): off[E + 1] the first grouped row of each
// expert (off[E] = R), tok[R] the token of each grouped row, pos[R] the grouped row of each entry,
// and wg[R] = w in grouped order when wg is not null. No atomics: deterministic. Every sel value
// must lie in [0, E). Implemented in kernels/cuda/moe_cuda.cu.
void group_by_expert(const int32_t* sel, const float* w, int64_t n, int64_t k, int64_t E, int32_t* off, int32_t* tok,
                     int32_t* pos, float* wg);

// The padded layout of the batched expert GEMMs, from group_by_expert's off/pos: entry r goes to row
// padded[r] = sel[r]·cap + pos[r] − off[sel[r]] (cap ≥ every expert's row count); tokp[E·cap] holds
// the token of each padded row and −1 for padding rows (gather_rows* write zeros there).
void pad_groups(const int32_t* sel, const int32_t* off, const int32_t* pos, int64_t n, int64_t k, int64_t E,
                int64_t cap, int32_t* padded, int32_t* tokp);

// ---- verify statistics (verify/metrics.h conventions, in double; kernels/cuda/verify_cuda.cu) ----
// Fields of one scored row in score_logit_rows' output.
enum ScoreField { kScoreKld, kScoreDeltaP, kScoreNll, kScoreNllBase, kScoreSameTop, kScoreStatus, kScoreFields };
// Status bits: a NaN or +inf value in the base row / candidate row; a row of −inf only.
enum ScoreStatus { kBaseNonFinite = 1, kCandNonFinite = 2, kBaseAllNegInf = 4, kCandAllNegInf = 8 };
// Per row r < rows of base and candidate logits [rows, vocab] predicting token next[r]:
// out[r · kScoreFields + f] (KLD, Δp, nll, nll_base, same top-1 as 0/1, status bits).
void score_logit_rows(const float* base, const float* cand, const int32_t* next, int64_t rows, int64_t vocab,
                      double* out);
// Per row i < n of a[n, d] and b[n, d]: out[3i…3i+2] = {cosine, ‖a − b‖², ‖a‖²} (RowSimilarity).
void compare_rows(const float* a, const float* b, int64_t n, int64_t d, double* out);

// ---- quantized weights (kernels/cuda/quant_cuda.cu): dequantization to float32 W[rows, cols] ----
enum class BlockType { Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K };
// `blocks`: rows · cols / block-size ggml blocks, row-major (the GGUF bytes).
void dequant_blocks(BlockType t, const uint8_t* blocks, int64_t rows, int64_t cols, float* out);
// The same rounded to bf16 (shared::float_to_bf16 of each float32 value: a bf16 engine's weight).
void dequant_blocks(BlockType t, const uint8_t* blocks, int64_t rows, int64_t cols, uint16_t* out);
// Y[n, R] = X[n, C] · Wᵀ (+ beta · Y) straight from the blocks of W [R, C], for a few rows
// (n ≤ kQuantGemvMaxRows: decoding steps): the blocks are read once and decoded in registers, never
// written out (kernels/cuda/quant_cuda.cu). X is float32 (X) or bf16 (Xb), one of the two; bf16
// rounds W and a float32 X to bf16 first (the bf16 engine's arithmetic). Float32 accumulation.
constexpr int64_t kQuantGemvMaxRows = 8;
void gemv_blocks(BlockType t, const uint8_t* blocks, int64_t R, int64_t C, const float* X, const uint16_t* Xb,
                 int64_t n, float* Y, float beta, bool bf16);
// The same for GPTQ int4 tensors (W [out_features = R, in_features = C]).
void gemv_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx, int64_t C,
                    int64_t R, const float* X, const uint16_t* Xb, int64_t n, float* Y, float beta, bool bf16);
// GPTQ v1 int4 (shared::gptq_int4_value) → W[out_features, in_features].
void dequant_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in_features, int64_t out_features, float* out);
void dequant_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in_features, int64_t out_features, uint16_t* out);

// ---- DF11 (kernels/cuda/df11_cuda.cu) ----
// Decodes n DF11-coded values (formats/df11.h; every pointer on the GPU: table the 2^16-entry table of
// df11::decode_block, offsets [nblocks + 1], exp, sm [n], hash [nblocks] or null) into out[n] BF16
// bits, one thread per block of `block` values; status[b] ← block b's df11::BlockStatus (kBlockBadHash
// when its values do not hash to hash[b]). The caller downloads status and reports a bad block.
void df11_decode(const uint16_t* table, const int64_t* offsets, int64_t nblocks, const uint8_t* exp, const uint8_t* sm,
                 int64_t n, int64_t block, const uint64_t* hash, uint16_t* out, int32_t* status);
// The same from host arrays: table, offsets, exp [exp_bytes], sm, hash (or null) uploaded, decoded into
// out[n] (on the GPU), and every block's status returned (synchronises).
std::vector<int32_t> df11_upload_decode(const uint16_t* table, const int64_t* offsets, int64_t nblocks,
                                        const uint8_t* exp, int64_t exp_bytes, const uint8_t* sm, int64_t n,
                                        int64_t block, const uint64_t* hash, uint16_t* out);
// y[i] = float(x[i]) for BF16 bits x.
void bf16_to_f32(const uint16_t* x, float* y, int64_t n);

}  // namespace moetool::cuda
