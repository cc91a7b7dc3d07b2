// engine/engine_cuda.cc — CudaForward (engine/engine_cuda.h): the engine's forward pass on the GPU,
// step for step the CPU code of engine/engine.cc on device buffers (kernels/backend_cuda.h).
// Compiled in every build; without the CUDA backend its calls throw, and Engine never constructs
// it unless a GPU is usable.
#include "engine/engine_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <numeric>
#include <string>

#include "core/error.h"
#include "kernels/backend_cuda.h"
#include "engine/gpu_ops.h"
#include "engine/gpu_weights.h"
#include "engine/rope.h"

namespace moetool {

// The observer callbacks that need a layer's intermediate values (not only its output).
constexpr unsigned kObserveDetail = kObserveLinearInputs | kObserveRouter | kObserveExperts | kObserveFfnActivation;

// The bf16 path that skips float32 intermediates: a bf16 weight and no observer that needs them
// (`need`: the observer's ObserverNeeds, 0 without one).
static bool fused_bf16(const GpuMatrix& W, unsigned need) { return W.bf16_math && !(need & kObserveDetail); }

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

namespace {

// One layer's forward pass on the GPU: what its parts share.
struct LayerStep {
  const ModelConfig& c;
  const GpuLayer& g;
  GpuScratch& s;
  Precision precision;
  int64_t l, n, pos0;
  LayerObserver* obs;
  unsigned need;  // what the observer uses: only that is copied to the host
  // The input X[rows, cols] of the linears `roles` (one host copy for all of them).
  void see_inputs(std::initializer_list<Role> roles, const float* X, int64_t rows, int64_t cols) const {
    if (!(need & kObserveLinearInputs)) return;
    const std::vector<float> hx = host(X, rows * cols);
    for (const Role r : roles) obs->on_linear_input(l, r, -1, hx.data(), rows, cols);
  }
  void see_input(Role r, const float* X, int64_t rows, int64_t cols) const { see_inputs({r}, X, rows, cols); }
};

// MLA attention on the normed x[n, H], writing the cache rows Kc, Vc: attn[n, Hq·v_head_dim].
void attention_mla(const LayerStep& st, const float* x, float* Kc, float* Vc, Buffer<float>& attn) {
  const ModelConfig& c = st.c;
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t l = st.l, n = st.n, pos0 = st.pos0, H = c.hidden_size, Hq = c.num_heads;
  const MlaConfig& m = *c.mla;
  const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dvh = m.v_head_dim, dq = dn + dr;
  Buffer<float> q(static_cast<size_t>(n * Hq * dq));
  if (g.qa) {
    st.see_input(Role::QA, x, n, H);
    Buffer<float> qa(static_cast<size_t>(n * g.qa->rows));
    matmul(*g.qa, x, n, qa.get(), s);
    cuda::rmsnorm(qa.get(), g.qa_norm.get(), qa.get(), n, g.qa->rows, kMlaNormEps);
    st.see_input(Role::QB, qa.get(), n, g.qa->rows);
    matmul(*g.qb, qa.get(), n, q.get(), s);
  } else {
    st.see_input(Role::Q, x, n, H);
    matmul(*g.q, x, n, q.get(), s);
  }
  st.see_input(Role::KVA, x, n, H);
  const int64_t kvaw = m.kv_lora_rank + dr;
  Buffer<float> kva(static_cast<size_t>(n * kvaw)), ckv(static_cast<size_t>(n * m.kv_lora_rank)),
      kpe(static_cast<size_t>(n * dr));
  matmul(*g.kva, x, n, kva.get(), s);
  cuda::copy_2d(ckv.get(), m.kv_lora_rank, kva.get(), kvaw, n, m.kv_lora_rank);
  cuda::copy_2d(kpe.get(), dr, kva.get() + m.kv_lora_rank, kvaw, n, dr);
  cuda::rmsnorm(ckv.get(), g.kva_norm.get(), ckv.get(), n, m.kv_lora_rank, kMlaNormEps);
  st.see_input(Role::KVB, ckv.get(), n, m.kv_lora_rank);
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
                  win ? *win : 0, st.precision == Precision::BF16);
  s.prof.mark("attention");
}

// Standard (grouped-query) attention on the normed x[n, H], K and V computed straight into the
// cache rows Kc, Vc: attn[n, Hq·head_dim].
void attention_gqa(const LayerStep& st, const float* x, float* Kc, float* Vc, Buffer<float>& attn) {
  const ModelConfig& c = st.c;
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t l = st.l, n = st.n, pos0 = st.pos0, H = c.hidden_size, Hq = c.num_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t Hk = c.num_kv_heads, d = c.head_dim;
  Buffer<float> q(static_cast<size_t>(n * Hq * d));
  float* k = Kc + pos0 * Hk * d;  // K and V are computed straight into the cache rows
  float* v = Vc + pos0 * Hk * d;
  st.see_inputs({Role::Q, Role::K, Role::V}, x, n, H);
  const uint16_t* xb = bf16_input(st.precision, x, n * H, s.xn);
  matmul(*g.q, x, n, q.get(), s, 0.0f, xb);
  matmul(*g.k, x, n, k, s, 0.0f, xb);
  matmul(*g.v, x, n, v, s, 0.0f, xb);
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
                  1.0f / std::sqrt(static_cast<float>(d)), win ? *win : 0, st.precision == Precision::BF16);
  s.prof.mark("attention");
}

