// engine/engine.cc — the CPU forward pass (see engine.h). Family differences are expressed as
// config features (biases, q/k norms, MLA, routing kind, shared experts), never family names.
#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <utility>

#include "core/error.h"
#include "kernels/backend_shared.h"
#include "kernels/linear_bf16.h"
#include "kernels/ops.h"
#include "engine/engine_cuda.h"
#include "engine/rope.h"

namespace moetool {

namespace {

std::vector<float> opt_vec(const WeightSource& w, Role r, int64_t l) {
  return w.has(r, l) ? w.vector(r, l) : std::vector<float>{};
}

// v += more (load_layer's lists of slots).
template <class T>
void append(std::vector<T>& v, std::initializer_list<T> more) {
  for (const T& x : more) v.push_back(x);
}

void add_bias(float* y, const std::vector<float>& b, int64_t n, int64_t d) {
  if (b.empty()) return;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) y[i * d + j] += b[static_cast<size_t>(j)];
}

// Permutes each head's rope part from interleaved (x0, x1, x2, ...) pairs to rotate-half order
// (x0, x2, ..., x1, x3, ...), as transformers' apply_rotary_pos_emb_interleave does.
void deinterleave(float* x, int64_t n, int64_t H, int64_t d, int64_t stride, int64_t offset, int64_t head_stride) {
  std::vector<float> tmp(static_cast<size_t>(d));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* p = x + t * stride + h * head_stride + offset;
      for (int64_t i = 0; i < d / 2; ++i) {
        tmp[static_cast<size_t>(i)] = p[2 * i];
        tmp[static_cast<size_t>(i + d / 2)] = p[2 * i + 1];
      }
      std::copy(tmp.begin(), tmp.end(), p);
    }
}

// Rope on a sub-range [offset, offset + rot) of each head (head_stride apart) of x rows.
void rope_part(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride,
               const int64_t* pos, const RopeTable& rt) {
  if (offset == 0 && head_stride == static_cast<int64_t>(rt.inv_freq.size()) * 2) {
    ops::rope(x, n, H, head_stride, stride, pos, rt.inv_freq, rt.attention_factor);
    return;
  }
  // General case: apply per head via a shifted base pointer with head stride.
  for (int64_t h = 0; h < H; ++h)
    ops::rope(x + h * head_stride + offset, n, 1, 0, stride, pos, rt.inv_freq, rt.attention_factor);
}

}  // namespace

Engine::Engine(std::shared_ptr<const WeightSource> w, bool keep_layers) : w_(std::move(w)), keep_layers_(keep_layers) {
  layers_.resize(static_cast<size_t>(config().num_layers));
  final_norm_ = w_->vector(Role::FinalNorm);
}

Engine::Engine(std::shared_ptr<const WeightSource> w, bool keep_layers, DeviceOptions device)
    : Engine(std::move(w), keep_layers) {
  dev_ = device;
  if (dev_.device == Device::Cuda) gpu_ = std::make_unique<CudaForward>(*this, dev_);
  bf16_ = dev_.device == Device::Cpu && dev_.precision == Precision::BF16;
}

Engine::~Engine() = default;

KVCache Engine::new_cache(int64_t capacity, int64_t only_layer) const {
  const ModelConfig& c = config();
  KVCache kc;
  kc.capacity = capacity;
  int64_t kw, vw;
  if (c.mla) {
    kw = c.num_heads * (c.mla->qk_nope_head_dim + c.mla->qk_rope_head_dim);
    vw = c.num_heads * c.mla->v_head_dim;
  } else {
    kw = vw = c.num_kv_heads * c.head_dim;
  }
  kc.k.resize(static_cast<size_t>(c.num_layers));
  kc.v.resize(static_cast<size_t>(c.num_layers));
  if (gpu_) return kc;  // rows live on the GPU, allocated there on first use
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (only_layer >= 0 && l != only_layer) continue;
    kc.k[static_cast<size_t>(l)].resize(static_cast<size_t>(capacity * kw));
    kc.v[static_cast<size_t>(l)].resize(static_cast<size_t>(capacity * vw));
  }
  return kc;
}

