// tests/reference_forward.cc — the float64 reference forward pass (see reference_forward.h). Each step
// names the transformers code it follows (modeling_<family>.py, modeling_rope_utils.py); everything is
// plain loops over doubles, weights read through Model::weight and converted with Tensor::to_f32.
#include "tests/reference_forward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "core/error.h"

namespace moetool::testing {

namespace {

constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------------------------------
// Weights as doubles.

struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> w;  // row-major [rows, cols] (PyTorch Linear weight: [out, in])
};

std::vector<double> to_double(const Tensor& t) {
  const std::vector<float> f = t.to_f32();
  return std::vector<double>(f.begin(), f.end());
}

Mat load_mat(const Model& m, Role r, int64_t layer = -1, int64_t expert = -1) {
  const Tensor t = m.weight(r, layer, expert);
  check(t.shape.size() == 2, "reference: ", role_name(r), " is not 2-D: ", shape_str(t.shape));
  Mat out;
  out.rows = t.shape[0];
  out.cols = t.shape[1];
  out.w = to_double(t);
  return out;
}

std::vector<double> load_vec(const Model& m, Role r, int64_t layer = -1, int64_t expert = -1) {
  return to_double(m.weight(r, layer, expert));
}

// nn.Linear: y = W x (+ b).
std::vector<double> linear(const Mat& W, const std::vector<double>& x, const std::vector<double>* bias = nullptr) {
  check(static_cast<int64_t>(x.size()) == W.cols, "reference: linear input ", x.size(), " vs weight cols ", W.cols);
  std::vector<double> y(static_cast<size_t>(W.rows), 0.0);
  for (int64_t r = 0; r < W.rows; ++r) {
    double s = 0.0;
    for (int64_t c = 0; c < W.cols; ++c) s += W.w[static_cast<size_t>(r * W.cols + c)] * x[static_cast<size_t>(c)];
    y[static_cast<size_t>(r)] = s + (bias ? (*bias)[static_cast<size_t>(r)] : 0.0);
  }
  return y;
}

// <Family>RMSNorm: weight * (x * rsqrt(mean(x^2) + eps)), over x[off, off + n).
void rms_norm_inplace(double* x, int64_t n, const double* w, double eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) x[i] = w[i] * (x[i] * inv);
}

std::vector<double> rms_norm(const std::vector<double>& x, const std::vector<double>& w, double eps) {
  check(x.size() == w.size(), "reference: norm width ", x.size(), " vs weight ", w.size());
  std::vector<double> y = x;
  rms_norm_inplace(y.data(), static_cast<int64_t>(y.size()), w.data(), eps);
  return y;
}

double silu(double v) { return v / (1.0 + std::exp(-v)); }
double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// ---------------------------------------------------------------------------------------------------
// RoPE (modeling_rope_utils.py).

// yarn's get_mscale.
double get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// The rope dict transformers reads: rope_scaling (when not null), else v5's rope_parameters.
const nlohmann::json* rope_dict(const ModelConfig& c) {
  if (!c.raw.is_object()) return nullptr;
  for (const char* k : {"rope_scaling", "rope_parameters"}) {
    auto it = c.raw.find(k);
    if (it != c.raw.end() && it->is_object()) return &*it;
  }
  return nullptr;
}

