// engine/calibrate.cc — layer-by-layer calibration and its safetensors storage (see calibrate.h).
#include "engine/calibrate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/fs.h"
#include "engine/layer_sweep.h"
#include "kernels/ops.h"
#include "formats/safetensors.h"

namespace moetool {

namespace {

constexpr int kNumRoles = static_cast<int>(Role::SharedExpertGate) + 1;

// Collects one layer's statistics for chunk after chunk.
class Collector final : public SweepObserver {
 public:
  Collector(LayerCalibration& lc, const CalibrationOptions& o, int64_t total_tokens, int64_t H)
      : lc_(lc), o_(o), total_(total_tokens), H_(H) {}
  void on_chunk(size_t, int64_t first_token, int64_t) override { base_ = first_token; }

  void on_linear_input(int64_t layer, Role role, int64_t expert, const float* X, int64_t n, int64_t cols) override {
    if (!o_.second_moments && !o_.gram) return;
    InputMoments& m = lc_.inputs[LinearKey{role, layer, expert}];
    if (m.sum_sq.empty()) m.sum_sq.assign(static_cast<size_t>(cols), 0.0);
    m.count += n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < cols; ++j) m.sum_sq[static_cast<size_t>(j)] += static_cast<double>(X[i * cols + j]) * X[i * cols + j];
    if (o_.gram) {
      if (m.gram.empty()) m.gram.assign(static_cast<size_t>(cols * cols), 0.0);
#pragma omp parallel for schedule(dynamic, 8)
      for (int64_t a = 0; a < cols; ++a)
        for (int64_t i = 0; i < n; ++i) {
          const double xa = X[i * cols + a];
          if (xa == 0.0) continue;
          double* row = m.gram.data() + a * cols;
          for (int64_t b = 0; b < cols; ++b) row[b] += xa * X[i * cols + b];
        }
    }
  }
  void on_router(int64_t, const float* logits, const int32_t* sel, const float* w, int64_t n, int64_t E,
                 int64_t k) override {
    cur_sel_ = sel;
    cur_w_ = w;
    cur_k_ = k;
    routed_.assign(static_cast<size_t>(n * H_), 0.0);
    pairs_.clear();
    if (!o_.router) return;
    if (lc_.router_logits.empty()) {
      lc_.router_logits.assign(static_cast<size_t>(total_ * E), 0.0f);
      lc_.selections.assign(static_cast<size_t>(total_ * k), -1);
      lc_.routing_weights.assign(static_cast<size_t>(total_ * k), 0.0f);
    }
    std::memcpy(lc_.router_logits.data() + base_ * E, logits, static_cast<size_t>(n * E) * 4);
    std::memcpy(lc_.selections.data() + base_ * k, sel, static_cast<size_t>(n * k) * 4);
    std::memcpy(lc_.routing_weights.data() + base_ * k, w, static_cast<size_t>(n * k) * 4);
    for (int64_t i = 0; i < n * k; ++i) {
      lc_.tokens_per_expert[static_cast<size_t>(sel[i])] += 1;
      lc_.weight_mass[static_cast<size_t>(sel[i])] += w[i];
    }
  }
  void on_expert(int64_t, int64_t e, const int32_t* idx, const float* A, int64_t I, const float* Y, int64_t m,
                 int64_t H) override {
    for (int64_t r = 0; r < m; ++r) {
      double s = 0;
      for (int64_t j = 0; j < H; ++j) s += static_cast<double>(Y[r * H + j]) * Y[r * H + j];
      const double norm = std::sqrt(s);
      lc_.output_norm_sum[static_cast<size_t>(e)] += norm;
      // Routing weight of this (token, expert) pair.
      float w = 0;
      for (int64_t i = 0; i < cur_k_; ++i)
        if (cur_sel_[idx[r] * cur_k_ + i] == e) w = cur_w_[idx[r] * cur_k_ + i];
      lc_.weighted_output_norm[static_cast<size_t>(e)] += w * norm;
      double& mx = lc_.max_abs_output[static_cast<size_t>(e)];
      for (int64_t j = 0; j < H; ++j) {
        mx = std::max(mx, static_cast<double>(std::fabs(Y[r * H + j])));
        routed_[static_cast<size_t>(idx[r] * H + j)] += static_cast<double>(w) * Y[r * H + j];
      }
      pairs_.push_back({idx[r], e, w * norm});
    }
    if (o_.ffn_activations) {
      auto& a = lc_.activations[e];
      a.insert(a.end(), A, A + m * I);
      auto& t = lc_.activation_tokens[e];
      for (int64_t r = 0; r < m; ++r) t.push_back(static_cast<int32_t>(base_ + idx[r]));
    }
  }
  void on_ffn_activation(int64_t, const float* A, int64_t n, int64_t I) override {
    if (!o_.ffn_activations) return;
    auto& a = lc_.activations[-1];
    a.insert(a.end(), A, A + n * I);
    auto& t = lc_.activation_tokens[-1];
    for (int64_t r = 0; r < n; ++r) t.push_back(static_cast<int32_t>(base_ + r));
  }
  void on_ffn_block(int64_t, const float* h_before, const float* out, int64_t n, int64_t H) override {
    if (!pairs_.empty()) add_easy_ep(h_before, n, H);
    if (!o_.hidden) return;
    if (lc_.hidden_before.empty()) {
      lc_.hidden_before.assign(static_cast<size_t>(total_ * H), 0.0f);
      lc_.ffn_out.assign(static_cast<size_t>(total_ * H), 0.0f);
    }
    std::memcpy(lc_.hidden_before.data() + base_ * H, h_before, static_cast<size_t>(n * H) * 4);
    std::memcpy(lc_.ffn_out.data() + base_ * H, out, static_cast<size_t>(n * H) * 4);
  }