std::shared_ptr<const LayerWeights> Engine::load_layer(int64_t l) const {
  if (keep_layers_ && layers_[static_cast<size_t>(l)]) return layers_[static_cast<size_t>(l)];
  const ModelConfig& c = config();
  const WeightSource& w = *w_;
  auto lw = std::make_shared<LayerWeights>();
  // The layer's matrices and vectors by role; optional vectors (biases) stay empty when absent.
  std::vector<std::pair<Mat*, Role>> mats;
  std::vector<std::pair<std::vector<float>*, Role>> vecs, opt;
  append(vecs, {{&lw->attn_norm, Role::AttnNorm}, {&lw->ffn_norm, Role::FfnNorm}});
  if (c.mla) {
    if (c.mla->q_lora_rank > 0) {
      append(mats, {{&lw->qa, Role::QA}, {&lw->qb, Role::QB}});
      vecs.push_back({&lw->qa_norm, Role::QANorm});
    } else {
      append(mats, {{&lw->q, Role::Q}});
    }
    append(mats, {{&lw->kva, Role::KVA}, {&lw->kvb, Role::KVB}, {&lw->o, Role::O}});
    vecs.push_back({&lw->kva_norm, Role::KVANorm});
  } else {
    append(mats, {{&lw->q, Role::Q}, {&lw->k, Role::K}, {&lw->v, Role::V}, {&lw->o, Role::O}});
    append(opt, {{&lw->q_bias, Role::QBias}, {&lw->k_bias, Role::KBias}, {&lw->v_bias, Role::VBias}, {&lw->o_bias, Role::OBias}});
    if (c.qk_norm != QkNorm::None) append(vecs, {{&lw->q_norm, Role::QNorm}, {&lw->k_norm, Role::KNorm}});
  }
  lw->moe = c.moe && c.is_moe_layer(l);
  if (lw->moe) {
    mats.push_back({&lw->router, Role::Router});
    if (c.moe->router_bias) vecs.push_back({&lw->router_bias, Role::RouterBias});
    if (c.moe->shared_intermediate > 0) {
      append(mats, {{&lw->sg, Role::SharedGate}, {&lw->su, Role::SharedUp}, {&lw->sd, Role::SharedDown}});
      if (c.moe->shared_gated) mats.push_back({&lw->shared_gate, Role::SharedExpertGate});
    }
    const int64_t E = c.moe->num_experts;
    lw->eg.resize(static_cast<size_t>(E));
    lw->eu.resize(static_cast<size_t>(E));
    lw->ed.resize(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      lw->eg[static_cast<size_t>(e)] = w.matrix(Role::ExpertGate, l, e);
      lw->eu[static_cast<size_t>(e)] = w.matrix(Role::ExpertUp, l, e);
      lw->ed[static_cast<size_t>(e)] = w.matrix(Role::ExpertDown, l, e);
    }
  } else {
    append(mats, {{&lw->gate, Role::Gate}, {&lw->up, Role::Up}, {&lw->down, Role::Down}});
    append(opt, {{&lw->gate_bias, Role::GateBias}, {&lw->up_bias, Role::UpBias}, {&lw->down_bias, Role::DownBias}});
  }
  for (const auto& [m, r] : mats) *m = w.matrix(r, l);
  // On the CPU every matrix is decoded at load (DF11); a CUDA engine decodes on the GPU at upload.
  if (dev_.device == Device::Cpu)
    for (Mat* m : lw->matrices())
      if (*m) (*m)->prepare();
  for (const auto& [v, r] : vecs) *v = w.vector(r, l);
  for (const auto& [v, r] : opt) *v = opt_vec(w, r, l);
  // Keep a layer only while it costs no memory beyond the mapping: f32 weights are used in place,
  // other dtypes are converted copies, which are rebuilt per use so peak memory stays one layer.
  bool in_place = !bf16_;
  for (Mat* m : lw->matrices()) {
    if (*m && (*m)->storage() != "F32") in_place = false;
    // bf16: the CUDA engine's bf16 arithmetic (kernels/linear_bf16.h), float32 where it keeps that.
    if (bf16_ && *m && !lw->float32_always(m)) *m = make_bf16_matrix(**m);
  }
  if (keep_layers_ && in_place) layers_[static_cast<size_t>(l)] = lw;
  return lw;
}