// `rope_parameters_dict.get("mscale")`: None when the key is absent (ModelConfig stores 1.0 then, but
// transformers' `if mscale and mscale_all_dim` treats an absent mscale as false).
std::optional<double> yarn_mscale_key(const ModelConfig& c) {
  const nlohmann::json* d = rope_dict(c);
  if (!d) return c.rope.mscale;  // config built in memory: take the field as given
  auto it = d->find("mscale");
  if (it == d->end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

// The dims pairs rotated together: rotate_half pairs d with d + dim/2.
void apply_rope(double* x, int64_t dim, int64_t pos, const ReferenceRope& rope) {
  const int64_t half = dim / 2;
  for (int64_t d = 0; d < half; ++d) {
    // freqs = inv_freq ⊗ position; emb = cat(freqs, freqs); cos = emb.cos() * attention_scaling.
    const double ang = static_cast<double>(pos) * rope.inv_freq[static_cast<size_t>(d)];
    const double cs = std::cos(ang) * rope.attention_factor;
    const double sn = std::sin(ang) * rope.attention_factor;
    const double x1 = x[d], x2 = x[d + half];
    // q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-x2, x1).
    x[d] = x1 * cs - x2 * sn;
    x[d + half] = x2 * cs + x1 * sn;
  }
}

// apply_rotary_pos_emb_interleave's de-interleave: view(d/2, 2).transpose -> [x0, x2, x4, ..., x1, x3, ...].
void deinterleave(double* x, int64_t dim) {
  std::vector<double> t(x, x + dim);
  const int64_t half = dim / 2;
  for (int64_t j = 0; j < half; ++j) {
    x[j] = t[static_cast<size_t>(2 * j)];
    x[half + j] = t[static_cast<size_t>(2 * j + 1)];
  }
}

// ---------------------------------------------------------------------------------------------------
// Feed-forward blocks.

struct Ffn {
  Mat gate, up, down;
  std::vector<double> gate_b, up_b, down_b;  // empty: no bias
};

// <Family>MLP: down(act(gate(x)) * up(x)).
std::vector<double> ffn_forward(const Ffn& f, const std::vector<double>& x) {
  std::vector<double> g = linear(f.gate, x, f.gate_b.empty() ? nullptr : &f.gate_b);
  const std::vector<double> u = linear(f.up, x, f.up_b.empty() ? nullptr : &f.up_b);
  for (size_t i = 0; i < g.size(); ++i) g[i] = silu(g[i]) * u[i];
  return linear(f.down, g, f.down_b.empty() ? nullptr : &f.down_b);
}

Ffn load_dense_ffn(const Model& m, int64_t l) {
  const ModelConfig& c = m.config();
  Ffn f{load_mat(m, Role::Gate, l), load_mat(m, Role::Up, l), load_mat(m, Role::Down, l), {}, {}, {}};
  if (c.mlp_bias) {  // LlamaMLP: bias=config.mlp_bias on all three
    f.gate_b = load_vec(m, Role::GateBias, l);
    f.up_b = load_vec(m, Role::UpBias, l);
    f.down_b = load_vec(m, Role::DownBias, l);
  }
  return f;
}

// Indices of the k largest values, largest first (ties: lower index first); records the margin
// between the k-th and the (k+1)-th value.
std::vector<int64_t> top_k(const std::vector<double>& v, int64_t k, ReferenceStats* stats) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return v[static_cast<size_t>(a)] > v[static_cast<size_t>(b)]; });
  if (stats && k < static_cast<int64_t>(v.size()))
    stats->min_routing_margin = std::min(
        stats->min_routing_margin, v[static_cast<size_t>(idx[static_cast<size_t>(k - 1)])] -
                                       v[static_cast<size_t>(idx[static_cast<size_t>(k)])]);
  idx.resize(static_cast<size_t>(k));
  return idx;
}