 private:
  // EASY-EP's token weights 1 − cos(h, h + routed) applied to the chunk's (token, expert) pairs.
  void add_easy_ep(const float* h, int64_t n, int64_t H) {
    std::vector<double> wt(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      double ab = 0, aa = 0, bb = 0;
      for (int64_t j = 0; j < H; ++j) {
        const double a = h[t * H + j], b = a + routed_[static_cast<size_t>(t * H + j)];
        ab += a * b, aa += a * a, bb += b * b;
      }
      const double cs = aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 1.0;
      wt[static_cast<size_t>(t)] = std::max(1.0 - cs, 0.0);
    }
    for (const auto& p : pairs_) lc_.easy_ep[static_cast<size_t>(p.expert)] += p.gate_norm * wt[static_cast<size_t>(p.token)];
    pairs_.clear();
  }
  struct Pair {
    int32_t token;
    int64_t expert;
    double gate_norm;  // routing weight × ‖output‖₂
  };
  std::vector<double> routed_;  // [n, H] Σ over the routed experts of weight × output, this chunk
  std::vector<Pair> pairs_;
  LayerCalibration& lc_;
  const CalibrationOptions& o_;
  int64_t total_, H_;
  int64_t base_ = 0;  // global index of the chunk's first token
  const int32_t* cur_sel_ = nullptr;
  const float* cur_w_ = nullptr;
  int64_t cur_k_ = 0;
};

}  // namespace

std::vector<std::pair<int64_t, int64_t>> CalibrationStats::unrouted_experts() const {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (size_t l = 0; l < layers.size(); ++l)
    for (size_t e = 0; e < layers[l].tokens_per_expert.size(); ++e)
      if (layers[l].tokens_per_expert[e] == 0) out.push_back({static_cast<int64_t>(l), static_cast<int64_t>(e)});
  return out;
}