void Engine::check_tokens(const int32_t* tokens, int64_t n) const {
  const int64_t V = config().vocab_size;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      fail(w_->path(), ": token id ", tokens[i], " at position ", i, " is out of range [0, ", V, ")");
}

void Engine::embed(const int32_t* tokens, int64_t n, float* h) const {
  check_tokens(tokens, n);
  w_->embed_rows(tokens, n, h);
}

namespace {

// A SwiGLU FFN on X[m, H] → Y[m, H]; A receives silu(gate)·up [m, I].
void swiglu(const WeightMatrix& g, const WeightMatrix& u, const WeightMatrix& d, const float* X, int64_t m,
            std::vector<float>& G, std::vector<float>& U, float* Y, const std::vector<float>* gb = nullptr,
            const std::vector<float>* ub = nullptr, const std::vector<float>* db = nullptr) {
  const int64_t I = g.rows();
  G.resize(static_cast<size_t>(m * I));
  U.resize(static_cast<size_t>(m * I));
  g.matmul(X, m, G.data());
  u.matmul(X, m, U.data());
  if (gb) add_bias(G.data(), *gb, m, I);
  if (ub) add_bias(U.data(), *ub, m, I);
  ops::silu_mul(G.data(), U.data(), G.data(), m * I);
  d.matmul(G.data(), m, Y);
  if (db) add_bias(Y, *db, m, d.rows());
}

// Chooses k experts per token from router logits[n, E] per the config's routing rule (the
// per-token selection is kernels/backend_shared.h's route_token, which the CUDA engine runs too).
void route(const MoeConfig& mc, const float* logits, const std::vector<float>& bias, int64_t n, int64_t E,
           std::vector<int32_t>& sel, std::vector<float>& wts) {
  const int64_t k = mc.top_k;
  sel.assign(static_cast<size_t>(n * k), 0);
  wts.assign(static_cast<size_t>(n * k), 0.0f);
  const shared::RouteParams rp = route_params(mc);
#pragma omp parallel for schedule(static) if (n > 64)
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
    shared::route_token(rp, logits + t * E, bias.empty() ? nullptr : bias.data(), score.data(), choice.data(),
                        sel.data() + t * k, wts.data() + t * k);
  }
}

}  // namespace

void Engine::set_dynamic_topk(double threshold) {
  if (!(threshold >= 0 && threshold < 1)) fail("--dynamic-topk ", threshold, " must be in [0, 1)");
  if (threshold > 0 && gpu_) fail("--dynamic-topk runs on the CPU engine only (use --device cpu)");
  if (threshold > 0 && !config().moe) fail("--dynamic-topk: ", w_->path(), " has no routed experts");
  dynamic_topk_ = static_cast<float>(threshold);
}

void Engine::attend(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v,
                    int64_t v_stride, float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk,
                    int64_t dv, float scale, int64_t window) const {
  // bf16: the CUDA engine's tensor-core attention where it would take it, else its float32 kernel.
  if (bf16_ && shared::attention_bf16_tiles(n, dk, dv, q_stride, k_stride, v_stride))
    ops::attention_bf16(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq, Hkv, dk, dv, scale, window);
  else
    ops::attention(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq, Hkv, dk, dv, scale, window);
}

