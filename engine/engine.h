// engine/engine.h — the inference engine (CPU; optionally CUDA, see engine/engine_cuda.h): a float32 forward pass of every supported family
// with exactly the semantics of Hugging Face transformers' modeling code, teacher-forced over
// whole sequences or incrementally with a KV cache. Layer-granular entry points (embed, run_layer,
// head) let calibration push all tokens through one layer before loading the next, and observers
// see router decisions, expert inputs/outputs and hidden states as they are computed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/device.h"
#include "engine/weights.h"

namespace moetool {

// What an observer uses (LayerObserver::needs), one bit per kind of callback.
enum ObserverNeeds : unsigned {
  kObserveLinearInputs = 1u << 0,   // on_linear_input
  kObserveRouter = 1u << 1,         // on_router
  kObserveExperts = 1u << 2,        // on_expert
  kObserveFfnActivation = 1u << 3,  // on_ffn_activation
  kObserveFfnBlock = 1u << 4,       // on_ffn_block
  kObserveHidden = 1u << 5,         // on_hidden / on_hidden_device
  kObserveAll = (1u << 6) - 1,
};

// Callbacks from inside a layer (all buffers float32 row-major, valid only during the call).
class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  // The callbacks this observer uses (ObserverNeeds bits). The CUDA engine copies to the host only
  // what they need and keeps its fused bf16 paths when no per-linear data is asked for.
  virtual unsigned needs() const { return kObserveAll; }
  // CUDA engine: the residual stream after a layer in GPU memory (dh[n, H], a device pointer valid
  // during the call). Returning true handles it there: no host copy and no on_hidden call.
  virtual bool on_hidden_device(int64_t /*layer*/, const float* /*dh*/, int64_t /*n*/, int64_t /*H*/) { return false; }
  // Input X[n, cols] of a linear (role, expert) — routed experts see only their routed tokens.
  virtual void on_linear_input(int64_t /*layer*/, Role /*role*/, int64_t /*expert*/, const float* /*X*/,
                               int64_t /*n*/, int64_t /*cols*/) {}
  // Router: logits[n, E], chosen experts sel[n, k] and their weights w[n, k].
  virtual void on_router(int64_t /*layer*/, const float* /*logits*/, const int32_t* /*sel*/, const float* /*w*/,
                         int64_t /*n*/, int64_t /*E*/, int64_t /*k*/) {}
  // A routed expert's output Y[m, H] (before its routing weight) for tokens idx[m], and its
  // intermediate activation A[m, I] = silu(gate)·up.
  virtual void on_expert(int64_t /*layer*/, int64_t /*expert*/, const int32_t* /*idx*/, const float* /*A*/,
                         int64_t /*I*/, const float* /*Y*/, int64_t /*m*/, int64_t /*H*/) {}
  // Dense FFN intermediate activation A[n, I] (dense layers).
  virtual void on_ffn_activation(int64_t /*layer*/, const float* /*A*/, int64_t /*n*/, int64_t /*I*/) {}
  // The FFN/MoE block: residual stream before it h[n, H] and the block's output out[n, H].
  virtual void on_ffn_block(int64_t /*layer*/, const float* /*h_before*/, const float* /*out*/, int64_t /*n*/,
                            int64_t /*H*/) {}
  // Residual stream after the layer, h[n, H].
  virtual void on_hidden(int64_t /*layer*/, const float* /*h*/, int64_t /*n*/, int64_t /*H*/) {}
};

// All weights of one decoder layer, converted and ready to multiply.
struct LayerWeights;
// The CUDA forward pass behind an Engine constructed for Device::Cuda (engine/engine_cuda.h).
class CudaForward;

// Keys and values of past positions, per layer.
struct KVCache {
  int64_t capacity = 0, length = 0;
  std::vector<std::vector<float>> k, v;  // per layer: [capacity, k_width], [capacity, v_width] (CPU engine)
  std::shared_ptr<void> gpu;             // the same rows in GPU memory (CUDA engine; k, v stay empty)
};

class Engine {
 public:
  // keep_layers: reuse loaded layers across calls when that costs no memory (f32 weights used in
  // place); converted or decoded layers are rebuilt per use so peak memory stays about one layer.
  explicit Engine(std::shared_ptr<const WeightSource> w, bool keep_layers = true);
  // The same on a chosen device: Device::Cuda runs run_layer/head/forward on the GPU (weights in
  // `precision`, float32 accumulation; observers get host copies). Throws when no GPU is usable.
  // Device::Cpu with Precision::BF16 emulates the CUDA engine's bf16 arithmetic on the CPU (weights
  // and GEMM inputs rounded to bf16, its tiled bf16 attention): the two differ by summation order.
  Engine(std::shared_ptr<const WeightSource> w, bool keep_layers, DeviceOptions device);
  ~Engine();
  const DeviceOptions& device() const { return dev_; }
  const ModelConfig& config() const { return w_->config(); }
  const WeightSource& weights() const { return *w_; }