CalibrationStats calibrate(const Engine& engine, const std::vector<std::vector<int32_t>>& chunks,
                           const CalibrationOptions& opt) {
  const ModelConfig& c = engine.config();
  const int64_t H = c.hidden_size;
  CalibrationStats st;
  st.model_path = engine.weights().path();
  st.fingerprint = weights_fingerprint(engine.weights());
  st.num_chunks = static_cast<int64_t>(chunks.size());
  st.hidden_size = H;
  for (const auto& ch : chunks) {
    if (ch.empty()) fail("calibrate: empty calibration chunk");
    st.num_tokens += static_cast<int64_t>(ch.size());
    st.ctx = std::max<int64_t>(st.ctx, static_cast<int64_t>(ch.size()));
  }
  // The residual stream of every calibration token: the only activations kept across layers.
  LayerSweep sweep(engine, chunks);
  st.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerCalibration& lc = st.layers[static_cast<size_t>(l)];
    lc.moe = c.moe && c.is_moe_layer(l);
    if (lc.moe) {
      lc.num_experts = c.moe->num_experts;
      lc.top_k = c.moe->top_k;
      lc.tokens_per_expert.assign(static_cast<size_t>(lc.num_experts), 0);
      lc.weight_mass.assign(static_cast<size_t>(lc.num_experts), 0.0);
      lc.output_norm_sum.assign(static_cast<size_t>(lc.num_experts), 0.0);
      lc.weighted_output_norm.assign(static_cast<size_t>(lc.num_experts), 0.0);
      lc.easy_ep.assign(static_cast<size_t>(lc.num_experts), 0.0);
      lc.max_abs_output.assign(static_cast<size_t>(lc.num_experts), 0.0);
    }
    Collector col(lc, opt, st.num_tokens, H);
    sweep.run(l, &col);
    if (opt.progress) {
      std::string line = str("[", l + 1, "/", c.num_layers, "] layer ", l, ": ", st.num_tokens, " tokens");
      if (lc.moe) {
        int64_t unrouted = 0;
        for (auto t : lc.tokens_per_expert) unrouted += t == 0;
        line += str(", ", lc.num_experts, " experts, ", unrouted, " without calibration tokens");
      }
      opt.progress(line);
    }
  }
  // The output head's input, the final-normed streams after the last layer: kept with the last
  // layer's inputs under LinearKey{LmHead, L − 1, −1} (so statistics files carry it unchanged).
  if ((opt.second_moments || opt.gram) && c.num_layers > 0) {
    Collector col(st.layers.back(), opt, st.num_tokens, H);
    const std::vector<float> g = engine.weights().vector(Role::FinalNorm);
    for (size_t i = 0; i < sweep.num_chunks(); ++i) {
      const std::vector<float>& h = sweep.stream(i);
      const int64_t n = static_cast<int64_t>(h.size()) / H;
      std::vector<float> x(h.size());
      ops::rmsnorm(h.data(), g.data(), x.data(), n, H, static_cast<float>(c.rms_norm_eps));
      col.on_linear_input(c.num_layers - 1, Role::LmHead, -1, x.data(), n, H);
    }
  }
  return st;
}

std::string weights_fingerprint(const WeightSource& w) {
  const ModelConfig& c = w.config();
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (int64_t v : {c.vocab_size, c.hidden_size, c.num_layers, c.moe ? c.moe->num_experts : 0}) mix(&v, sizeof v);
  const int64_t rows = std::min<int64_t>(c.vocab_size, 16);
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) ids[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  std::vector<float> e(static_cast<size_t>(rows * c.hidden_size));
  w.embed_rows(ids.data(), rows, e.data());
  mix(e.data(), e.size() * 4);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::vector<float> v;
    if (c.moe && c.is_moe_layer(l)) {
      const auto r = w.matrix(Role::Router, l);
      v.resize(static_cast<size_t>(r->rows() * r->cols()));
      r->to_dense(v.data());
    } else {
      v = w.vector(Role::AttnNorm, l);
    }
    mix(v.data(), v.size() * 4);
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

void check_stats_model(const CalibrationStats& st, const WeightSource& w, const std::string& what) {
  const ModelConfig& c = w.config();
  auto other = [&](const std::string& why) {
    fail(what, ": calibration statistics of another model (", st.model_path, "): ", why, " (", w.path(), ")");
  };
  if (static_cast<int64_t>(st.layers.size()) != c.num_layers)
    other(str(st.layers.size(), " layers where the model has ", c.num_layers));
  if (st.hidden_size != c.hidden_size) other(str("hidden size ", st.hidden_size, " where the model has ", c.hidden_size));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerCalibration& lc = st.layers[static_cast<size_t>(l)];
    const bool moe = c.moe && c.is_moe_layer(l);
    if (lc.moe != moe) other(str("layer ", l, " is ", lc.moe ? "an MoE" : "a dense", " layer there"));
    if (moe && lc.num_experts != c.moe->num_experts)
      other(str("layer ", l, " has ", lc.num_experts, " experts there, ", c.moe->num_experts, " here"));
  }
  if (!st.fingerprint.empty() && st.fingerprint != weights_fingerprint(w))
    other("same shapes, different weights (fingerprint differs)");
}