// The dense FFN on the normed x[n, H] into out[n, H].
void dense_ffn(const LayerStep& st, const float* x, float* out) {
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t l = st.l, n = st.n, H = st.c.hidden_size;
  const unsigned need = st.need;
  Buffer<float> G, U;
  st.see_inputs({Role::Gate, Role::Up}, x, n, H);
  const int64_t I = g.gate->rows;
  G.resize(static_cast<size_t>(n * I));
  U.resize(static_cast<size_t>(n * I));
  const uint16_t* xb = bf16_input(st.precision, x, n * H, s.xn);
  matmul(*g.gate, x, n, G.get(), s, 0.0f, xb);
  matmul(*g.up, x, n, U.get(), s, 0.0f, xb);
  cuda::add_bias(G.get(), g.gate_bias.get(), n, I);
  cuda::add_bias(U.get(), g.up_bias.get(), n, I);
  if (fused_bf16(*g.down, need)) {  // the activation goes straight to bf16, the down GEMM's input
    s.xn.resize(static_cast<size_t>(n * I));
    cuda::silu_mul_bf16(G.get(), U.get(), s.xn.get(), n * I);
    matmul(*g.down, nullptr, n, out, s, 0.0f, s.xn.get());
  } else {
    cuda::silu_mul(G.get(), U.get(), G.get(), n * I);
    if (need & (kObserveFfnActivation | kObserveLinearInputs)) {
      const std::vector<float> a = host(G.get(), n * I);
      if (need & kObserveFfnActivation) st.obs->on_ffn_activation(l, a.data(), n, I);
      if (need & kObserveLinearInputs) st.obs->on_linear_input(l, Role::Down, -1, a.data(), n, I);
    }
    matmul(*g.down, G.get(), n, out, s);
  }
  cuda::add_bias(out, g.down_bias.get(), n, H);
}

// A MoE layer's routing: the R = n·k (token, slot) entries, sel[R] and wts[R], grouped by expert:
// off[E + 1] row offsets, dtok the token of each grouped row, dpos the grouped row of each entry,
// dtw the weights in grouped order (the per-expert path's scatter); tok: a host copy of dtok (host
// grouping only). `fused`: the bf16 path over all experts at once.
struct Routing {
  Buffer<float> wts;
  Buffer<int32_t> sel;
  bool fused = false;
  std::vector<int64_t> off;
  std::vector<int32_t> tok;
  Buffer<int32_t> dtok, dpos, doff;
  Buffer<float> dtw;
};