std::vector<float> Engine::attention_mla(int64_t l, const LayerWeights& lw, const float* x, int64_t n, int64_t pos0,
                                         KVCache& cache, LayerObserver* obs) const {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size, Hq = c.num_heads;
  std::vector<int64_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), pos0);
  float* Kc = cache.k[static_cast<size_t>(l)].data();
  float* Vc = cache.v[static_cast<size_t>(l)].data();
  const MlaConfig& m = *c.mla;
  const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dvh = m.v_head_dim, dq = dn + dr;
  std::vector<float> q(static_cast<size_t>(n * Hq * dq));
  if (lw.qa) {
    if (obs) obs->on_linear_input(l, Role::QA, -1, x, n, H);
    std::vector<float> qa(static_cast<size_t>(n * lw.qa->rows()));
    lw.qa->matmul(x, n, qa.data());
    ops::rmsnorm(qa.data(), lw.qa_norm.data(), qa.data(), n, lw.qa->rows(), kMlaNormEps);
    if (obs) obs->on_linear_input(l, Role::QB, -1, qa.data(), n, lw.qa->rows());
    lw.qb->matmul(qa.data(), n, q.data());
  } else {
    if (obs) obs->on_linear_input(l, Role::Q, -1, x, n, H);
    lw.q->matmul(x, n, q.data());
  }
  if (obs) obs->on_linear_input(l, Role::KVA, -1, x, n, H);
  const int64_t kvaw = m.kv_lora_rank + dr;
  std::vector<float> kva(static_cast<size_t>(n * kvaw));
  lw.kva->matmul(x, n, kva.data());
  std::vector<float> ckv(static_cast<size_t>(n * m.kv_lora_rank)), kpe(static_cast<size_t>(n * dr));
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(kva.data() + t * kvaw, m.kv_lora_rank, ckv.data() + t * m.kv_lora_rank);
    std::copy_n(kva.data() + t * kvaw + m.kv_lora_rank, dr, kpe.data() + t * dr);
  }
  ops::rmsnorm(ckv.data(), lw.kva_norm.data(), ckv.data(), n, m.kv_lora_rank, kMlaNormEps);
  if (obs) obs->on_linear_input(l, Role::KVB, -1, ckv.data(), n, m.kv_lora_rank);
  std::vector<float> kv(static_cast<size_t>(n * Hq * (dn + dvh)));
  lw.kvb->matmul(ckv.data(), n, kv.data());
  const RopeTable rt = rope_table(c, dr, pos0 + n);
  if (m.rope_interleave) {
    deinterleave(q.data(), n, Hq, dr, Hq * dq, dn, dq);
    deinterleave(kpe.data(), n, 1, dr, dr, 0, dr);
  }
  rope_part(q.data(), n, Hq, dq, dn, Hq * dq, pos.data(), rt);
  rope_part(kpe.data(), n, 1, dr, 0, dr, pos.data(), rt);
  // Cache rows: K = [k_nope_h, k_pe] per head, V = v_h per head.
  for (int64_t t = 0; t < n; ++t) {
    float* kr = Kc + (pos0 + t) * Hq * dq;
    float* vr = Vc + (pos0 + t) * Hq * dvh;
    for (int64_t hh = 0; hh < Hq; ++hh) {
      const float* src = kv.data() + t * Hq * (dn + dvh) + hh * (dn + dvh);
      std::copy_n(src, dn, kr + hh * dq);
      std::copy_n(kpe.data() + t * dr, dr, kr + hh * dq + dn);
      std::copy_n(src + dn, dvh, vr + hh * dvh);
    }
  }
  const float scale = mla_attention_scale(c, dq);
  std::vector<float> attn(static_cast<size_t>(n * Hq * dvh));
  const auto win = c.window_for_layer(l);
  attend(q.data(), Hq * dq, Kc, Hq * dq, Vc, Hq * dvh, attn.data(), n, pos0, Hq, Hq, dq, dvh, scale, win ? *win : 0);
  return attn;
}