// The MoE block of one layer, for one token x (already post_attention_layernorm'ed).
std::vector<double> moe_forward(const Model& m, const Mat& router, const std::vector<double>& router_bias,
                                const std::vector<Ffn>& experts, const Ffn* shared, const Mat* shared_gate,
                                const std::vector<double>& x, ReferenceStats* stats) {
  const MoeConfig& mc = *m.config().moe;
  const int64_t E = mc.num_experts, K = mc.top_k;
  const std::vector<double> logits = linear(router, x);  // gate: Linear(hidden, E, bias=False)
  std::vector<int64_t> sel;
  std::vector<double> wts;

  if (mc.routing == RoutingKind::SoftmaxTopK) {
    // routing_weights = softmax(router_logits); topk; (mixtral always, others if norm_topk_prob) /= sum.
    const double mx = *std::max_element(logits.begin(), logits.end());
    std::vector<double> p(logits.size());
    double s = 0.0;
    for (size_t e = 0; e < p.size(); ++e) s += (p[e] = std::exp(logits[e] - mx));
    for (double& v : p) v /= s;
    sel = top_k(p, K, stats);
    for (int64_t e : sel) wts.push_back(p[static_cast<size_t>(e)]);
    if (mc.norm_topk_prob) {
      const double t = std::accumulate(wts.begin(), wts.end(), 0.0);
      for (double& w : wts) w /= t;
    }
  } else {
    // DeepseekV3 route_tokens_to_experts: scores = sigmoid(logits); choice = scores + e_score_correction_bias;
    // group score = sum of the top-2 choice scores in the group; keep topk_group groups; the other experts'
    // choice scores become −inf (masked_fill, transformers ≥ 5); topk over them; weights = unbiased scores of the chosen ones,
    // / (sum + 1e-20) when norm_topk_prob, × routed_scaling_factor.
    std::vector<double> scores(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
      scores[static_cast<size_t>(e)] = sigmoid(logits[static_cast<size_t>(e)]);
      choice[static_cast<size_t>(e)] = scores[static_cast<size_t>(e)] + router_bias[static_cast<size_t>(e)];
    }
    const int64_t G = mc.n_group, per = E / G;
    std::vector<double> group_scores(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; ++g) {
      std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(members.begin(), members.end(), std::greater<double>());
      group_scores[static_cast<size_t>(g)] = members[0] + members[1];
    }
    const std::vector<int64_t> groups = top_k(group_scores, mc.topk_group, stats);
    std::vector<double> masked(static_cast<size_t>(E), -std::numeric_limits<double>::infinity());
    for (int64_t g : groups)
      for (int64_t e = g * per; e < (g + 1) * per; ++e) masked[static_cast<size_t>(e)] = choice[static_cast<size_t>(e)];
    sel = top_k(masked, K, stats);
    for (int64_t e : sel) wts.push_back(scores[static_cast<size_t>(e)]);
    if (mc.norm_topk_prob) {
      const double t = std::accumulate(wts.begin(), wts.end(), 0.0) + 1e-20;
      for (double& w : wts) w /= t;
    }
    for (double& w : wts) w *= mc.routed_scaling_factor;
  }

  std::vector<double> out(x.size(), 0.0);
  for (size_t i = 0; i < sel.size(); ++i) {
    const std::vector<double> y = ffn_forward(experts[static_cast<size_t>(sel[i])], x);
    for (size_t d = 0; d < out.size(); ++d) out[d] += wts[i] * y[d];
  }
  if (shared) {
    const std::vector<double> y = ffn_forward(*shared, x);
    // qwen2_moe: sigmoid(shared_expert_gate(x)) * shared_expert(x); deepseek_v3: ungated.
    const double g = shared_gate ? sigmoid(linear(*shared_gate, x)[0]) : 1.0;
    for (size_t d = 0; d < out.size(); ++d) out[d] += g * y[d];
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

ReferenceRope reference_rope(const ModelConfig& c, int64_t dim, int64_t seq_len) {
  const RopeScaling& rs = c.rope;
  const double base = c.rope_theta;
  const int64_t half = dim / 2;
  ReferenceRope out;
  out.inv_freq.resize(static_cast<size_t>(half));
  // _compute_default_rope_parameters: 1 / base^(arange(0, dim, 2) / dim).
  auto default_inv = [&](double b) {
    std::vector<double> f(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i)
      f[static_cast<size_t>(i)] = 1.0 / std::pow(b, static_cast<double>(2 * i) / static_cast<double>(dim));
    return f;
  };
  switch (rs.type) {
    case RopeScaling::Type::Default:
      out.inv_freq = default_inv(base);
      break;
    case RopeScaling::Type::Linear:  // _compute_linear_scaling_rope_parameters: inv_freq /= factor
      out.inv_freq = default_inv(base);
      for (double& f : out.inv_freq) f /= rs.factor;
      break;
    case RopeScaling::Type::Dynamic: {
      // _compute_dynamic_ntk_parameters with seq_len = max(seq_len, max_position_embeddings) (the
      // dynamic_rope_update wrapper recomputes only when the sequence outgrows max_position_embeddings).
      const double mp = static_cast<double>(c.max_position_embeddings);
      const double sl = std::max(static_cast<double>(seq_len), mp);
      const double b = base * std::pow((rs.factor * sl / mp) - (rs.factor - 1.0),
                                       static_cast<double>(dim) / static_cast<double>(dim - 2));
      out.inv_freq = default_inv(b);
      break;
    }
    case RopeScaling::Type::Llama3: {
      // _compute_llama3_parameters.
      const std::vector<double> inv = default_inv(base);
      const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wl = old_ctx / rs.low_freq_factor, high_wl = old_ctx / rs.high_freq_factor;
      for (int64_t i = 0; i < half; ++i) {
        const double f = inv[static_cast<size_t>(i)];
        const double wl = 2.0 * kPi / f;
        double r;
        if (wl < high_wl) {
          r = f;  // high frequency: unchanged
        } else if (wl > low_wl) {
          r = f / rs.factor;  // low frequency: divided by factor
        } else {
          const double smooth = (old_ctx / wl - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
          r = (1.0 - smooth) * f / rs.factor + smooth * f;
        }
        out.inv_freq[static_cast<size_t>(i)] = r;
      }
      break;
    }
    case RopeScaling::Type::Yarn: {
      // _compute_yarn_parameters.
      const double factor = rs.factor;
      const double orig = rs.original_max_position_embeddings > 0
                              ? static_cast<double>(rs.original_max_position_embeddings)
                              : static_cast<double>(c.max_position_embeddings);
      const std::optional<double> mscale = yarn_mscale_key(c);
      if (rs.attention_factor) {
        out.attention_factor = *rs.attention_factor;
      } else if (mscale && *mscale != 0.0 && rs.mscale_all_dim.value_or(0.0) != 0.0) {
        out.attention_factor = get_mscale(factor, *mscale) / get_mscale(factor, *rs.mscale_all_dim);
      } else {
        out.attention_factor = get_mscale(factor, 1.0);
      }
      const double beta_fast = rs.beta_fast != 0.0 ? rs.beta_fast : 32.0;  // `get("beta_fast") or 32`
      const double beta_slow = rs.beta_slow != 0.0 ? rs.beta_slow : 1.0;
      auto correction_dim = [&](double rot) {
        return (static_cast<double>(dim) * std::log(orig / (rot * 2.0 * kPi))) / (2.0 * std::log(base));
      };
      double low = std::floor(correction_dim(beta_fast));  // truncate (default True)
      double high = std::ceil(correction_dim(beta_slow));
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < half; ++i) {
        const double pos_freq = std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim));
        const double extrap = 1.0 / pos_freq, interp = 1.0 / (factor * pos_freq);
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double extrap_factor = 1.0 - ramp;
        out.inv_freq[static_cast<size_t>(i)] = interp * (1.0 - extrap_factor) + extrap * extrap_factor;
      }
      break;
    }
  }
  return out;
}