// ---- storage ----

void CalibrationStats::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  struct Item {
    TensorSpec spec;
    const void* data;
  };
  std::vector<Item> items;
  std::vector<std::vector<int64_t>> counts;  // keep count arrays alive
  counts.reserve(4096);
  auto add = [&](const std::string& name, DType dt, Shape shape, const void* data) {
    items.push_back({{name, dt, std::move(shape)}, data});
  };
  nlohmann::json layers_j = nlohmann::json::array();
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerCalibration& lc = layers[l];
    const std::string p = str("layers.", l, ".");
    layers_j.push_back({{"moe", lc.moe}, {"num_experts", lc.num_experts}, {"top_k", lc.top_k}});
    if (lc.moe) {
      const int64_t E = lc.num_experts;
      add(p + "tokens_per_expert", DType::I64, {E}, lc.tokens_per_expert.data());
      add(p + "weight_mass", DType::F64, {E}, lc.weight_mass.data());
      add(p + "output_norm_sum", DType::F64, {E}, lc.output_norm_sum.data());
      add(p + "weighted_output_norm", DType::F64, {E}, lc.weighted_output_norm.data());
      add(p + "easy_ep", DType::F64, {E}, lc.easy_ep.data());
      add(p + "max_abs_output", DType::F64, {E}, lc.max_abs_output.data());
      if (!lc.router_logits.empty()) {
        add(p + "router_logits", DType::F32, {num_tokens, E}, lc.router_logits.data());
        add(p + "selections", DType::I32, {num_tokens, lc.top_k}, lc.selections.data());
        add(p + "routing_weights", DType::F32, {num_tokens, lc.top_k}, lc.routing_weights.data());
      }
    }
    if (!lc.hidden_before.empty()) {
      add(p + "hidden_before", DType::F32, {num_tokens, hidden_size}, lc.hidden_before.data());
      add(p + "ffn_out", DType::F32, {num_tokens, hidden_size}, lc.ffn_out.data());
    }
    for (const auto& [e, a] : lc.activations) {
      const auto& t = lc.activation_tokens.at(e);
      const int64_t m = static_cast<int64_t>(t.size());
      add(str(p, "act.", e), DType::F32, {m, m ? static_cast<int64_t>(a.size()) / m : 0}, a.data());
      add(str(p, "act_tokens.", e), DType::I32, {m}, t.data());
    }
    for (const auto& [k, m] : lc.inputs) {
      const std::string q = str(p, "in.", role_name(k.role), ".", k.expert, ".");
      counts.push_back({m.count});
      add(q + "count", DType::I64, {1}, counts.back().data());
      add(q + "sum_sq", DType::F64, {static_cast<int64_t>(m.sum_sq.size())}, m.sum_sq.data());
      if (!m.gram.empty())
        add(q + "gram", DType::F64, {static_cast<int64_t>(m.sum_sq.size()), static_cast<int64_t>(m.sum_sq.size())},
            m.gram.data());
    }
  }
  nlohmann::json info = {{"model_path", model_path}, {"fingerprint", fingerprint}, {"num_tokens", num_tokens}, {"num_chunks", num_chunks},
                         {"ctx", ctx}, {"hidden_size", hidden_size}, {"layers", layers_j}};
  std::map<std::string, std::string> md = metadata;
  md["moetool.calibration"] = info.dump();
  std::vector<TensorSpec> specs;
  for (const auto& it : items) specs.push_back(it.spec);
  // Write next to the destination, then rename: the file appears only when complete.
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  const std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  const std::string stem = str(".", base, ".writing");
  {
    SafetensorsWriter w(dir, specs, md, 0, stem);
    for (const auto& it : items)
      w.write(it.spec.name, it.data, static_cast<size_t>(numel(it.spec.shape)) * dtype_size(it.spec.dtype));
    w.finish();
  }
  if (std::rename(path_join(dir, stem + ".safetensors").c_str(), path.c_str()) != 0)
    fail(path, ": cannot move calibration file into place");
}