std::vector<float> Engine::attention_gqa(int64_t l, const LayerWeights& lw, const float* x, int64_t n, int64_t pos0,
                                         KVCache& cache, LayerObserver* obs) const {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size, Hq = c.num_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<int64_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), pos0);
  float* Kc = cache.k[static_cast<size_t>(l)].data();
  float* Vc = cache.v[static_cast<size_t>(l)].data();
  const int64_t Hk = c.num_kv_heads, d = c.head_dim;
  std::vector<float> q(static_cast<size_t>(n * Hq * d)), k(static_cast<size_t>(n * Hk * d)),
      v(static_cast<size_t>(n * Hk * d));
  if (obs) {
    obs->on_linear_input(l, Role::Q, -1, x, n, H);
    obs->on_linear_input(l, Role::K, -1, x, n, H);
    obs->on_linear_input(l, Role::V, -1, x, n, H);
  }
  lw.q->matmul(x, n, q.data());
  lw.k->matmul(x, n, k.data());
  lw.v->matmul(x, n, v.data());
  add_bias(q.data(), lw.q_bias, n, Hq * d);
  add_bias(k.data(), lw.k_bias, n, Hk * d);
  add_bias(v.data(), lw.v_bias, n, Hk * d);
  if (c.qk_norm == QkNorm::Full) {
    ops::rmsnorm(q.data(), lw.q_norm.data(), q.data(), n, Hq * d, eps);
    ops::rmsnorm(k.data(), lw.k_norm.data(), k.data(), n, Hk * d, eps);
  }
  if (c.clip_qkv) {
    const float cl = static_cast<float>(*c.clip_qkv);
    for (auto* vec : {&q, &k, &v})
      for (auto& e : *vec) e = std::clamp(e, -cl, cl);
  }
  if (c.qk_norm == QkNorm::PerHead) {
    ops::rmsnorm(q.data(), lw.q_norm.data(), q.data(), n * Hq, d, eps);
    ops::rmsnorm(k.data(), lw.k_norm.data(), k.data(), n * Hk, d, eps);
  }
  const RopeTable rt = rope_table(c, d, pos0 + n);
  ops::rope(q.data(), n, Hq, d, Hq * d, pos.data(), rt.inv_freq, rt.attention_factor);
  ops::rope(k.data(), n, Hk, d, Hk * d, pos.data(), rt.inv_freq, rt.attention_factor);
  std::copy(k.begin(), k.end(), Kc + pos0 * Hk * d);
  std::copy(v.begin(), v.end(), Vc + pos0 * Hk * d);
  std::vector<float> attn(static_cast<size_t>(n * Hq * d));
  const auto win = c.window_for_layer(l);
  attend(q.data(), Hq * d, Kc, Hk * d, Vc, Hk * d, attn.data(), n, pos0, Hq, Hk, d, d,
         1.0f / std::sqrt(static_cast<float>(d)), win ? *win : 0);
  return attn;
}

namespace {

// The dense FFN of layer l on the normed x[n, H], added into out[n, H].
void dense_ffn(int64_t l, const LayerWeights& lw, const float* x, int64_t n, int64_t H, float* out,
               LayerObserver* obs) {
  if (obs) {
    obs->on_linear_input(l, Role::Gate, -1, x, n, H);
    obs->on_linear_input(l, Role::Up, -1, x, n, H);
  }
  const int64_t I = lw.gate->rows();
  std::vector<float> G(static_cast<size_t>(n * I)), U(static_cast<size_t>(n * I));
  lw.gate->matmul(x, n, G.data());
  lw.up->matmul(x, n, U.data());
  add_bias(G.data(), lw.gate_bias, n, I);
  add_bias(U.data(), lw.up_bias, n, I);
  ops::silu_mul(G.data(), U.data(), G.data(), n * I);
  if (obs) {
    obs->on_ffn_activation(l, G.data(), n, I);
    obs->on_linear_input(l, Role::Down, -1, G.data(), n, I);
  }
  lw.down->matmul(G.data(), n, out);
  add_bias(out, lw.down_bias, n, H);
}

// Dynamic top-k (Engine::set_dynamic_topk): whether choice i (> 0) of a token with weights w[k] is
// skipped.
bool skip_choice(const float* w, int64_t k, int64_t i, float threshold) {
  if (threshold <= 0 || i == 0) return false;
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) sum += w[j];
  return sum > 0 && w[i] / sum < threshold;
}

