// compress/bit_alloc.cc — the candidates' sizes and round trips, and pass 1 of the bit allocation:
// every unit's output error at every candidate on calibration text (see bit_alloc.h; the knapsack
// is compress/bit_alloc_solve.cc, the end-to-end KLDs compress/bit_alloc_kld.cc).
#include "compress/bit_alloc.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "formats/ggml_quants.h"
#include "compress/quantize_int.h"
#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/linear_gptq.h"
#include "kernels/linear_quant.h"
#include "kernels/ops.h"
#include "engine/layer_sweep.h"
#include "engine/overlay_weights.h"

namespace moetool {

bool QuantCandidate::fits(int64_t rows, int64_t cols) const {
  if (ggml) return cols % ggml_block_size(type) == 0;
  // A group size that does not divide cols falls back to one group per row (int_spec_for_cols).
  return (cols * spec.bits) % 32 == 0 && (rows * spec.bits) % 32 == 0;
}

uint64_t QuantCandidate::bytes(int64_t rows, int64_t cols) const {
  if (!fits(rows, cols)) return 0;
  if (ggml) return static_cast<uint64_t>(rows) * ggml_row_size(type, cols);
  return int_quant_bytes(int_spec_for_cols(spec, cols), rows, cols);
}

void QuantCandidate::roundtrip(const float* W, int64_t rows, int64_t cols, float* out) const {
  if (ggml) {
    std::vector<uint8_t> buf(static_cast<size_t>(rows) * ggml_row_size(type, cols));
    quantize_rows(type, W, buf.data(), rows, cols, nullptr, name);
    dequantize_rows(type, buf.data(), out, rows, cols, name);
    return;
  }
  int_dequantize(rtn_quantize(W, rows, cols, int_spec_for_cols(spec, cols), nullptr, name), out);
}

std::shared_ptr<const WeightMatrix> QuantCandidate::stored(const float* W, int64_t rows, int64_t cols,
                                                          const std::string& what) const {
  if (ggml) return quantize_matrix(type, W, rows, cols, what);
  return make_gptq_matrix(rtn_quantize(W, rows, cols, int_spec_for_cols(spec, cols), nullptr, what), what);
}

namespace {

// `encoded`'s bytes of the matrix at candidate k, checked against the candidate's size.
std::optional<std::vector<uint8_t>> encoded_bytes(const AllocEncoded& encoded, const QuantCandidate& c, size_t k,
                                                  Role role, int64_t layer, int64_t expert, int64_t rows, int64_t cols,
                                                  const std::string& name) {
  if (!encoded || !c.ggml) return std::nullopt;
  auto b = encoded(k, role, layer, expert);
  if (b && b->size() != c.bytes(rows, cols))
    fail(name, ": encoded ", c.name, " matrix has ", b->size(), " bytes, expected ", c.bytes(rows, cols));
  return b;
}

}  // namespace

void candidate_roundtrip(const AllocEncoded& encoded, const std::vector<QuantCandidate>& cands, size_t k, Role role,
                         int64_t layer, int64_t expert, const float* W, int64_t rows, int64_t cols, float* out) {
  const QuantCandidate& c = cands[k];
  if (auto b = encoded_bytes(encoded, c, k, role, layer, expert, rows, cols, c.name))
    dequantize_rows(c.type, b->data(), out, rows, cols, c.name);
  else
    c.roundtrip(W, rows, cols, out);
}

std::shared_ptr<const WeightMatrix> candidate_stored(const AllocEncoded& encoded, const std::vector<QuantCandidate>& cands,
                                                     size_t k, Role role, int64_t layer, int64_t expert, const float* W,
                                                     int64_t rows, int64_t cols, const std::string& name) {
  const QuantCandidate& c = cands[k];
  if (auto b = encoded_bytes(encoded, c, k, role, layer, expert, rows, cols, name)) {
    auto owned = std::make_shared<std::vector<uint8_t>>(std::move(*b));
    return make_quant_matrix(c.type, rows, cols, std::span<const uint8_t>(*owned), owned, name);
  }
  return c.stored(W, rows, cols, name);
}

namespace {

using Mat = std::shared_ptr<const WeightMatrix>;

bool always_on_role(Role r) {
  return int_quantizable_role(r) && r != Role::ExpertGate && r != Role::ExpertUp && r != Role::ExpertDown;
}

const char* short_role(Role r) {
  switch (r) {
    case Role::Q: return "q";
    case Role::K: return "k";
    case Role::V: return "v";
    case Role::O: return "o";
    case Role::QA: return "q_a";
    case Role::QB: return "q_b";
    case Role::KVA: return "kv_a";
    case Role::KVB: return "kv_b";
    case Role::Gate: return "gate";
    case Role::Up: return "up";
    case Role::Down: return "down";
    case Role::SharedGate: return "shared gate";
    case Role::SharedUp: return "shared up";
    case Role::SharedDown: return "shared down";
    case Role::ExpertGate: return "gate";
    case Role::ExpertUp: return "up";
    case Role::ExpertDown: return "down";
    default: return role_name(r);
  }
}

// One always-on linear: its float weights and, per candidate, the round-tripped weights (empty: the
// candidate does not fit). Its error is measured by re-running the layer (measure_alloc_units).
struct LinearAcc {
  int64_t rows = 0, cols = 0, tokens = 0;
  std::vector<float> W;                  // [rows, cols]
  std::vector<std::vector<float>> Wq;    // per candidate [rows, cols]
};

// Inputs routed to one expert across all chunks of a layer.
struct ExpertAcc {
  std::vector<float> X, Y;  // [m, H] inputs and (unweighted) outputs
  int64_t m = 0;
  double mass = 0;
};

class CostCollector final : public SweepObserver {
 public:
  // Captures the residual after attention and the FFN block output of the first `capture_chunks`.
  CostCollector(const WeightSource& w, int64_t layer, const AllocOptions& o, size_t capture_chunks)
      : hb_ref(capture_chunks), out_ref(capture_chunks), w_(w), l_(layer), o_(o) {}
  std::map<Role, LinearAcc> lin;
  std::map<int64_t, ExpertAcc> experts;
  double block_sq = 0;
  int64_t block_tokens = 0;
  std::vector<std::vector<float>> hb_ref, out_ref;  // per captured chunk [n, H]