CalibrationStats CalibrationStats::load(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  auto it = f->metadata().find("moetool.calibration");
  if (it == f->metadata().end()) fail(path, ": not a moetool calibration file (no moetool.calibration metadata)");
  nlohmann::json info;
  try {
    info = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid moetool.calibration metadata: ", e.what());
  }
  CalibrationStats st;
  try {
    st.model_path = info.at("model_path");
    st.fingerprint = info.value("fingerprint", "");
    st.num_tokens = info.at("num_tokens");
    st.num_chunks = info.at("num_chunks");
    st.ctx = info.at("ctx");
    st.hidden_size = info.at("hidden_size");
    for (const auto& lj : info.at("layers")) {
      LayerCalibration lc;
      lc.moe = lj.at("moe");
      lc.num_experts = lj.at("num_experts");
      lc.top_k = lj.at("top_k");
      st.layers.push_back(std::move(lc));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": malformed moetool.calibration metadata: ", e.what());
  }
  auto read = [&](const TensorInfo& ti, auto& vec, DType want) {
    if (ti.dtype != want) fail(path, ": tensor '", ti.name, "': expected ", dtype_name(want), ", got ", dtype_name(ti.dtype));
    Tensor t = f->get(ti);
    vec.resize(static_cast<size_t>(t.numel()));
    if (t.nbytes()) std::memcpy(vec.data(), t.data, t.nbytes());
  };
  for (const auto& ti : f->tensors()) {
    // layers.<l>.<field>[.<more>]
    if (ti.name.rfind("layers.", 0) != 0) continue;
    const size_t d1 = ti.name.find('.', 7);
    if (d1 == std::string::npos) continue;
    const size_t l = std::stoul(ti.name.substr(7, d1 - 7));
    if (l >= st.layers.size()) fail(path, ": tensor '", ti.name, "': layer out of range");
    LayerCalibration& lc = st.layers[l];
    const std::string field = ti.name.substr(d1 + 1);
    if (field == "tokens_per_expert") read(ti, lc.tokens_per_expert, DType::I64);
    else if (field == "weight_mass") read(ti, lc.weight_mass, DType::F64);
    else if (field == "output_norm_sum") read(ti, lc.output_norm_sum, DType::F64);
    else if (field == "weighted_output_norm") read(ti, lc.weighted_output_norm, DType::F64);
    else if (field == "easy_ep") read(ti, lc.easy_ep, DType::F64);
    else if (field == "max_abs_output") read(ti, lc.max_abs_output, DType::F64);
    else if (field == "router_logits") read(ti, lc.router_logits, DType::F32);
    else if (field == "selections") read(ti, lc.selections, DType::I32);
    else if (field == "routing_weights") read(ti, lc.routing_weights, DType::F32);
    else if (field == "hidden_before") read(ti, lc.hidden_before, DType::F32);
    else if (field == "ffn_out") read(ti, lc.ffn_out, DType::F32);
    else if (field.rfind("act.", 0) == 0) read(ti, lc.activations[std::stoll(field.substr(4))], DType::F32);
    else if (field.rfind("act_tokens.", 0) == 0) read(ti, lc.activation_tokens[std::stoll(field.substr(11))], DType::I32);
    else if (field.rfind("in.", 0) == 0) {
      // in.<role>.<expert>.<what>
      const size_t a = field.find('.', 3), b = field.find('.', a + 1);
      if (a == std::string::npos || b == std::string::npos) fail(path, ": tensor '", ti.name, "': malformed name");
      const std::string rn = field.substr(3, a - 3);
      int role = -1;
      for (int r = 0; r < kNumRoles; ++r)
        if (rn == role_name(static_cast<Role>(r))) role = r;
      if (role < 0) fail(path, ": tensor '", ti.name, "': unknown role '", rn, "'");
      const int64_t e = std::stoll(field.substr(a + 1, b - a - 1));
      InputMoments& m = lc.inputs[LinearKey{static_cast<Role>(role), static_cast<int64_t>(l), e}];
      const std::string what = field.substr(b + 1);
      if (what == "count") {
        std::vector<int64_t> c;
        read(ti, c, DType::I64);
        m.count = c.empty() ? 0 : c[0];
      } else if (what == "sum_sq") {
        read(ti, m.sum_sq, DType::F64);
      } else if (what == "gram") {
        read(ti, m.gram, DType::F64);
      }
    }
  }
  return st;
}

}  // namespace moetool