std::vector<double> reference_logits(const Model& m, const std::vector<int32_t>& tokens, ReferenceStats* stats) {
  const ModelConfig& c = m.config();
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t H = c.hidden_size, V = c.vocab_size;
  const double eps = c.rms_norm_eps;
  check(n > 0, "reference: no tokens");

  // embed_tokens.
  std::vector<std::vector<double>> h(static_cast<size_t>(n));
  {
    const Mat emb = load_mat(m, Role::Embed);
    check(emb.cols == H, "reference: embedding width ", emb.cols, " vs hidden ", H);
    for (int64_t t = 0; t < n; ++t) {
      const int32_t id = tokens[static_cast<size_t>(t)];
      check(id >= 0 && id < emb.rows, "reference: token id ", id, " out of range");
      h[static_cast<size_t>(t)].assign(emb.w.begin() + static_cast<int64_t>(id) * H,
                                       emb.w.begin() + static_cast<int64_t>(id + 1) * H);
    }
  }

  const bool mla = c.mla.has_value();
  const int64_t nh = c.num_heads;
  const int64_t rot_dim = mla ? c.mla->qk_rope_head_dim : c.head_dim;
  const ReferenceRope rope = reference_rope(c, rot_dim, n);

  for (int64_t l = 0; l < c.num_layers; ++l) {
    // ---------------- self-attention (input_layernorm, then the family's attention) ----------------
    const std::vector<double> attn_norm = load_vec(m, Role::AttnNorm, l);
    const Mat o_proj = load_mat(m, Role::O, l);
    std::vector<double> o_bias;
    if (c.o_bias) o_bias = load_vec(m, Role::OBias, l);

    // Per position: queries [nh][qd], keys [nkv][qd], values [nkv][vd].
    int64_t qd = 0, vd = 0, nkv = 0;
    std::vector<std::vector<double>> Q(static_cast<size_t>(n)), K(static_cast<size_t>(n)), Vv(static_cast<size_t>(n));
    double scale = 0.0;

    if (!mla) {
      const int64_t hd = c.head_dim;
      nkv = c.num_kv_heads;
      qd = vd = hd;
      const Mat wq = load_mat(m, Role::Q, l), wk = load_mat(m, Role::K, l), wv = load_mat(m, Role::V, l);
      std::vector<double> bq, bk, bv;
      if (c.attention_bias) {
        bq = load_vec(m, Role::QBias, l);
        bk = load_vec(m, Role::KBias, l);
        bv = load_vec(m, Role::VBias, l);
      }
      std::vector<double> qn, kn;
      if (c.qk_norm != QkNorm::None) {
        qn = load_vec(m, Role::QNorm, l);
        kn = load_vec(m, Role::KNorm, l);
      }
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<double> x = rms_norm(h[static_cast<size_t>(t)], attn_norm, eps);
        std::vector<double> q = linear(wq, x, c.attention_bias ? &bq : nullptr);
        std::vector<double> k = linear(wk, x, c.attention_bias ? &bk : nullptr);
        std::vector<double> v = linear(wv, x, c.attention_bias ? &bv : nullptr);
        check(static_cast<int64_t>(q.size()) == nh * hd && static_cast<int64_t>(k.size()) == nkv * hd,
              "reference: q/k widths do not match heads × head_dim");
        if (c.qk_norm == QkNorm::PerHead) {
          // qwen3: q_norm(q_proj(x).view(..., head_dim)) — RMSNorm over each head, before RoPE.
          for (int64_t hh = 0; hh < nh; ++hh) rms_norm_inplace(q.data() + hh * hd, hd, qn.data(), eps);
          for (int64_t hh = 0; hh < nkv; ++hh) rms_norm_inplace(k.data() + hh * hd, hd, kn.data(), eps);
        } else if (c.qk_norm == QkNorm::Full) {
          // olmoe: q_norm(q_proj(x)) over the whole projection.
          q = rms_norm(q, qn, eps);
          k = rms_norm(k, kn, eps);
        }
        if (c.clip_qkv) {
          // olmoe: clamp_ of q, k (after their norms) and v, before RoPE.
          const double cl = *c.clip_qkv;
          for (double& e : q) e = std::clamp(e, -cl, cl);
          for (double& e : k) e = std::clamp(e, -cl, cl);
          for (double& e : v) e = std::clamp(e, -cl, cl);
        }
        for (int64_t hh = 0; hh < nh; ++hh) apply_rope(q.data() + hh * hd, hd, t, rope);
        for (int64_t hh = 0; hh < nkv; ++hh) apply_rope(k.data() + hh * hd, hd, t, rope);
        Q[static_cast<size_t>(t)] = std::move(q);
        K[static_cast<size_t>(t)] = std::move(k);
        Vv[static_cast<size_t>(t)] = std::move(v);
      }
      scale = 1.0 / std::sqrt(static_cast<double>(hd));  // head_dim ** -0.5
    } else {
      // DeepseekV3Attention (MLA).
      const MlaConfig& a = *c.mla;
      const int64_t nope = a.qk_nope_head_dim, rdim = a.qk_rope_head_dim, vdim = a.v_head_dim;
      const int64_t qk_head_dim = nope + rdim;
      nkv = nh;  // kv_b_proj gives every head its own key and value
      qd = qk_head_dim;
      vd = vdim;
      Mat wq, wqa, wqb;
      std::vector<double> qa_norm;
      if (a.q_lora_rank > 0) {
        wqa = load_mat(m, Role::QA, l);
        wqb = load_mat(m, Role::QB, l);
        qa_norm = load_vec(m, Role::QANorm, l);
      } else {
        wq = load_mat(m, Role::Q, l);
      }
      const Mat wkva = load_mat(m, Role::KVA, l), wkvb = load_mat(m, Role::KVB, l);
      const std::vector<double> kva_norm = load_vec(m, Role::KVANorm, l);
      // q_a_layernorm / kv_a_layernorm are DeepseekV3RMSNorm(rank) with the class default eps 1e-6,
      // not config.rms_norm_eps.
      constexpr double kLoraEps = 1e-6;
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<double> x = rms_norm(h[static_cast<size_t>(t)], attn_norm, eps);
        std::vector<double> q = a.q_lora_rank > 0 ? linear(wqb, rms_norm(linear(wqa, x), qa_norm, kLoraEps))
                                                  : linear(wq, x);
        check(static_cast<int64_t>(q.size()) == nh * qk_head_dim, "reference: MLA q width");
        const std::vector<double> ckv = linear(wkva, x);  // [kv_lora_rank + rope]
        std::vector<double> kpass(ckv.begin(), ckv.begin() + a.kv_lora_rank);
        std::vector<double> krot(ckv.begin() + a.kv_lora_rank, ckv.end());
        const std::vector<double> kv = linear(wkvb, rms_norm(kpass, kva_norm, kLoraEps));  // [nh * (nope + v)]
        if (a.rope_interleave) deinterleave(krot.data(), rdim);
        apply_rope(krot.data(), rdim, t, rope);
        std::vector<double> qs(static_cast<size_t>(nh * qk_head_dim)), ks(static_cast<size_t>(nh * qk_head_dim)),
            vs(static_cast<size_t>(nh * vdim));
        for (int64_t hh = 0; hh < nh; ++hh) {
          double* qh = qs.data() + hh * qk_head_dim;
          std::copy(q.begin() + hh * qk_head_dim, q.begin() + (hh + 1) * qk_head_dim, qh);
          // q_pass = first nope dims, q_rot = last rope dims; query = cat(q_pass, rope(q_rot)).
          if (a.rope_interleave) deinterleave(qh + nope, rdim);
          apply_rope(qh + nope, rdim, t, rope);
          // key = cat(k_nope (per head, from kv_b_proj), k_rot (shared by all heads)).
          double* kh = ks.data() + hh * qk_head_dim;
          const double* src = kv.data() + hh * (nope + vdim);
          std::copy(src, src + nope, kh);
          std::copy(krot.begin(), krot.end(), kh + nope);
          std::copy(src + nope, src + nope + vdim, vs.data() + hh * vdim);
        }
        Q[static_cast<size_t>(t)] = std::move(qs);
        K[static_cast<size_t>(t)] = std::move(ks);
        Vv[static_cast<size_t>(t)] = std::move(vs);
      }
      scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim));
      if (c.rope.type != RopeScaling::Type::Default && c.rope.mscale_all_dim.value_or(0.0) != 0.0) {
        const double ms = get_mscale(c.rope.factor, *c.rope.mscale_all_dim);
        scale *= ms * ms;
      }
    }

    // Causal attention, optional sliding window (key j visible from query i iff i - W < j <= i), GQA.
    const std::optional<int64_t> window = c.window_for_layer(l);
    const int64_t group = nh / nkv;
    std::vector<std::vector<double>> attn_out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> concat(static_cast<size_t>(nh * vd), 0.0);
      for (int64_t hh = 0; hh < nh; ++hh) {
        const int64_t kvh = hh / group;  // repeat_kv
        const double* q = Q[static_cast<size_t>(i)].data() + hh * qd;
        std::vector<double> sc;
        std::vector<int64_t> js;
        for (int64_t j = 0; j <= i; ++j) {
          if (window && !(j > i - *window)) continue;
          const double* k = K[static_cast<size_t>(j)].data() + kvh * qd;
          double s = 0.0;
          for (int64_t d = 0; d < qd; ++d) s += q[d] * k[d];
          sc.push_back(s * scale);
          js.push_back(j);
        }
        const double mx = *std::max_element(sc.begin(), sc.end());
        double z = 0.0;
        for (double& s : sc) z += (s = std::exp(s - mx));
        double* o = concat.data() + hh * vd;
        for (size_t u = 0; u < js.size(); ++u) {
          const double p = sc[u] / z;
          const double* v = Vv[static_cast<size_t>(js[u])].data() + kvh * vd;
          for (int64_t d = 0; d < vd; ++d) o[d] += p * v[d];
        }
      }
      attn_out[static_cast<size_t>(i)] = linear(o_proj, concat, c.o_bias ? &o_bias : nullptr);
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t d = 0; d < H; ++d) h[static_cast<size_t>(t)][static_cast<size_t>(d)] += attn_out[static_cast<size_t>(t)][static_cast<size_t>(d)];

    // ---------------- feed-forward (post_attention_layernorm, then MLP or MoE block) ----------------
    const std::vector<double> ffn_norm = load_vec(m, Role::FfnNorm, l);
    if (c.is_moe_layer(l)) {
      const MoeConfig& mc = *c.moe;
      const Mat router = load_mat(m, Role::Router, l);
      std::vector<double> rbias;
      if (mc.routing == RoutingKind::SigmoidGroupLimited) rbias = load_vec(m, Role::RouterBias, l);
      std::vector<Ffn> experts;
      for (int64_t e = 0; e < mc.num_experts; ++e)
        experts.push_back(Ffn{load_mat(m, Role::ExpertGate, l, e), load_mat(m, Role::ExpertUp, l, e),
                              load_mat(m, Role::ExpertDown, l, e), {}, {}, {}});
      std::optional<Ffn> shared;
      std::optional<Mat> shared_gate;
      if (mc.shared_intermediate > 0) {
        shared = Ffn{load_mat(m, Role::SharedGate, l), load_mat(m, Role::SharedUp, l), load_mat(m, Role::SharedDown, l),
                     {}, {}, {}};
        if (mc.shared_gated) shared_gate = load_mat(m, Role::SharedExpertGate, l);
      }
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<double> x = rms_norm(h[static_cast<size_t>(t)], ffn_norm, eps);
        const std::vector<double> y = moe_forward(m, router, rbias, experts, shared ? &*shared : nullptr,
                                                  shared_gate ? &*shared_gate : nullptr, x, stats);
        for (int64_t d = 0; d < H; ++d) h[static_cast<size_t>(t)][static_cast<size_t>(d)] += y[static_cast<size_t>(d)];
      }
    } else {
      const Ffn f = load_dense_ffn(m, l);
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<double> x = rms_norm(h[static_cast<size_t>(t)], ffn_norm, eps);
        const std::vector<double> y = ffn_forward(f, x);
        for (int64_t d = 0; d < H; ++d) h[static_cast<size_t>(t)][static_cast<size_t>(d)] += y[static_cast<size_t>(d)];
      }
    }
  }

  // norm, lm_head.
  const std::vector<double> final_norm = load_vec(m, Role::FinalNorm);
  const Mat head = load_mat(m, Role::LmHead);
  check(head.rows == V && head.cols == H, "reference: lm_head shape ", head.rows, "x", head.cols);
  std::vector<double> logits(static_cast<size_t>(n * V));
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<double> y = linear(head, rms_norm(h[static_cast<size_t>(t)], final_norm, eps));
    std::copy(y.begin(), y.end(), logits.begin() + t * V);
  }
  return logits;
}

}  // namespace moetool::testing