  void on_chunk(size_t chunk, int64_t, int64_t) override { chunk_ = chunk; }
  void on_linear_input(int64_t, Role role, int64_t expert, const float* X, int64_t n, int64_t cols) override {
    if (role == Role::ExpertGate) {
      ExpertAcc& a = experts[expert];
      if (keep_) a.X.insert(a.X.end(), X, X + n * cols);
      a.m += n;
      return;
    }
    if (!always_on_role(role)) return;
    add_linear(role, X, n, cols);
    if (role == Role::SharedGate) {  // the engine does not report the shared down_proj's input
      Mat g = w_.matrix(Role::SharedGate, l_), u = w_.matrix(Role::SharedUp, l_);
      const int64_t I = g->rows();
      std::vector<float> G(static_cast<size_t>(n * I)), U(static_cast<size_t>(n * I));
      g->matmul(X, n, G.data());
      u->matmul(X, n, U.data());
      for (size_t i = 0; i < G.size(); ++i) G[i] = G[i] / (1.0f + std::exp(-G[i])) * U[i];
      add_linear(Role::SharedDown, G.data(), n, I);
    }
  }
  void on_router(int64_t, const float*, const int32_t* sel, const float* w, int64_t n, int64_t, int64_t k) override {
    sel_.assign(sel, sel + n * k);
    w_sel_.assign(w, w + n * k);
    k_ = k;
  }
  void on_expert(int64_t, int64_t e, const int32_t* idx, const float*, int64_t, const float* Y, int64_t m,
                 int64_t H) override {
    ExpertAcc& a = experts[e];
    if (keep_) a.Y.insert(a.Y.end(), Y, Y + m * H);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < k_; ++i)
        if (sel_[static_cast<size_t>(idx[r] * k_ + i)] == e) a.mass += w_sel_[static_cast<size_t>(idx[r] * k_ + i)];
  }
  void on_ffn_block(int64_t, const float* h_before, const float* out, int64_t n, int64_t H) override {
    for (int64_t i = 0; i < n * H; ++i) block_sq += static_cast<double>(out[i]) * out[i];
    block_tokens += n;
    if (chunk_ >= hb_ref.size()) return;
    hb_ref[chunk_].assign(h_before, h_before + n * H);
    out_ref[chunk_].assign(out, out + n * H);
  }