// Routes the normed x[n, H] and groups the entries by expert — on the GPU (only the offsets come
// back) unless an observer needs the routing on the host.
void route_tokens(const LayerStep& st, const float* x, Routing& rt) {
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t l = st.l, n = st.n, H = st.c.hidden_size;
  const unsigned need = st.need;
  const MoeConfig& mc = *st.c.moe;
  const int64_t E = mc.num_experts, k = mc.top_k, R = n * k;
  Buffer<float> logits(static_cast<size_t>(n * E)), scratch(static_cast<size_t>(2 * n * E));
  rt.wts.resize(static_cast<size_t>(R));
  rt.sel.resize(static_cast<size_t>(R));
  st.see_input(Role::Router, x, n, H);
  matmul(*g.router, x, n, logits.get(), s);
  cuda::route(route_params(mc), logits.get(), g.router_bias.get(), n, scratch.get(), rt.sel.get(), rt.wts.get());
  bool fused = !g.eg.empty() && fused_bf16(*g.eg[0], need);
  for (const auto& m : g.eg) fused = fused && m->rows == g.eg[0]->rows;
  rt.fused = fused;
  std::vector<int64_t>& off = rt.off;
  off.assign(static_cast<size_t>(E + 1), 0);
  rt.dtok.resize(static_cast<size_t>(R));
  rt.dpos.resize(static_cast<size_t>(R));
  if (!fused) rt.dtw.resize(static_cast<size_t>(R));
  if (need & (kObserveRouter | kObserveExperts | kObserveLinearInputs)) {
    const std::vector<int32_t> hsel = rt.sel.to_host(static_cast<size_t>(R));
    const std::vector<float> hw = rt.wts.to_host(static_cast<size_t>(R));
    if (need & kObserveRouter) st.obs->on_router(l, host(logits.get(), n * E).data(), hsel.data(), hw.data(), n, E, k);
    for (const int32_t e : hsel) ++off[static_cast<size_t>(e) + 1];
    std::partial_sum(off.begin(), off.end(), off.begin());
    std::vector<int32_t>& tok = rt.tok;
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
    cuda::upload(rt.dtok.get(), tok.data(), tok.size() * sizeof(int32_t));
    cuda::upload(rt.dpos.get(), pos.data(), pos.size() * sizeof(int32_t));
    if (!fused) cuda::upload(rt.dtw.get(), tw.data(), tw.size() * sizeof(float));
  } else {
    rt.doff.resize(static_cast<size_t>(E + 1));
    cuda::group_by_expert(rt.sel.get(), rt.wts.get(), n, k, E, rt.doff.get(), rt.dtok.get(), rt.dpos.get(),
                          fused ? nullptr : rt.dtw.get());
    const std::vector<int32_t> o = rt.doff.to_host(static_cast<size_t>(E + 1));
    std::copy(o.begin(), o.end(), off.begin());
  }
}