// The MoE block of layer l on the normed x[n, H] (routed experts, then the shared expert), summed
// into out[n, H] (zeros on entry). counts[0] += routed (token, expert) pairs, counts[1] += those
// skipped by dynamic top-k (threshold 0: none).
void moe_block(int64_t l, const LayerWeights& lw, const MoeConfig& mc, const float* x, int64_t n, int64_t H,
               float* out, LayerObserver* obs, float dyn_threshold, std::atomic<int64_t>* const* counts) {
  const int64_t E = mc.num_experts, k = mc.top_k;
  std::vector<float> logits(static_cast<size_t>(n * E)), G, U;
  if (obs) obs->on_linear_input(l, Role::Router, -1, x, n, H);
  lw.router->matmul(x, n, logits.data());
  std::vector<int32_t> sel;
  std::vector<float> wts;
  route(mc, logits.data(), lw.router_bias, n, E, sel, wts);
  if (obs) obs->on_router(l, logits.data(), sel.data(), wts.data(), n, E, k);
  // Group tokens by expert, then one GEMM chain per expert.
  std::vector<std::vector<int32_t>> tok(static_cast<size_t>(E));
  std::vector<std::vector<float>> tw(static_cast<size_t>(E));
  int64_t skipped = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < k; ++i) {
      if (skip_choice(wts.data() + t * k, k, i, dyn_threshold)) {
        ++skipped;
        continue;
      }
      const int32_t e = sel[static_cast<size_t>(t * k + i)];
      tok[static_cast<size_t>(e)].push_back(static_cast<int32_t>(t));
      tw[static_cast<size_t>(e)].push_back(wts[static_cast<size_t>(t * k + i)]);
    }
  *counts[0] += n * k;
  *counts[1] += skipped;
  std::vector<float> Xe, Ye;
  for (int64_t e = 0; e < E; ++e) {
    const auto& idx = tok[static_cast<size_t>(e)];
    const int64_t m = static_cast<int64_t>(idx.size());
    if (m == 0) continue;
    Xe.resize(static_cast<size_t>(m * H));
    Ye.resize(static_cast<size_t>(m * H));
    for (int64_t r = 0; r < m; ++r) std::copy_n(x + idx[static_cast<size_t>(r)] * H, H, Xe.data() + r * H);
    const auto& g = *lw.eg[static_cast<size_t>(e)];
    if (obs) {
      obs->on_linear_input(l, Role::ExpertGate, e, Xe.data(), m, H);
      obs->on_linear_input(l, Role::ExpertUp, e, Xe.data(), m, H);
    }
    const int64_t I = g.rows();
    G.resize(static_cast<size_t>(m * I));
    U.resize(static_cast<size_t>(m * I));
    g.matmul(Xe.data(), m, G.data());
    lw.eu[static_cast<size_t>(e)]->matmul(Xe.data(), m, U.data());
    ops::silu_mul(G.data(), U.data(), G.data(), m * I);
    if (obs) obs->on_linear_input(l, Role::ExpertDown, e, G.data(), m, I);
    lw.ed[static_cast<size_t>(e)]->matmul(G.data(), m, Ye.data());
    if (obs) obs->on_expert(l, e, idx.data(), G.data(), I, Ye.data(), m, H);
    for (int64_t r = 0; r < m; ++r)
      ops::axpy(H, tw[static_cast<size_t>(e)][static_cast<size_t>(r)], Ye.data() + r * H, out + idx[static_cast<size_t>(r)] * H);
  }
  if (!lw.sg) return;
  if (obs) {
    obs->on_linear_input(l, Role::SharedGate, -1, x, n, H);
    obs->on_linear_input(l, Role::SharedUp, -1, x, n, H);
  }
  std::vector<float> S(static_cast<size_t>(n * H));
  swiglu(*lw.sg, *lw.su, *lw.sd, x, n, G, U, S.data());
  std::vector<float> gatev(static_cast<size_t>(n), 1.0f);
  if (lw.shared_gate) {
    if (obs) obs->on_linear_input(l, Role::SharedExpertGate, -1, x, n, H);
    lw.shared_gate->matmul(x, n, gatev.data());
    for (auto& gv : gatev) gv = 1.0f / (1.0f + std::exp(-gv));
  }
  for (int64_t t = 0; t < n; ++t) ops::axpy(H, gatev[static_cast<size_t>(t)], S.data() + t * H, out + t * H);
}

}  // namespace