 private:
  void add_linear(Role role, const float*, int64_t n, int64_t) {
    LinearAcc& a = lin[role];
    const size_t C = o_.candidates.size();
    if (a.W.empty()) {
      Mat W = w_.matrix(role, l_);
      a.rows = W->rows();
      a.cols = W->cols();
      a.W.resize(static_cast<size_t>(a.rows * a.cols));
      W->to_dense(a.W.data());
      a.Wq.resize(C);
      for (size_t c = 0; c < C && keep_; ++c) {
        if (!o_.candidates[c].fits(a.rows, a.cols)) continue;
        a.Wq[c].resize(a.W.size());
        candidate_roundtrip(o_.encoded, o_.candidates, c, role, l_, -1, a.W.data(), a.rows, a.cols, a.Wq[c].data());
      }
    }
    a.tokens += n;
  }
  const WeightSource& w_;
  int64_t l_;
  const AllocOptions& o_;
  // Output errors are measured here (sensitivity "output"): keep the experts' inputs and outputs and
  // the round-tripped linears; with "kld" only counts and routing weights are needed.
  bool keep_ = o_.sensitivity != "kld";
  size_t chunk_ = 0;
  std::vector<int32_t> sel_;
  std::vector<float> w_sel_;
  int64_t k_ = 0;
};

// Σ_r ‖E^q(x_r) − y_r‖² for an expert whose roles in `quant` use the candidate's round trip.
double expert_error(const std::vector<float>& X, const std::vector<float>& Y, int64_t m, int64_t H,
                    const std::vector<float>* Wg, const std::vector<float>* Wu, const std::vector<float>* Wd, int64_t I) {
  std::vector<float> G(static_cast<size_t>(m * I)), U(static_cast<size_t>(m * I)), Yq(static_cast<size_t>(m * H));
  ops::gemm_nt(m, I, H, X.data(), H, Wg->data(), H, G.data(), I);
  ops::gemm_nt(m, I, H, X.data(), H, Wu->data(), H, U.data(), I);
  ops::silu_mul(G.data(), U.data(), G.data(), m * I);
  ops::gemm_nt(m, H, I, G.data(), I, Wd->data(), I, Yq.data(), H);
  double s = 0;
  for (size_t i = 0; i < Yq.size(); ++i) {
    const double d = static_cast<double>(Yq[i]) - Y[i];
    s += d * d;
  }
  return s;
}

bool attention_role(Role r) {
  return r == Role::Q || r == Role::K || r == Role::V || r == Role::O || r == Role::QA || r == Role::QB ||
         r == Role::KVA || r == Role::KVB;
}

// A re-run's change to a sub-layer's output against the float run's (CostCollector's captures):
// Σ‖Δ‖² and Σ‖reference‖² over the re-run chunks — of the attention output (residual after attention
// minus the layer's input) for attention linears, of the FFN / MoE block output otherwise.
class RerunError final : public SweepObserver {
 public:
  RerunError(const LayerSweep& sweep, const CostCollector& ref, bool attention)
      : sweep_(sweep), ref_(ref), att_(attention) {}
  double num = 0, den = 0;

  void on_chunk(size_t chunk, int64_t, int64_t) override { chunk_ = chunk; }
  void on_ffn_block(int64_t, const float* h_before, const float* out, int64_t, int64_t) override {
    const float* got = att_ ? h_before : out;
    const std::vector<float>& ref = att_ ? ref_.hb_ref[chunk_] : ref_.out_ref[chunk_];
    const std::vector<float>& in = sweep_.input(chunk_);
    for (size_t j = 0; j < ref.size(); ++j) {
      const double d = static_cast<double>(got[j]) - ref[j];
      const double v = att_ ? static_cast<double>(ref[j]) - in[j] : ref[j];
      num += d * d;
      den += v * v;
    }
  }