// bf16 without observers of intermediates: the n·k (token, slot) rows grouped by expert are
// gathered once, the experts' GEMMs run on their row ranges, one activation pass, one weighted
// combine per token into out[n, H].
void experts_fused(const LayerStep& st, const float* x, const Routing& rt, float* out) {
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t n = st.n, H = st.c.hidden_size;
  const int64_t E = st.c.moe->num_experts, k = st.c.moe->top_k, R = n * k;
  const std::vector<int64_t>& off = rt.off;
  Buffer<float> G, U, Ye;
  const int64_t I = g.eg[0]->rows;
  int64_t cap = 0;  // the most rows any expert has
  for (int64_t e = 0; e < E; ++e) cap = std::max(cap, off[static_cast<size_t>(e) + 1] - off[static_cast<size_t>(e)]);
  // Stacked experts and padding that at most doubles the rows: each projection of all experts is
  // one batched GEMM over rows padded to `cap` (one launch that fills the GPU, where an
  // expert's few hundred rows alone leave most of it idle).
  const bool batched = g.eg_all.get() && g.eu_all.get() && g.ed_all.get() && rt.doff.get() && E * cap <= 2 * R;
  const int64_t P = batched ? E * cap : R;  // rows of the grouped layout
  s.xn.resize(static_cast<size_t>(P * std::max(H, I)));
  G.resize(static_cast<size_t>(P * I));
  U.resize(static_cast<size_t>(P * I));
  Ye.resize(static_cast<size_t>(P * H));
  if (batched) {
    Buffer<int32_t> padded(static_cast<size_t>(R)), tokp(static_cast<size_t>(P));
    cuda::pad_groups(rt.sel.get(), rt.doff.get(), rt.dpos.get(), n, k, E, cap, padded.get(), tokp.get());
    cuda::gather_rows_bf16(x, tokp.get(), P, H, s.xn.get());  // padding rows are zero
    cuda::gemm_nt_bf16_batched(E, cap, I, H, s.xn.get(), H, cap * H, g.eg_all.get(), I * H, G.get(), I, cap * I);
    cuda::gemm_nt_bf16_batched(E, cap, I, H, s.xn.get(), H, cap * H, g.eu_all.get(), I * H, U.get(), I, cap * I);
    cuda::silu_mul_bf16(G.get(), U.get(), s.xn.get(), P * I);
    cuda::gemm_nt_bf16_batched(E, cap, H, I, s.xn.get(), I, cap * I, g.ed_all.get(), H * I, Ye.get(), H, cap * H);
    cuda::combine_rows(Ye.get(), padded.get(), rt.wts.get(), n, k, H, out);
    return;
  }
  cuda::gather_rows_bf16(x, rt.dtok.get(), R, H, s.xn.get());
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
  cuda::combine_rows(Ye.get(), rt.dpos.get(), rt.wts.get(), n, k, H, out);
}

// Expert by expert (float32, or observers of intermediates), each scattered into out[n, H] with
// its routing weights.
void experts_each(const LayerStep& st, const float* x, const Routing& rt, float* out) {
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t l = st.l, H = st.c.hidden_size, E = st.c.moe->num_experts;
  const unsigned need = st.need;
  const std::vector<int64_t>& off = rt.off;
  Buffer<float> G, U, Xe, Ye;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t m = off[static_cast<size_t>(e) + 1] - off[static_cast<size_t>(e)];
    if (m == 0) continue;
    const int32_t* idx = rt.dtok.get() + off[static_cast<size_t>(e)];
    const GpuMatrix& eg = *g.eg[static_cast<size_t>(e)];
    Ye.resize(static_cast<size_t>(m * H));
    Xe.resize(static_cast<size_t>(m * H));
    cuda::gather_rows(x, idx, m, H, Xe.get());
    if (need & kObserveLinearInputs) {
      const std::vector<float> xe = host(Xe.get(), m * H);
      st.obs->on_linear_input(l, Role::ExpertGate, e, xe.data(), m, H);
      st.obs->on_linear_input(l, Role::ExpertUp, e, xe.data(), m, H);
    }
    const int64_t I = eg.rows;
    G.resize(static_cast<size_t>(m * I));
    U.resize(static_cast<size_t>(m * I));
    const uint16_t* xb = bf16_input(st.precision, Xe.get(), m * H, s.xn);
    matmul(eg, Xe.get(), m, G.get(), s, 0.0f, xb);
    matmul(*g.eu[static_cast<size_t>(e)], Xe.get(), m, U.get(), s, 0.0f, xb);
    cuda::silu_mul(G.get(), U.get(), G.get(), m * I);
    std::vector<float> act;  // host copy of the activation, once for both callbacks
    if (need & (kObserveLinearInputs | kObserveExperts)) act = host(G.get(), m * I);
    if (need & kObserveLinearInputs) st.obs->on_linear_input(l, Role::ExpertDown, e, act.data(), m, I);
    matmul(*g.ed[static_cast<size_t>(e)], G.get(), m, Ye.get(), s);
    if (need & kObserveExperts)
      st.obs->on_expert(l, e, rt.tok.data() + off[static_cast<size_t>(e)], act.data(), I, host(Ye.get(), m * H).data(),
                        m, H);
    cuda::scatter_add_rows(Ye.get(), idx, rt.dtw.get() + off[static_cast<size_t>(e)], m, H, out);
  }
}

