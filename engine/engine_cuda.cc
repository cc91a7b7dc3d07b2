// engine/engine_cuda.cc — CudaForward (engine/engine_cuda.h): the engine's forward pass on the GPU,
// step for step the CPU code of engine/engine.cc on device buffers (kernels/backend_cuda.h).
// Compiled in every build; without the CUDA backend its calls throw, and Engine never constructs
// it unless a GPU is usable.
#include "engine/engine_cuda.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <numeric>
#include <string>

#include "core/error.h"
#include "kernels/backend_cuda.h"
#include "engine/gpu_weights.h"
#include "engine/rope.h"

namespace moetool {

// MOETOOL_CUDA_PROFILE=1: wall time per section of the forward pass (the stream synchronised at
// each boundary, so sections do not overlap), printed to stderr when the engine is destroyed. For
// finding where a forward pass spends its time; off (no synchronisation) by default.
struct CudaProfile {
  bool on = false;
  std::chrono::steady_clock::time_point last;
  std::vector<std::pair<std::string, double>> ms;  // first-seen order
  int64_t passes = 0;
  void mark(const char* section) {
    if (!on) return;
    cuda::synchronize();
    const auto now = std::chrono::steady_clock::now();
    const double d = std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
    for (auto& [name, v] : ms)
      if (name == section) {
        v += d;
        return;
      }
    ms.emplace_back(section, d);
  }
  void start() {
    if (!on) return;
    ++passes;
    cuda::synchronize();
    last = std::chrono::steady_clock::now();
  }
};

struct GpuScratch {
  CudaProfile prof;
  Buffer<uint16_t> xb;  // bf16 copy of a GEMM input
  Buffer<uint16_t> xn;  // bf16 copy of an input several GEMMs share
  Buffer<float> inv_freq;
  int64_t rope_dim = -1, rope_len = -1;  // the table inv_freq holds now
  float rope_factor = 1.0f;
  int64_t rope_half = 0;
  Buffer<float> final_norm;    // [H]
  Buffer<float> embed;         // [V, H] the embedding table (the host's rows), when it fits
  bool embed_on_host = false;  // too large for the GPU: rows are looked up on the host
  Buffer<float> logits;        // [rows, V] the last forward pass's logits
  Buffer<uint16_t> wq16;       // a quantized weight decoded for one GEMM (bf16)
  Buffer<float> wq32;          // (float32)
};

// inv_freq of rope_table(c, d, len) on the device (uploaded when (d, len) changes); returns
// {half, attention factor}.
static std::pair<int64_t, float> device_rope(const ModelConfig& c, int64_t d, int64_t len, GpuScratch& s) {
  if (s.rope_dim != d || s.rope_len != len) {
    const RopeTable rt = rope_table(c, d, len);
    s.inv_freq.upload(rt.inv_freq.data(), rt.inv_freq.size());
    s.rope_dim = d;
    s.rope_len = len;
    s.rope_factor = rt.attention_factor;
    s.rope_half = static_cast<int64_t>(rt.inv_freq.size());
  }
  return {s.rope_half, s.rope_factor};
}

// Y[n, rows] = X[n, cols] · Wᵀ + beta · Y. Xb: X already in bf16 (shared by several GEMMs), or null.
static void matmul(const GpuMatrix& W, const float* X, int64_t n, float* Y, GpuScratch& s, float beta = 0.0f,
                   const uint16_t* Xb = nullptr) {
  const bool packed = W.packing != GpuMatrix::Packing::None;
  if (packed && n <= cuda::kQuantGemvMaxRows) {  // a few rows (decoding): straight from the stored form
    const float* Xf = Xb ? nullptr : X;
    if (W.packing == GpuMatrix::Packing::Blocks)
      cuda::gemv_blocks(W.block_type, W.blocks.get(), W.rows, W.cols, Xf, Xb, n, Y, beta, W.bf16_math);
    else
      cuda::gemv_gptq_int4(W.qweight.get(), W.qzeros.get(), W.scales.get(), W.g_idx.get(), W.cols, W.rows, Xf, Xb, n, Y,
                           beta, W.bf16_math);
    return;
  }
  // A weight kept quantized is decoded once into a scratch buffer for the GEMM.
  if (W.bf16_math) {
    const uint16_t* w = W.w16();
    if (packed) {
      s.wq16.resize(static_cast<size_t>(W.rows * W.cols));
      decode_packed(W, s.wq16.get());
      w = s.wq16.get();
    }
    if (!Xb) {
      s.xb.resize(static_cast<size_t>(n * W.cols));
      cuda::to_bf16(X, s.xb.get(), n * W.cols);
      Xb = s.xb.get();
    }
    cuda::gemm_nt_bf16(n, W.rows, W.cols, Xb, W.cols, w, Y, W.rows, beta);
  } else {
    const float* w = W.f32.get();
    if (packed) {
      s.wq32.resize(static_cast<size_t>(W.rows * W.cols));
      decode_packed(W, s.wq32.get());
      w = s.wq32.get();
    }
    cuda::gemm_nt_f32(n, W.rows, W.cols, X, W.cols, w, Y, W.rows, beta);
  }
}

// The observer callbacks that need a layer's intermediate values (not only its output).
constexpr unsigned kObserveDetail = kObserveLinearInputs | kObserveRouter | kObserveExperts | kObserveFfnActivation;

// The bf16 path that skips float32 intermediates: a bf16 weight and no observer that needs them
// (`need`: the observer's ObserverNeeds, 0 without one).
static bool fused_bf16(const GpuMatrix& W, unsigned need) { return W.bf16_math && !(need & kObserveDetail); }

// The bf16 copy of X[elems] in buf when the engine runs in bf16 (one conversion for the GEMMs that
// share an input), else null.
static const uint16_t* bf16_input(Precision p, const float* X, int64_t elems, Buffer<uint16_t>& buf) {
  if (p != Precision::BF16) return nullptr;
  buf.resize(static_cast<size_t>(elems));
  cuda::to_bf16(X, buf.get(), elems);
  return buf.get();
}

// Device K/V rows of every layer: [capacity, k_width], [capacity, v_width].
struct GpuKV {
  std::vector<Buffer<float>> k, v;
};

namespace {

std::vector<float> host(const float* d, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  if (n) cuda::download(h.data(), d, static_cast<size_t>(n) * sizeof(float));
  return h;
}

// Keep layers resident while this much device memory stays free for activations and the cache.
size_t reserve_bytes() { return std::max<size_t>(size_t{2} << 30, cuda::total_memory() / 10); }

}  // namespace

CudaForward::CudaForward(const Engine& eng, const DeviceOptions& opt)
    : eng_(eng),
      precision_(opt.precision),
      weight_budget_(opt.gpu_weight_budget),
      keep_quantized_(opt.gpu_keep_quantized),
      counts_(std::make_unique<UploadCounts>()),
      s_(std::make_unique<GpuScratch>()) {
  if (!cuda_built() || cuda_device_count() == 0) fail("CUDA engine: no usable GPU: ", cuda_device_summary());
  cuda::init();
  resident_.resize(static_cast<size_t>(eng.config().num_layers));
  const char* p = std::getenv("MOETOOL_CUDA_PROFILE");
  s_->prof.on = p && std::strcmp(p, "0") != 0;
}

CudaForward::~CudaForward() {
  if (!s_->prof.on || s_->prof.ms.empty()) return;
  double total = 0;
  for (const auto& [name, v] : s_->prof.ms) total += v;
  std::cerr << "cuda profile over " << s_->prof.passes << " forward passes (ms per pass; 'weights' holds the uploads):";
  const double per = 1.0 / static_cast<double>(std::max<int64_t>(1, s_->prof.passes));
  for (const auto& [name, v] : s_->prof.ms) std::cerr << " " << name << "=" << v * per << " (" << 100.0 * v / total << "%)";
  std::cerr << "\n";
}

int64_t CudaForward::decoded_matrices() const { return counts_->decoded; }
int64_t CudaForward::packed_matrices() const { return counts_->packed; }

int64_t CudaForward::resident_layers() const {
  return std::count_if(resident_.begin(), resident_.end(), [](const auto& p) { return p != nullptr; });
}

std::shared_ptr<const GpuLayer> CudaForward::layer(int64_t l, const LayerWeights* lw) {
  if (resident_[static_cast<size_t>(l)]) return resident_[static_cast<size_t>(l)];
  std::shared_ptr<const LayerWeights> held;
  if (!lw) {
    held = eng_.load_layer(l);
    lw = held.get();
  }
  // Resident while the budget (or, by default, memory) allows — decoded, or else with its quantized
  // matrices kept as stored (decoded per use) when that fits; otherwise this layer is streamed:
  // uploaded for this use and freed after.
  auto fits = [&](uint64_t b) {
    return weight_budget_ < 0 ? cuda::free_memory() > reserve_bytes() + b
                              : resident_bytes_ + b <= static_cast<uint64_t>(weight_budget_);
  };
  bool packed = keep_quantized_, keep;
  const uint64_t dense_b = layer_gpu_bytes(*lw, precision_, false), packed_b = layer_gpu_bytes(*lw, precision_, true);
  if (packed) {
    keep = fits(packed_b);
  } else if (fits(dense_b)) {
    keep = true;
  } else {
    packed = keep = packed_b < dense_b && fits(packed_b);
  }
  auto g = upload_layer(*lw, precision_, packed, counts_.get());
  if (keep) {
    resident_[static_cast<size_t>(l)] = g;
    resident_bytes_ += g->bytes;
  }
  return g;
}

void CudaForward::run_layer_host(int64_t l, const LayerWeights& lw, float* h, int64_t n, int64_t pos0, KVCache& cache,
                                 LayerObserver* obs) {
  const int64_t H = eng_.config().hidden_size;
  Buffer<float> dh;
  dh.upload(h, static_cast<size_t>(n * H));
  auto g = layer(l, &lw);
  run_layer(l, *g, dh.get(), n, pos0, cache, obs);
  cuda::download(h, dh.get(), static_cast<size_t>(n * H) * sizeof(float));
}

void CudaForward::embed(const int32_t* tokens, int64_t n, float* dh) {
  const ModelConfig& c = eng_.config();
  const int64_t H = c.hidden_size, V = c.vocab_size;
  GpuScratch& s = *s_;
  if (!s.embed.get() && !s.embed_on_host) {
    // The table on the GPU, built from the host's own rows (any storage decodes as on the CPU),
    // unless it would take more than an eighth of the GPU's memory.
    if (static_cast<uint64_t>(V * H) * sizeof(float) <= cuda::total_memory() / 8) {
      s.embed.resize(static_cast<size_t>(V * H));
      const int64_t chunk = 4096;
      std::vector<int32_t> ids(static_cast<size_t>(chunk));
      std::vector<float> rows(static_cast<size_t>(chunk * H));
      for (int64_t r0 = 0; r0 < V; r0 += chunk) {
        const int64_t m = std::min(chunk, V - r0);
        std::iota(ids.begin(), ids.begin() + m, static_cast<int32_t>(r0));
        eng_.weights().embed_rows(ids.data(), m, rows.data());
        cuda::upload(s.embed.get() + r0 * H, rows.data(), static_cast<size_t>(m * H) * sizeof(float));
      }
    } else {
      s.embed_on_host = true;
    }
  }
  if (s.embed_on_host) {
    std::vector<float> h(static_cast<size_t>(n * H));
    eng_.embed(tokens, n, h.data());
    cuda::upload(dh, h.data(), h.size() * sizeof(float));
    return;
  }
  eng_.check_tokens(tokens, n);
  Buffer<int32_t> ids;
  ids.upload(tokens, static_cast<size_t>(n));
  cuda::gather_rows(s.embed.get(), ids.get(), n, H, dh);
}

void CudaForward::head_host(const float* h, int64_t n, float* logits) {
  const ModelConfig& c = eng_.config();
  Buffer<float> dh, dl(static_cast<size_t>(n * c.vocab_size));
  dh.upload(h, static_cast<size_t>(n * c.hidden_size));
  head(dh.get(), n, dl.get());
  cuda::download(logits, dl.get(), static_cast<size_t>(n * c.vocab_size) * sizeof(float));
}

void CudaForward::head(const float* dh, int64_t n, float* dlogits) {
  const ModelConfig& c = eng_.config();
  if (!lm_head_) lm_head_ = upload_matrix(eng_.weights().matrix(Role::LmHead), precision_, counts_.get());
  if (!s_->final_norm.get()) s_->final_norm = upload_vec(eng_.weights().vector(Role::FinalNorm));
  Buffer<float> x(static_cast<size_t>(n * c.hidden_size));
  cuda::rmsnorm(dh, s_->final_norm.get(), x.get(), n, c.hidden_size, static_cast<float>(c.rms_norm_eps));
  matmul(*lm_head_, x.get(), n, dlogits, *s_);
}

std::vector<float> CudaForward::forward(const int32_t* tokens, int64_t n, KVCache& cache, LayerObserver* obs,
                                        bool last_only, bool to_host) {
  const ModelConfig& c = eng_.config();
  const int64_t H = c.hidden_size, V = c.vocab_size;
  s_->prof.start();
  Buffer<float> dh(static_cast<size_t>(n * H));
  embed(tokens, n, dh.get());
  s_->prof.mark("embed");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto g = layer(l, nullptr);
    s_->prof.mark("weights");
    run_layer(l, *g, dh.get(), n, cache.length, cache, obs);
  }
  cache.length += n;
  const int64_t rows = last_only ? 1 : n;
  s_->logits.resize(static_cast<size_t>(rows * V));
  head(dh.get() + (n - rows) * H, rows, s_->logits.get());
  s_->prof.mark("head");
  if (!to_host) {
    cuda::synchronize();
    return {};
  }
  return s_->logits.to_host(static_cast<size_t>(rows * V));
}