 private:
  const LayerSweep& sweep_;
  const CostCollector& ref_;
  bool att_;
  size_t chunk_ = 0;
};

// ε of every always-on linear of layer l at every candidate (NaN: the candidate does not fit): the
// layer re-run (on the sweep's first chunks, up to o.rerun_tokens) with that linear alone
// round-tripped; relative change of its sub-layer's output (attention output for attention linears,
// the FFN / MoE block output otherwise) — like a routed expert's error, relative to its block's output.
std::map<Role, std::vector<double>> always_on_errors(const LayerSweep& sweep, const Engine& reng,
                                                     OverlayWeights& overlay, const CostCollector& col, int64_t l,
                                                     const AllocOptions& o) {
  const size_t C = o.candidates.size();
  std::map<Role, std::vector<double>> lin_err;
  for (const auto& [r, a] : col.lin) {
    auto& ev = lin_err[r];
    ev.assign(C, std::numeric_limits<double>::quiet_NaN());
    if (o.sensitivity == "kld") continue;  // measured end to end instead (bit_alloc_kld.h)
    for (size_t k = 0; k < C; ++k) {
      if (a.Wq[k].empty()) continue;
      Tensor t = Tensor::zeros(DType::F32, {a.rows, a.cols});
      std::copy(a.Wq[k].begin(), a.Wq[k].end(), t.as<float>());
      overlay.set(r, l, -1, make_dense_matrix(t, str("layer ", l, " ", short_role(r), " ", o.candidates[k].name)));
      RerunError err(sweep, col, attention_role(r));
      sweep.rerun(l, reng, &err, o.rerun_tokens);
      overlay.clear();
      ev[k] = err.den > 0 ? std::sqrt(err.num / err.den) : 0.0;
    }
  }
  return lin_err;
}

// Units of layer l's always-on linears, in role order, with their measured errors.
void add_always_on_units(const CostCollector& col, const std::map<Role, std::vector<double>>& lin_err, int64_t l,
                         const AllocOptions& o, std::vector<AllocUnit>& units) {
  const Role always[] = {Role::Q, Role::K, Role::V, Role::O, Role::QA, Role::QB, Role::KVA, Role::KVB,
                         Role::Gate, Role::Up, Role::Down, Role::SharedGate, Role::SharedUp, Role::SharedDown};
  for (Role r : always) {
    auto it = col.lin.find(r);
    if (it == col.lin.end()) continue;
    const LinearAcc& a = it->second;
    AllocUnit u;
    u.name = str("layer ", l, " ", short_role(r));
    u.layer = l;
    u.roles = {r};
    u.params = a.rows * a.cols;
    u.rows = a.rows;
    u.cols = a.cols;
    u.tokens = a.tokens;
    for (size_t k = 0; k < o.candidates.size(); ++k) {
      u.bytes.push_back(o.candidates[k].bytes(a.rows, a.cols));
      u.error.push_back(lin_err.at(r)[k]);
    }
    units.push_back(std::move(u));
  }
}

const Role kExpertRoles[] = {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown};

// err[e][v][c] = Σ‖ΔE‖² over expert e's routed tokens with candidate c applied to variant v's roles
// (V = 1: all three; V = 3: each role alone); NaN where c does not fit. rows, cols: of gate, up, down.
std::vector<std::vector<std::vector<double>>> expert_errors(const WeightSource& w, const CostCollector& col,
                                                            int64_t l, int64_t E, int64_t Hd,
                                                            const std::vector<int64_t>& rows,
                                                            const std::vector<int64_t>& cols, size_t V,
                                                            const AllocOptions& o) {
  const size_t C = o.candidates.size();
  std::vector<std::vector<std::vector<double>>> err(static_cast<size_t>(E),
                                                    std::vector<std::vector<double>>(V, std::vector<double>(C, 0)));
  const int64_t I = rows[0];
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t e = 0; e < E; ++e) {
    auto f = col.experts.find(e);
    if (f == col.experts.end() || f->second.m == 0) continue;
    const ExpertAcc& a = f->second;
    std::vector<std::vector<float>> Wf(3);
    for (int r = 0; r < 3; ++r) {
      Wf[static_cast<size_t>(r)].resize(static_cast<size_t>(rows[r] * cols[r]));
      w.matrix(kExpertRoles[r], l, e)->to_dense(Wf[static_cast<size_t>(r)].data());
    }
    for (size_t k = 0; k < C; ++k) {
      std::vector<std::vector<float>> Wq(3);
      for (int r = 0; r < 3; ++r) {
        if (!o.candidates[k].fits(rows[r], cols[r])) continue;
        Wq[static_cast<size_t>(r)].resize(Wf[static_cast<size_t>(r)].size());
        candidate_roundtrip(o.encoded, o.candidates, k, kExpertRoles[r], l, e, Wf[static_cast<size_t>(r)].data(), rows[r],
                            cols[r], Wq[static_cast<size_t>(r)].data());
      }
      for (size_t v = 0; v < V; ++v) {
        const std::vector<float>* m3[3];
        bool ok = true;
        for (int r = 0; r < 3; ++r) {
          const bool quant = V == 1 || static_cast<size_t>(r) == v;
          if (quant && Wq[static_cast<size_t>(r)].empty()) ok = false;
          m3[r] = quant ? &Wq[static_cast<size_t>(r)] : &Wf[static_cast<size_t>(r)];
        }
        err[static_cast<size_t>(e)][v][k] = ok ? expert_error(a.X, a.Y, a.m, Hd, m3[0], m3[1], m3[2], I)
                                               : std::numeric_limits<double>::quiet_NaN();
      }
    }
  }
  return err;
}