// The shared expert on the normed x[n, H], added into out[n, H] (times its sigmoid gate if any).
void shared_expert(const LayerStep& st, const float* x, float* out) {
  const GpuLayer& g = st.g;
  GpuScratch& s = st.s;
  const int64_t n = st.n, H = st.c.hidden_size;
  Buffer<float> G, U;
  st.see_inputs({Role::SharedGate, Role::SharedUp}, x, n, H);
  const int64_t I = g.sg->rows;
  Buffer<float> S(static_cast<size_t>(n * H));
  G.resize(static_cast<size_t>(n * I));
  U.resize(static_cast<size_t>(n * I));
  const uint16_t* xb = bf16_input(st.precision, x, n * H, s.xn);
  matmul(*g.sg, x, n, G.get(), s, 0.0f, xb);
  matmul(*g.su, x, n, U.get(), s, 0.0f, xb);
  cuda::silu_mul(G.get(), U.get(), G.get(), n * I);
  matmul(*g.sd, G.get(), n, S.get(), s);
  Buffer<float> gatev;
  if (g.shared_gate) {
    st.see_input(Role::SharedExpertGate, x, n, H);
    gatev.resize(static_cast<size_t>(n));
    matmul(*g.shared_gate, x, n, gatev.get(), s);
  }
  cuda::gated_add(out, S.get(), gatev.get(), n, H);
}

}  // namespace

void CudaForward::run_layer(int64_t l, const GpuLayer& g, float* h, int64_t n, int64_t pos0, KVCache& cache,
                            LayerObserver* obs) {
  const ModelConfig& c = eng_.config();
  const int64_t H = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  GpuScratch& s = *s_;
  const auto [Kc, Vc] = device_kv(c, cache, l);
  const unsigned need = obs ? obs->needs() : 0u;  // what the observer uses: only that is copied to the host
  const LayerStep st{c, g, s, precision_, l, n, pos0, obs, need};

  Buffer<float> x(static_cast<size_t>(n * H));
  cuda::rmsnorm(h, g.attn_norm.get(), x.get(), n, H, eps);

  // ---- attention ----
  Buffer<float> attn;
  if (c.mla)
    attention_mla(st, x.get(), Kc, Vc, attn);
  else
    attention_gqa(st, x.get(), Kc, Vc, attn);
  const int64_t attn_w = g.o->cols;
  st.see_input(Role::O, attn.get(), n, attn_w);
  matmul(*g.o, attn.get(), n, x.get(), s);
  cuda::add_bias(x.get(), g.o_bias.get(), n, H);
  cuda::add(h, x.get(), n * H);
  s.prof.mark("o_proj");

  // ---- FFN / MoE ----
  cuda::rmsnorm(h, g.ffn_norm.get(), x.get(), n, H, eps);
  Buffer<float> out(static_cast<size_t>(n * H));
  cuda::zero(out.get(), static_cast<size_t>(n * H) * sizeof(float));
  if (!g.moe) {
    dense_ffn(st, x.get(), out.get());
  } else {
    Routing rt;
    route_tokens(st, x.get(), rt);
    s.prof.mark("routing");
    if (rt.fused)
      experts_fused(st, x.get(), rt, out.get());
    else
      experts_each(st, x.get(), rt, out.get());
    s.prof.mark("experts");
    if (g.sg) shared_expert(st, x.get(), out.get());
  }
  s.prof.mark(g.moe ? "shared_expert" : "ffn");
  if (need & kObserveFfnBlock) obs->on_ffn_block(l, host(h, n * H).data(), host(out.get(), n * H).data(), n, H);
  cuda::add(h, out.get(), n * H);
  if ((need & kObserveHidden) && !obs->on_hidden_device(l, h, n, H)) obs->on_hidden(l, host(h, n * H).data(), n, H);
}

}  // namespace moetool