const float* CudaForward::device_logits() const { return s_->logits.get(); }

void CudaForward::run_layer(int64_t l, const GpuLayer& g, float* h, int64_t n, int64_t pos0, KVCache& cache,
                            LayerObserver* obs) {
  const ModelConfig& c = eng_.config();
  const int64_t H = c.hidden_size, Hq = c.num_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  GpuScratch& s = *s_;
  // Device KV rows for this cache, allocated per layer on first use.
  if (!cache.gpu) cache.gpu = std::make_shared<GpuKV>();
  GpuKV& kv = *std::static_pointer_cast<GpuKV>(cache.gpu);
  if (kv.k.size() < static_cast<size_t>(c.num_layers)) {
    kv.k.resize(static_cast<size_t>(c.num_layers));
    kv.v.resize(static_cast<size_t>(c.num_layers));
  }
  int64_t kw, vw;
  if (c.mla) {
    kw = Hq * (c.mla->qk_nope_head_dim + c.mla->qk_rope_head_dim);
    vw = Hq * c.mla->v_head_dim;
  } else {
    kw = vw = c.num_kv_heads * c.head_dim;
  }
  Buffer<float>& Kb = kv.k[static_cast<size_t>(l)];
  Buffer<float>& Vb = kv.v[static_cast<size_t>(l)];
  if (!Kb.get()) {
    Kb.resize(static_cast<size_t>(cache.capacity * kw));
    Vb.resize(static_cast<size_t>(cache.capacity * vw));
  }
  float* Kc = Kb.get();
  float* Vc = Vb.get();
  const unsigned need = obs ? obs->needs() : 0u;  // what the observer uses: only that is copied to the host
  // The input X[rows, cols] of the linears `roles` (one host copy for all of them).
  auto see_inputs = [&](std::initializer_list<Role> roles, const float* X, int64_t rows, int64_t cols) {
    if (!(need & kObserveLinearInputs)) return;
    const std::vector<float> hx = host(X, rows * cols);
    for (const Role r : roles) obs->on_linear_input(l, r, -1, hx.data(), rows, cols);
  };
  auto see_input = [&](Role r, const float* X, int64_t rows, int64_t cols) { see_inputs({r}, X, rows, cols); };

  Buffer<float> x(static_cast<size_t>(n * H));
  cuda::rmsnorm(h, g.attn_norm.get(), x.get(), n, H, eps);

  // ---- attention ----
  Buffer<float> attn;
  if (c.mla) {
    const MlaConfig& m = *c.mla;
    const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dvh = m.v_head_dim, dq = dn + dr;
    Buffer<float> q(static_cast<size_t>(n * Hq * dq));
    if (g.qa) {
      see_input(Role::QA, x.get(), n, H);
      Buffer<float> qa(static_cast<size_t>(n * g.qa->rows));
      matmul(*g.qa, x.get(), n, qa.get(), s);
      cuda::rmsnorm(qa.get(), g.qa_norm.get(), qa.get(), n, g.qa->rows, kMlaNormEps);
      see_input(Role::QB, qa.get(), n, g.qa->rows);
      matmul(*g.qb, qa.get(), n, q.get(), s);
    } else {
      see_input(Role::Q, x.get(), n, H);
      matmul(*g.q, x.get(), n, q.get(), s);
    }
    see_input(Role::KVA, x.get(), n, H);
    const int64_t kvaw = m.kv_lora_rank + dr;
    Buffer<float> kva(static_cast<size_t>(n * kvaw)), ckv(static_cast<size_t>(n * m.kv_lora_rank)),
        kpe(static_cast<size_t>(n * dr));
    matmul(*g.kva, x.get(), n, kva.get(), s);
    cuda::copy_2d(ckv.get(), m.kv_lora_rank, kva.get(), kvaw, n, m.kv_lora_rank);
    cuda::copy_2d(kpe.get(), dr, kva.get() + m.kv_lora_rank, kvaw, n, dr);
    cuda::rmsnorm(ckv.get(), g.kva_norm.get(), ckv.get(), n, m.kv_lora_rank, kMlaNormEps);
    see_input(Role::KVB, ckv.get(), n, m.kv_lora_rank);
    Buffer<float> kvo(static_cast<size_t>(n * Hq * (dn + dvh)));
    matmul(*g.kvb, ckv.get(), n, kvo.get(), s);
    const auto [half, factor] = device_rope(c, dr, pos0 + n, s);
    if (m.rope_interleave) {
      cuda::deinterleave(q.get(), n, Hq, dq, dn, Hq * dq, dr);
      cuda::deinterleave(kpe.get(), n, 1, dr, 0, dr, dr);
    }
    cuda::rope(q.get(), n, Hq, dq, dn, Hq * dq, pos0, s.inv_freq.get(), half, factor);
    cuda::rope(kpe.get(), n, 1, dr, 0, dr, pos0, s.inv_freq.get(), half, factor);
    // Cache rows: K = [k_nope_h, k_pe] per head, V = v_h per head.
    for (int64_t hh = 0; hh < Hq; ++hh) {
      const float* src = kvo.get() + hh * (dn + dvh);
      cuda::copy_2d(Kc + pos0 * Hq * dq + hh * dq, Hq * dq, src, Hq * (dn + dvh), n, dn);
      cuda::copy_2d(Kc + pos0 * Hq * dq + hh * dq + dn, Hq * dq, kpe.get(), dr, n, dr);
      cuda::copy_2d(Vc + pos0 * Hq * dvh + hh * dvh, Hq * dvh, src + dn, Hq * (dn + dvh), n, dvh);
    }
    const float scale = mla_attention_scale(c, dq);
    attn.resize(static_cast<size_t>(n * Hq * dvh));
    const auto win = c.window_for_layer(l);
    s.prof.mark("qkv");
    cuda::attention(q.get(), Hq * dq, Kc, Hq * dq, Vc, Hq * dvh, attn.get(), n, pos0, Hq, Hq, dq, dvh, scale,
                    win ? *win : 0, precision_ == Precision::BF16);
    s.prof.mark("attention");
  } else {
    const int64_t Hk = c.num_kv_heads, d = c.head_dim;
    Buffer<float> q(static_cast<size_t>(n * Hq * d));
    float* k = Kc + pos0 * Hk * d;  // K and V are computed straight into the cache rows
    float* v = Vc + pos0 * Hk * d;
    see_inputs({Role::Q, Role::K, Role::V}, x.get(), n, H);
    const uint16_t* xb = bf16_input(precision_, x.get(), n * H, s.xn);
    matmul(*g.q, x.get(), n, q.get(), s, 0.0f, xb);
    matmul(*g.k, x.get(), n, k, s, 0.0f, xb);
    matmul(*g.v, x.get(), n, v, s, 0.0f, xb);
    cuda::add_bias(q.get(), g.q_bias.get(), n, Hq * d);
    cuda::add_bias(k, g.k_bias.get(), n, Hk * d);
    cuda::add_bias(v, g.v_bias.get(), n, Hk * d);
    if (c.qk_norm == QkNorm::Full) {
      cuda::rmsnorm(q.get(), g.q_norm.get(), q.get(), n, Hq * d, eps);
      cuda::rmsnorm(k, g.k_norm.get(), k, n, Hk * d, eps);
    }
    if (c.clip_qkv) {
      const float cl = static_cast<float>(*c.clip_qkv);
      cuda::clamp(q.get(), n * Hq * d, cl);
      cuda::clamp(k, n * Hk * d, cl);
      cuda::clamp(v, n * Hk * d, cl);
    }
    if (c.qk_norm == QkNorm::PerHead) {
      cuda::rmsnorm(q.get(), g.q_norm.get(), q.get(), n * Hq, d, eps);
      cuda::rmsnorm(k, g.k_norm.get(), k, n * Hk, d, eps);
    }
    const auto [half, factor] = device_rope(c, d, pos0 + n, s);
    cuda::rope(q.get(), n, Hq, d, 0, Hq * d, pos0, s.inv_freq.get(), half, factor);
    cuda::rope(k, n, Hk, d, 0, Hk * d, pos0, s.inv_freq.get(), half, factor);
    attn.resize(static_cast<size_t>(n * Hq * d));
    const auto win = c.window_for_layer(l);
    s.prof.mark("qkv");
    cuda::attention(q.get(), Hq * d, Kc, Hk * d, Vc, Hk * d, attn.get(), n, pos0, Hq, Hk, d, d,
                    1.0f / std::sqrt(static_cast<float>(d)), win ? *win : 0, precision_ == Precision::BF16);
    s.prof.mark("attention");
  }
  const int64_t attn_w = g.o->cols;
  see_input(Role::O, attn.get(), n, attn_w);
  matmul(*g.o, attn.get(), n, x.get(), s);
  cuda::add_bias(x.get(), g.o_bias.get(), n, H);
  cuda::add(h, x.get(), n * H);
  s.prof.mark("o_proj");

  // ---- FFN / MoE ----
  cuda::rmsnorm(h, g.ffn_norm.get(), x.get(), n, H, eps);
  Buffer<float> out(static_cast<size_t>(n * H)), G, U;
  cuda::zero(out.get(), static_cast<size_t>(n * H) * sizeof(float));
  if (!g.moe) {
    see_inputs({Role::Gate, Role::Up}, x.get(), n, H);
    const int64_t I = g.gate->rows;
    G.resize(static_cast<size_t>(n * I));
    U.resize(static_cast<size_t>(n * I));
    const uint16_t* xb = bf16_input(precision_, x.get(), n * H, s.xn);
    matmul(*g.gate, x.get(), n, G.get(), s, 0.0f, xb);
    matmul(*g.up, x.get(), n, U.get(), s, 0.0f, xb);
    cuda::add_bias(G.get(), g.gate_bias.get(), n, I);
    cuda::add_bias(U.get(), g.up_bias.get(), n, I);
    if (fused_bf16(*g.down, need)) {  // the activation goes straight to bf16, the down GEMM's input
      s.xn.resize(static_cast<size_t>(n * I));
      cuda::silu_mul_bf16(G.get(), U.get(), s.xn.get(), n * I);
      matmul(*g.down, nullptr, n, out.get(), s, 0.0f, s.xn.get());
    } else {
      cuda::silu_mul(G.get(), U.get(), G.get(), n * I);
      if (need & (kObserveFfnActivation | kObserveLinearInputs)) {
        const std::vector<float> a = host(G.get(), n * I);
        if (need & kObserveFfnActivation) obs->on_ffn_activation(l, a.data(), n, I);
        if (need & kObserveLinearInputs) obs->on_linear_input(l, Role::Down, -1, a.data(), n, I);
      }
      matmul(*g.down, G.get(), n, out.get(), s);
    }
    cuda::add_bias(out.get(), g.down_bias.get(), n, H);
  } else {
    const MoeConfig& mc = *c.moe;
    const int64_t E = mc.num_experts, k = mc.top_k, R = n * k;
    Buffer<float> logits(static_cast<size_t>(n * E)), scratch(static_cast<size_t>(2 * n * E)),
        wts(static_cast<size_t>(R));
    Buffer<int32_t> sel(static_cast<size_t>(R));
    see_input(Role::Router, x.get(), n, H);
    matmul(*g.router, x.get(), n, logits.get(), s);
    cuda::route(route_params(mc), logits.get(), g.router_bias.get(), n, scratch.get(), sel.get(), wts.get());
    bool fused = !g.eg.empty() && fused_bf16(*g.eg[0], need);
    for (const auto& m : g.eg) fused = fused && m->rows == g.eg[0]->rows;
    // The R (token, slot) entries grouped by expert: off[E + 1] row offsets, dtok the token of each
    // grouped row, dpos the grouped row of each entry, dtw the weights in grouped order (the
    // per-expert path's scatter). On the GPU — only the offsets come back — unless an observer
    // needs the routing on the host.
    std::vector<int64_t> off(static_cast<size_t>(E + 1), 0);
    std::vector<int32_t> tok;  // host copy of dtok (host grouping only)
    Buffer<int32_t> dtok(static_cast<size_t>(R)), dpos(static_cast<size_t>(R)), doff;
    Buffer<float> dtw;
    if (!fused) dtw.resize(static_cast<size_t>(R));
    if (need & (kObserveRouter | kObserveExperts | kObserveLinearInputs)) {
      const std::vector<int32_t> hsel = sel.to_host(static_cast<size_t>(R));
      const std::vector<float> hw = wts.to_host(static_cast<size_t>(R));
      if (need & kObserveRouter) obs->on_router(l, host(logits.get(), n * E).data(), hsel.data(), hw.data(), n, E, k);
      for (const int32_t e : hsel) ++off[static_cast<size_t>(e) + 1];
      std::partial_sum(off.begin(), off.end(), off.begin());
      tok.resize(static_cast<size_t>(R));
      std::vector<int32_t> pos(static_cast<size_t>(R));
      std::vector<float> tw(static_cast<size_t>(R));
      std::vector<int64_t> fill(off.begin(), off.end() - 1);
      for (int64_t r = 0; r < R; ++r) {
        const auto e = static_cast<size_t>(hsel[static_cast<size_t>(r)]);
        pos[static_cast<size_t>(r)] = static_cast<int32_t>(fill[e]);
        tok[static_cast<size_t>(fill[e])] = static_cast<int32_t>(r / k);
        tw[static_cast<size_t>(fill[e]++)] = hw[static_cast<size_t>(r)];
      }
      cuda::upload(dtok.get(), tok.data(), tok.size() * sizeof(int32_t));
      cuda::upload(dpos.get(), pos.data(), pos.size() * sizeof(int32_t));
      if (!fused) cuda::upload(dtw.get(), tw.data(), tw.size() * sizeof(float));
    } else {
      doff.resize(static_cast<size_t>(E + 1));
      cuda::group_by_expert(sel.get(), wts.get(), n, k, E, doff.get(), dtok.get(), dpos.get(),
                            fused ? nullptr : dtw.get());
      const std::vector<int32_t> o = doff.to_host(static_cast<size_t>(E + 1));
      std::copy(o.begin(), o.end(), off.begin());
    }
    s.prof.mark("routing");
    Buffer<float> Xe, Ye;
    if (fused) {
      // bf16 without observers of intermediates: the n·k (token, slot) rows grouped by expert are
      // gathered once, the experts' GEMMs run on their row ranges, one activation pass, one
      // weighted combine per token.
      const int64_t I = g.eg[0]->rows;
      int64_t cap = 0;  // the most rows any expert has
      for (int64_t e = 0; e < E; ++e)
        cap = std::max(cap, off[static_cast<size_t>(e) + 1] - off[static_cast<size_t>(e)]);
      // Stacked experts and padding that at most doubles the rows: each projection of all experts is
      // one batched GEMM over rows padded to `cap` (one launch that fills the GPU, where an
      // expert's few hundred rows alone leave most of it idle).
      const bool batched = g.eg_all.get() && g.eu_all.get() && g.ed_all.get() && doff.get() && E * cap <= 2 * R;
      const int64_t P = batched ? E * cap : R;  // rows of the grouped layout
      s.xn.resize(static_cast<size_t>(P * std::max(H, I)));
      G.resize(static_cast<size_t>(P * I));
      U.resize(static_cast<size_t>(P * I));
      Ye.resize(static_cast<size_t>(P * H));
      if (batched) {
        Buffer<int32_t> padded(static_cast<size_t>(R)), tokp(static_cast<size_t>(P));
        cuda::pad_groups(sel.get(), doff.get(), dpos.get(), n, k, E, cap, padded.get(), tokp.get());
        cuda::gather_rows_bf16(x.get(), tokp.get(), P, H, s.xn.get());  // padding rows are zero
        cuda::gemm_nt_bf16_batched(E, cap, I, H, s.xn.get(), H, cap * H, g.eg_all.get(), I * H, G.get(), I, cap * I);
        cuda::gemm_nt_bf16_batched(E, cap, I, H, s.xn.get(), H, cap * H, g.eu_all.get(), I * H, U.get(), I, cap * I);
        cuda::silu_mul_bf16(G.get(), U.get(), s.xn.get(), P * I);
        cuda::gemm_nt_bf16_batched(E, cap, H, I, s.xn.get(), I, cap * I, g.ed_all.get(), H * I, Ye.get(), H, cap * H);
        cuda::combine_rows(Ye.get(), padded.get(), wts.get(), n, k, H, out.get());
      } else {
        cuda::gather_rows_bf16(x.get(), dtok.get(), R, H, s.xn.get());
        for (int64_t e = 0; e < E; ++e) {
          const int64_t o = off[static_cast<size_t>(e)], m = off[static_cast<size_t>(e) + 1] - o;
          if (m == 0) continue;
          matmul(*g.eg[static_cast<size_t>(e)], nullptr, m, G.get() + o * I, s, 0.0f, s.xn.get() + o * H);
          matmul(*g.eu[static_cast<size_t>(e)], nullptr, m, U.get() + o * I, s, 0.0f, s.xn.get() + o * H);
        }
        cuda::silu_mul_bf16(G.get(), U.get(), s.xn.get(), R * I);
        for (int64_t e = 0; e < E; ++e) {
          const int64_t o = off[static_cast<size_t>(e)], m = off[static_cast<size_t>(e) + 1] - o;
          if (m == 0) continue;
          matmul(*g.ed[static_cast<size_t>(e)], nullptr, m, Ye.get() + o * H, s, 0.0f, s.xn.get() + o * I);
        }
        cuda::combine_rows(Ye.get(), dpos.get(), wts.get(), n, k, H, out.get());
      }
    }
    for (int64_t e = 0; e < E && !fused; ++e) {
      const int64_t m = off[static_cast<size_t>(e) + 1] - off[static_cast<size_t>(e)];
      if (m == 0) continue;
      const int32_t* idx = dtok.get() + off[static_cast<size_t>(e)];
      const GpuMatrix& eg = *g.eg[static_cast<size_t>(e)];
      Ye.resize(static_cast<size_t>(m * H));
      Xe.resize(static_cast<size_t>(m * H));
      cuda::gather_rows(x.get(), idx, m, H, Xe.get());
      if (need & kObserveLinearInputs) {
        const std::vector<float> xe = host(Xe.get(), m * H);
        obs->on_linear_input(l, Role::ExpertGate, e, xe.data(), m, H);
        obs->on_linear_input(l, Role::ExpertUp, e, xe.data(), m, H);
      }
      const int64_t I = eg.rows;
      G.resize(static_cast<size_t>(m * I));
      U.resize(static_cast<size_t>(m * I));
      const uint16_t* xb = bf16_input(precision_, Xe.get(), m * H, s.xn);
      matmul(eg, Xe.get(), m, G.get(), s, 0.0f, xb);
      matmul(*g.eu[static_cast<size_t>(e)], Xe.get(), m, U.get(), s, 0.0f, xb);
      cuda::silu_mul(G.get(), U.get(), G.get(), m * I);
      std::vector<float> act;  // host copy of the activation, once for both callbacks
      if (need & (kObserveLinearInputs | kObserveExperts)) act = host(G.get(), m * I);
      if (need & kObserveLinearInputs) obs->on_linear_input(l, Role::ExpertDown, e, act.data(), m, I);
      matmul(*g.ed[static_cast<size_t>(e)], G.get(), m, Ye.get(), s);
      if (need & kObserveExperts)
        obs->on_expert(l, e, tok.data() + off[static_cast<size_t>(e)], act.data(), I, host(Ye.get(), m * H).data(), m,
                       H);
      cuda::scatter_add_rows(Ye.get(), idx, dtw.get() + off[static_cast<size_t>(e)], m, H, out.get());
    }
    s.prof.mark("experts");
    if (g.sg) {
      see_inputs({Role::SharedGate, Role::SharedUp}, x.get(), n, H);
      const int64_t I = g.sg->rows;
      Buffer<float> S(static_cast<size_t>(n * H));
      G.resize(static_cast<size_t>(n * I));
      U.resize(static_cast<size_t>(n * I));
      const uint16_t* xb = bf16_input(precision_, x.get(), n * H, s.xn);
      matmul(*g.sg, x.get(), n, G.get(), s, 0.0f, xb);
      matmul(*g.su, x.get(), n, U.get(), s, 0.0f, xb);
      cuda::silu_mul(G.get(), U.get(), G.get(), n * I);
      matmul(*g.sd, G.get(), n, S.get(), s);
      Buffer<float> gatev;
      if (g.shared_gate) {
        see_input(Role::SharedExpertGate, x.get(), n, H);
        gatev.resize(static_cast<size_t>(n));
        matmul(*g.shared_gate, x.get(), n, gatev.get(), s);
      }
      cuda::gated_add(out.get(), S.get(), gatev.get(), n, H);
    }
  }
  s.prof.mark(g.moe ? "shared_expert" : "ffn");
  if (need & kObserveFfnBlock) obs->on_ffn_block(l, host(h, n * H).data(), host(out.get(), n * H).data(), n, H);
  cuda::add(h, out.get(), n * H);
  if ((need & kObserveHidden) && !obs->on_hidden_device(l, h, n, H)) obs->on_hidden(l, host(h, n * H).data(), n, H);
}

}  // namespace moetool