// Units of layer l's routed experts (one per expert, or per role with every expert stacked) with
// their measured errors; N: calibration tokens.
void add_expert_units(const WeightSource& w, const CostCollector& col, int64_t l, int64_t E, int64_t Hd, int64_t N,
                      const AllocOptions& o, std::vector<AllocUnit>& units) {
  const size_t C = o.candidates.size();
  const double block_rms = col.block_tokens > 0 ? std::sqrt(col.block_sq / col.block_tokens) : 0.0;
  const size_t V = o.per_role_experts ? 3 : 1;  // variants: all three roles, or each role alone
  const Mat g = w.matrix(Role::ExpertGate, l, 0), d = w.matrix(Role::ExpertDown, l, 0);
  const std::vector<int64_t> rows = {g->rows(), g->rows(), d->rows()}, cols = {g->cols(), g->cols(), d->cols()};
  // With sensitivity "kld" the errors are measured end to end afterwards (bit_alloc_kld.h).
  const auto err = o.sensitivity == "kld"
                       ? std::vector<std::vector<std::vector<double>>>(
                             static_cast<size_t>(E), std::vector<std::vector<double>>(V, std::vector<double>(C, 0)))
                       : expert_errors(w, col, l, E, Hd, rows, cols, V, o);
  auto eps = [&](int64_t e, size_t v, size_t k) {
    const auto f = col.experts.find(e);
    const int64_t m = f == col.experts.end() ? 0 : f->second.m;
    const double s = err[static_cast<size_t>(e)][v][k];
    if (std::isnan(s)) return s;
    if (m == 0 || block_rms <= 0) return 0.0;
    return std::sqrt(s / static_cast<double>(m)) / block_rms;
  };
  auto stats = [&](int64_t e, AllocUnit& u) {
    const auto f = col.experts.find(e);
    u.tokens = f == col.experts.end() ? 0 : f->second.m;
    u.freq = N > 0 ? static_cast<double>(u.tokens) / static_cast<double>(N) : 0.0;
    u.weight = u.tokens > 0 ? f->second.mass / static_cast<double>(u.tokens) : 0.0;
  };
  if (!o.per_role_experts) {
    for (int64_t e = 0; e < E; ++e) {
      AllocUnit u;
      u.name = str("layer ", l, " expert ", e);
      u.layer = l;
      u.expert = e;
      u.roles = {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown};
      u.routed = true;
      u.rows = rows[0];
      u.cols = cols[0];
      for (int r = 0; r < 3; ++r) u.params += rows[r] * cols[r];
      stats(e, u);
      for (size_t k = 0; k < C; ++k) {
        uint64_t b = 0;
        bool fit = true;
        for (int r = 0; r < 3; ++r) {
          const uint64_t x = o.candidates[k].bytes(rows[r], cols[r]);
          fit = fit && x > 0;
          b += x;
        }
        u.bytes.push_back(fit ? b : 0);
        u.error.push_back(fit ? eps(e, 0, k) : std::numeric_limits<double>::quiet_NaN());
      }
      units.push_back(std::move(u));
    }
    return;
  }
  // One unit per role with every expert stacked (GGUF): errors of the experts combined with their
  // own frequency and weight; freq/weight of the unit are 1.
  for (int r = 0; r < 3; ++r) {
    AllocUnit u;
    u.name = str("layer ", l, " experts ", short_role(kExpertRoles[r]));
    u.layer = l;
    u.expert = -2;
    u.roles = {kExpertRoles[r]};
    u.routed = true;
    u.rows = rows[r];
    u.cols = cols[r];
    u.params = E * rows[r] * cols[r];
    for (int64_t e = 0; e < E; ++e) {
      const auto f = col.experts.find(e);
      u.tokens += f == col.experts.end() ? 0 : f->second.m;
    }
    for (size_t k = 0; k < C; ++k) {
      const uint64_t b = o.candidates[k].bytes(rows[r], cols[r]);
      u.bytes.push_back(b * static_cast<uint64_t>(E));
      if (b == 0) {
        u.error.push_back(std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      double s = 0;
      for (int64_t e = 0; e < E; ++e) {
        AllocUnit tmp;
        stats(e, tmp);
        const double x = eps(e, static_cast<size_t>(r), k);
        if (!std::isnan(x) && tmp.tokens > 0) s += std::pow(tmp.freq, o.alpha) * std::pow(tmp.weight, o.beta) * std::pow(x, o.gamma);
      }
      u.error.push_back(s);
    }
    units.push_back(std::move(u));
  }
}

}  // namespace

std::vector<AllocUnit> measure_alloc_units(const Engine& eng, const std::vector<std::vector<int32_t>>& chunks,
                                           const AllocOptions& o) {
  const ModelConfig& c = eng.config();
  const WeightSource& w = eng.weights();
  const size_t C = o.candidates.size();
  if (C == 0) fail("bit allocation: no candidate storage types");
  if (chunks.empty()) fail("bit allocation: needs calibration text (--calib-text) to measure output errors");
  LayerSweep sweep(eng, chunks);
  std::vector<AllocUnit> units;
  // An engine over the same weights with one linear replaced at a time.
  auto overlay = std::make_shared<OverlayWeights>(
      std::shared_ptr<const WeightSource>(&w, [](const WeightSource*) {}));
  Engine reng(overlay, /*keep_layers=*/false);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    // The float run keeps the inputs and sub-layer outputs of the first chunks (up to
    // o.rerun_tokens tokens) for re-running the layer.
    const int64_t rerun = o.sensitivity == "kld" ? 0 : o.rerun_tokens;  // kld: no layer re-runs
    CostCollector col(w, l, o, rerun > 0 ? sweep.chunks_within(rerun) : 0);
    sweep.run(l, &col, SweepStreams::Advance, rerun);
    add_always_on_units(col, always_on_errors(sweep, reng, *overlay, col, l, o), l, o, units);
    if (c.moe && c.is_moe_layer(l))
      add_expert_units(w, col, l, c.moe->num_experts, c.hidden_size, sweep.num_tokens(), o, units);
    if (o.progress) o.progress(str("[", l + 1, "/", c.num_layers, "] layer ", l, ": measured ", C, " candidates"));
  }
  return units;
}

}  // namespace moetool