void Engine::run_layer(int64_t l, const LayerWeights& lw, float* h, int64_t n, int64_t pos0, KVCache& cache,
                       LayerObserver* obs) const {
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (pos0 + n > cache.capacity)
    fail(w_->path(), ": context of ", pos0 + n, " tokens exceeds the KV cache capacity ", cache.capacity);
  if (gpu_) return gpu_->run_layer_host(l, lw, h, n, pos0, cache, obs);
  std::vector<float> x(static_cast<size_t>(n * H));
  ops::rmsnorm(h, lw.attn_norm.data(), x.data(), n, H, eps);

  // ---- attention ----
  const std::vector<float> attn = c.mla ? attention_mla(l, lw, x.data(), n, pos0, cache, obs)
                                        : attention_gqa(l, lw, x.data(), n, pos0, cache, obs);
  const int64_t attn_w = lw.o->cols();
  if (obs) obs->on_linear_input(l, Role::O, -1, attn.data(), n, attn_w);
  lw.o->matmul(attn.data(), n, x.data());  // x reused as the attention output [n, H]
  add_bias(x.data(), lw.o_bias, n, H);
  for (int64_t i = 0; i < n * H; ++i) h[i] += x[static_cast<size_t>(i)];

  // ---- FFN / MoE ----
  ops::rmsnorm(h, lw.ffn_norm.data(), x.data(), n, H, eps);
  std::vector<float> out(static_cast<size_t>(n * H), 0.0f);
  if (!lw.moe)
    dense_ffn(l, lw, x.data(), n, H, out.data(), obs);
  else {
    std::atomic<int64_t>* counts[] = {&routed_pairs_, &skipped_pairs_};
    moe_block(l, lw, *c.moe, x.data(), n, H, out.data(), obs, dynamic_topk_, counts);
  }
  if (obs) obs->on_ffn_block(l, h, out.data(), n, H);
  for (int64_t i = 0; i < n * H; ++i) h[i] += out[static_cast<size_t>(i)];
  if (obs) obs->on_hidden(l, h, n, H);
}

void Engine::head(const float* h, int64_t n, float* logits) const {
  if (gpu_) return gpu_->head_host(h, n, logits);
  const ModelConfig& c = config();
  if (!lm_head_) lm_head_ = bf16_ ? make_bf16_matrix(*w_->matrix(Role::LmHead)) : w_->matrix(Role::LmHead);
  std::vector<float> x(static_cast<size_t>(n * c.hidden_size));
  ops::rmsnorm(h, final_norm_.data(), x.data(), n, c.hidden_size, static_cast<float>(c.rms_norm_eps));
  lm_head_->matmul(x.data(), n, logits);
}

std::vector<float> Engine::forward(const int32_t* tokens, int64_t n, KVCache& cache, LayerObserver* obs,
                                   bool last_only) const {
  if (gpu_) {
    if (cache.length + n > cache.capacity)
      fail(w_->path(), ": context of ", cache.length + n, " tokens exceeds the KV cache capacity ", cache.capacity);
    return gpu_->forward(tokens, n, cache, obs, last_only);
  }
  const ModelConfig& c = config();
  const int64_t H = c.hidden_size, V = c.vocab_size;
  std::vector<float> h(static_cast<size_t>(n * H));
  embed(tokens, n, h.data());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto lw = load_layer(l);
    run_layer(l, *lw, h.data(), n, cache.length, cache, obs);
  }
  cache.length += n;
  if (last_only) {
    std::vector<float> out(static_cast<size_t>(V));
    head(h.data() + (n - 1) * H, 1, out.data());
    return out;
  }
  std::vector<float> out(static_cast<size_t>(n * V));
  head(h.data(), n, out.data());
  return out;
}

std::vector<float> Engine::logits(const std::vector<int32_t>& tokens, LayerObserver* obs) const {
  KVCache cache = new_cache(static_cast<int64_t>(tokens.size()));
  return forward(tokens.data(), static_cast<int64_t>(tokens.size()), cache, obs);
}

int64_t Engine::gpu_resident_layers() const { return gpu_ ? gpu_->resident_layers() : 0; }
int64_t Engine::gpu_decoded_matrices() const { return gpu_ ? gpu_->decoded_matrices() : 0; }
int64_t Engine::gpu_packed_matrices() const { return gpu_ ? gpu_->packed_matrices() : 0; }

void Engine::logits_in_place(const std::vector<int32_t>& tokens) const {
  if (!gpu_) {
    (void)logits(tokens);
    return;
  }
  (void)logits_on_device(tokens);
}

const float* Engine::logits_on_device(const std::vector<int32_t>& tokens, LayerObserver* obs) const {
  if (!gpu_) fail(w_->path(), ": logits on the GPU asked of an engine running on the CPU");
  KVCache cache = new_cache(static_cast<int64_t>(tokens.size()));
  gpu_->forward(tokens.data(), static_cast<int64_t>(tokens.size()), cache, obs, false, /*to_host=*/false);
  return gpu_->device_logits();
}

}  // namespace moetool
