// engine/engine_cuda.h — internals shared by the CPU engine (engine/engine.cc) and its CUDA forward
// pass (engine/engine_cuda.cc): the host-side weights of one layer, the routing parameters of a
// config, and CudaForward, which runs Engine's embed → layers → head on the GPU through
// kernels/backend_cuda.h with the same semantics (the CPU engine defines correctness). Layers are
// uploaded on first use and stay resident while GPU memory allows; otherwise each use streams the
// layer in and frees it afterwards. Not part of the public API: use Engine with DeviceOptions.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/backend_shared.h"
#include "kernels/device.h"
#include "engine/engine.h"

namespace moetool {

using Mat = std::shared_ptr<const WeightMatrix>;

// transformers builds DeepseekV3's q_a_layernorm and kv_a_layernorm with the RMSNorm default eps,
// not config.rms_norm_eps.
constexpr float kMlaNormEps = 1e-6f;

struct LayerWeights {
  // attention
  std::vector<float> attn_norm, ffn_norm;
  Mat q, k, v, o;                                // standard attention (q also when MLA has no q_lora)
  std::vector<float> q_bias, k_bias, v_bias, o_bias, q_norm, k_norm;
  Mat qa, qb, kva, kvb;                          // MLA
  std::vector<float> qa_norm, kva_norm;
  // FFN
  bool moe = false;
  Mat gate, up, down;
  std::vector<float> gate_bias, up_bias, down_bias;
  Mat router;
  std::vector<float> router_bias;
  std::vector<Mat> eg, eu, ed;                   // routed experts
  Mat sg, su, sd;                                // shared expert(s)
  Mat shared_gate;                               // [1, H] sigmoid gate

  // Every matrix slot (empty ones too), routed experts last.
  std::vector<const Mat*> matrices() const {
    std::vector<const Mat*> all = {&q, &k, &v, &o, &qa, &qb, &kva, &kvb, &gate, &up, &down, &router, &sg, &su, &sd,
                                   &shared_gate};
    for (const auto* e : {&eg, &eu, &ed})
      for (const Mat& m : *e) all.push_back(&m);
    return all;
  }
  std::vector<Mat*> matrices() {
    std::vector<Mat*> all;
    for (const Mat* m : std::as_const(*this).matrices()) all.push_back(const_cast<Mat*>(m));
    return all;
  }
  // Slot m is multiplied in float32 whatever the engine's precision: the router (discrete expert
  // choices) and the shared-expert gate, on every device.
  bool float32_always(const Mat* m) const { return m == &router || m == &shared_gate; }
};

inline shared::RouteParams route_params(const MoeConfig& mc) {
  shared::RouteParams p;
  p.num_experts = mc.num_experts;
  p.top_k = mc.top_k;
  p.sigmoid_group_limited = mc.routing == RoutingKind::SigmoidGroupLimited;
  p.n_group = mc.n_group;
  p.topk_group = mc.topk_group;
  p.norm_topk_prob = mc.norm_topk_prob;
  p.routed_scaling_factor = mc.routed_scaling_factor;
  return p;
}

struct GpuLayer;
struct GpuMatrix;
struct GpuScratch;
struct UploadCounts;

class CudaForward {
 public:
  // Throws (one line) when no GPU is usable.
  CudaForward(const Engine& eng, const DeviceOptions& opt);
  ~CudaForward();
  // Engine::run_layer / head / forward on the GPU; h and logits are host buffers.
  void run_layer_host(int64_t l, const LayerWeights& lw, float* h, int64_t n, int64_t pos0, KVCache& cache,
                      LayerObserver* obs);
  void head_host(const float* h, int64_t n, float* logits);
  // to_host = false: the logits stay on the GPU (device_logits(); returns an empty vector once they
  // are computed).
  std::vector<float> forward(const int32_t* tokens, int64_t n, KVCache& cache, LayerObserver* obs, bool last_only,
                             bool to_host = true);
  // The last forward pass's logits [rows, V] in GPU memory (valid until the next forward).
  const float* device_logits() const;
  // Layers resident on the GPU now (the rest are streamed per use).
  int64_t resident_layers() const;
  // Quantized matrices dequantized on the GPU at upload so far, and matrices kept quantized there
  // (decoded per use); other storage is decoded on the host.
  int64_t decoded_matrices() const;
  int64_t packed_matrices() const;

 private:
  std::shared_ptr<const GpuLayer> layer(int64_t l, const LayerWeights* lw);
  // dh[n, H] (device) = embeddings of tokens, gathered on the GPU from the table kept there.
  void embed(const int32_t* tokens, int64_t n, float* dh);
  void run_layer(int64_t l, const GpuLayer& g, float* dh, int64_t n, int64_t pos0, KVCache& cache,
                 LayerObserver* obs);
  void head(const float* dh, int64_t n, float* dlogits);

  const Engine& eng_;
  Precision precision_;
  int64_t weight_budget_;         // DeviceOptions::gpu_weight_budget
  uint64_t resident_bytes_ = 0;   // layer weights resident now
  bool keep_quantized_;           // DeviceOptions::gpu_keep_quantized
  std::unique_ptr<UploadCounts> counts_;
  std::vector<std::shared_ptr<const GpuLayer>> resident_;
  std::unique_ptr<GpuMatrix> lm_head_;
  std::unique_ptr<GpuScratch> s_;
};

}  // namespace moetool