  // A cache for `capacity` positions; only_layer ≥ 0 allocates that layer's rows alone (layer-by-
  // layer runs such as calibration).
  KVCache new_cache(int64_t capacity, int64_t only_layer = -1) const;
  std::shared_ptr<const LayerWeights> load_layer(int64_t l) const;

  // h[n, H] = embeddings of tokens (ids checked against the vocabulary).
  void embed(const int32_t* tokens, int64_t n, float* h) const;
  // Throws (one line: file, position, id) when a token id is outside the vocabulary.
  void check_tokens(const int32_t* tokens, int64_t n) const;
  // One decoder layer in place on h[n, H] for positions pos0 .. pos0+n-1, appending to
  // cache->k/v[l] (cache->length is advanced by forward(), not here).
  void run_layer(int64_t l, const LayerWeights& lw, float* h, int64_t n, int64_t pos0, KVCache& cache,
                 LayerObserver* obs) const;
  // logits[n, V] = lm_head(final_norm(h)).
  void head(const float* h, int64_t n, float* logits) const;

  // All layers for n new tokens after cache.length past ones; returns logits [n, V] (or only the
  // last row when last_only). Advances cache.length.
  std::vector<float> forward(const int32_t* tokens, int64_t n, KVCache& cache, LayerObserver* obs = nullptr,
                             bool last_only = false) const;
  // Teacher-forced logits of one whole sequence [n, V] (fresh cache).
  std::vector<float> logits(const std::vector<int32_t>& tokens, LayerObserver* obs = nullptr) const;
  // Benchmarks: logits(tokens) with the logits left where they were computed (GPU memory on CUDA,
  // not copied to the host), the way frameworks' forward passes are timed.
  void logits_in_place(const std::vector<int32_t>& tokens) const;
  // CUDA: teacher-forced logits [n, V] of one sequence left in GPU memory (a device pointer, valid
  // until this engine's next forward pass). Throws on a CPU engine.
  const float* logits_on_device(const std::vector<int32_t>& tokens, LayerObserver* obs = nullptr) const;
  // MC-MoE's online dynamic pruning: a token's second and later experts are skipped (their term of
  // the MoE output dropped, the others' weights left as they are) when their routing weight,
  // normalised over the token's top-k, is below `threshold`; the top-1 expert always runs. 0: off.
  // CPU engine only (throws on a CUDA engine). Changes no weights.
  void set_dynamic_topk(double threshold);
  // (token, expert) computations routed, and skipped by dynamic top-k, since construction.
  struct RoutingCounts {
    int64_t routed = 0, skipped = 0;
  };
  RoutingCounts routing_counts() const { return {routed_pairs_.load(), skipped_pairs_.load()}; }

  // CUDA: layers whose weights are resident on the GPU now (the rest stream in per use); 0 on the CPU.
  int64_t gpu_resident_layers() const;
  // CUDA: quantized matrices (every ggml type the quantize pass writes but F16/BF16, and 4-bit GPTQ) uploaded as their stored bytes and
  // dequantized on the GPU so far; 0 on the CPU.
  int64_t gpu_decoded_matrices() const;
  // CUDA: matrices kept quantized in GPU memory and decoded per use (DeviceOptions::gpu_keep_quantized,
  // or layers whose decoded weights would not fit); 0 on the CPU.
  int64_t gpu_packed_matrices() const;

 private:
  // run_layer's attention on the normed input x[n, H] (writing this layer's cache rows): the input
  // of o_proj attn[n, heads·v_head_dim], standard (grouped-query) or multi-head latent (MLA).
  std::vector<float> attention_gqa(int64_t l, const LayerWeights& lw, const float* x, int64_t n, int64_t pos0,
                                   KVCache& cache, LayerObserver* obs) const;
  std::vector<float> attention_mla(int64_t l, const LayerWeights& lw, const float* x, int64_t n, int64_t pos0,
                                   KVCache& cache, LayerObserver* obs) const;
  // ops::attention, or in bf16 the emulation of the CUDA engine's bf16 attention.
  void attend(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
              float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk, int64_t dv, float scale,
              int64_t window) const;

  std::shared_ptr<const WeightSource> w_;
  bool keep_layers_;
  mutable std::vector<std::shared_ptr<const LayerWeights>> layers_;
  mutable std::shared_ptr<const WeightMatrix> lm_head_;
  std::vector<float> final_norm_;
  DeviceOptions dev_;
  float dynamic_topk_ = 0;  // set_dynamic_topk
  mutable std::atomic<int64_t> routed_pairs_{0}, skipped_pairs_{0};
  bool bf16_ = false;  // CPU in bf16: the CUDA engine's bf16 arithmetic, emulated (kernels/linear_bf16.h)
  std::unique_ptr<CudaForward> gpu_;
};

}  // namespace moetool
