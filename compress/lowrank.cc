// compress/lowrank.cc — the svd job (see lowrank.h): measure every target's truncation errors, choose
// the ranks, then write the factors (or the materialized dense matrices) layer by layer.
#include "compress/lowrank.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <sstream>

#include <Eigen/Dense>

#include "compress/lowrank_inputs.h"
#include "compress/lowrank_plan.h"
#include "compress/lowrank_shared.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/checkpoint_writer.h"
#include "formats/gptq.h"
#include "formats/lowrank.h"
#include "formats/model.h"
#include "kernels/lowrank.h"

namespace moetool::svd {

namespace {

using Clock = std::chrono::steady_clock;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

constexpr Role kRoles[] = {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown};
// What --targets all-linears factors besides the experts (where the family has them); not the router.
constexpr Role kLinearRoles[] = {Role::Q,    Role::K,    Role::V,          Role::O,        Role::QA,
                                 Role::QB,   Role::KVA,  Role::KVB,        Role::Gate,     Role::Up,
                                 Role::Down, Role::SharedGate, Role::SharedUp, Role::SharedDown};
bool expert_role(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

// The experts of one layer and projection, and how the method factors them.
struct Block {
  const Model* m;
  const Options* o;
  int64_t layer = -1;
  Role role = Role::ExpertGate;
  int64_t rows = 0, cols = 0, E = 0;
  std::vector<std::vector<float>> W;  // [E][rows·cols]
  std::vector<double> share;          // [E] routed-token share (Σ = top-k), or top-k/E uncalibrated
  std::vector<float> base;            // delta: the weighted mean expert
};

Block load_block(const Model& m, const Options& o, int64_t l, Role role, const LayerInputs& in, int64_t tokens) {
  Block b;
  b.m = &m;
  b.o = &o;
  b.layer = l;
  b.role = role;
  const ModelConfig& c = m.config();
  b.E = c.moe->num_experts;
  const int64_t H = c.hidden_size, I = c.moe->expert_intermediate;
  b.rows = role == Role::ExpertDown ? H : I;
  b.cols = role == Role::ExpertDown ? I : H;
  for (int64_t e = 0; e < b.E; ++e) {
    b.W.push_back(m.weight(role, l, e).to_f32());
    const double f = in.freq.empty() ? 0 : in.freq[static_cast<size_t>(e)];
    b.share.push_back(tokens > 0 && !in.freq.empty() ? f / static_cast<double>(tokens)
                                                     : static_cast<double>(c.moe->top_k) / static_cast<double>(b.E));
  }
  if (o.method == "delta") {
    std::vector<const float*> p;
    for (const auto& w : b.W) p.push_back(w.data());
    b.base = weighted_mean(p, b.share, b.rows, b.cols);
    for (auto& w : b.W)
      for (size_t i = 0; i < w.size(); ++i) w[i] -= b.base[i];
  }
  return b;
}

std::string module_of(const Model& m, Role role, int64_t l, int64_t e) {
  const std::string n = m.family().tensor_name(role, l, e);
  const auto mod = gptq_module_of(n);
  check(mod.has_value(), "svd: tensor ", n, " does not end in .weight");
  return *mod;
}
// The module name of a factor the experts of (layer, role) share ("….experts.shared.w1").
std::string shared_module(const Model& m, Role role, int64_t l) {
  return shared_module_name(module_of(m, role, l, 0), module_of(m, role, l, 1));
}

lowrank::SvdOptions svd_options(const Options& o) {
  lowrank::SvdOptions so;
  so.damp = o.damp;
  so.seed = o.seed;
  so.device = o.device.device;
  return so;
}

// The decomposition of expert e's matrix in a block up to max_rank: whitened when asked and its Gram
// is known; plain (with a warning) for an expert no calibration token reached.
lowrank::Decomposition decompose_expert(const Block& b, int64_t e, const LayerInputs& in, bool whiten_it,
                                        int64_t max_rank, Result& r) {
  const auto t = Clock::now();
  const auto& grams = b.role == Role::ExpertDown ? in.gram_mid : in.gram_in;
  const auto it = grams.find(e);
  const float* W = b.W[static_cast<size_t>(e)].data();
  const bool whitened = whiten_it && it != grams.end();
  if (whiten_it && !whitened && b.role == Role::ExpertGate)  // one warning per expert
    r.warnings.push_back(str("layer ", b.layer, " expert ", e, ": no calibration token reached it; its matrices are ",
                             "truncated on the weights (plain SVD)"));
  auto d = lowrank::decompose(W, b.rows, b.cols, whitened ? it->second.data() : nullptr, max_rank, svd_options(*b.o));
  r.svd_seconds += since(t);
  return d;
}

SharedSide side_of(Role role) { return role == Role::ExpertDown ? SharedSide::Output : SharedSide::Input; }

// shared-basis: the shared side's dimension n and the other side's m of a block.
std::pair<int64_t, int64_t> shared_dims(const Block& b) {
  return b.role == Role::ExpertDown ? std::pair{b.rows, b.cols} : std::pair{b.cols, b.rows};
}
// The break-even rank of a shared-basis block: r·n + E·r·m < E·m·n.
int64_t shared_break_even(const Block& b) {
  const auto [n, m] = shared_dims(b);
  return std::max<int64_t>(1, std::min(n, b.E * m * n / (n + b.E * m)));
}

// shared-basis: the stacked decomposition of a block up to max_rank.
lowrank::Decomposition decompose_shared(const Block& b, int64_t max_rank, const std::vector<double>* gram, Result& r) {
  const auto t = Clock::now();
  std::vector<const float*> p;
  for (const auto& w : b.W) p.push_back(w.data());
  auto d = shared_decomposition(p, b.share, b.rows, b.cols, side_of(b.role), max_rank, svd_options(*b.o),
                                gram ? gram->data() : nullptr);
  r.svd_seconds += since(t);
  return d;
}

// Choices of one target from its decomposition: the grid's ranks, then dense.
// A target with the relative error of each choice beside its cost.
struct Target : RankTarget {
  TargetResult info;
  std::vector<double> rel;
};

Target choices(const std::string& name, const lowrank::Decomposition& d, double weight,
               const std::function<double(int64_t)>& params, double dense_params, int64_t steps,
               int64_t multiple) {
  Target t;
  t.name = name;
  const double energy = d.total_energy();
  for (int64_t rk : rank_grid(d.max_rank(), steps, multiple)) {
    t.ranks.push_back(rk);
    t.params.push_back(params(rk));
    t.rel.push_back(energy > 0 ? d.error2(rk) / energy : 0.0);
    t.cost.push_back(weight * t.rel.back());
  }
  t.ranks.push_back(kDense);
  t.params.push_back(dense_params);
  t.cost.push_back(0.0);
  t.rel.push_back(0.0);
  return t;
}


}  // namespace

namespace {

// Everything the job decided, shared by the analysis and the writing.
struct Job {
  const Options& o;
  const Model& m;
  Result& r;
  bool calibrated = false, grams = false, shared = false, delta = false;
  int64_t tokens = 0;
};

// The largest rank a target's decomposition needs: the requested rank, or the break-even rank.
int64_t needed_rank(const Job& j, const Block& b) {
  if (j.shared) return j.o.rank > 0 ? j.o.rank : shared_break_even(b);
  return j.o.rank > 0 ? j.o.rank : std::min({break_even_rank(b.rows, b.cols), b.rows, b.cols});
}

// A fixed-rank target (--rank): one choice.
Target fixed(const std::string& name, const lowrank::Decomposition& d, int64_t R, double params) {
  Target t;
  t.name = name;
  t.ranks = {R};
  t.params = {params};
  t.rel = {d.total_energy() > 0 ? d.error2(R) / d.total_energy() : 0.0};
  t.cost = t.rel;
  return t;
}

// The non-expert linears of layer l that --targets all-linears factors.
std::vector<Role> linear_roles(const Model& m, int64_t l) {
  std::vector<Role> out;
  for (Role r : kLinearRoles)
    if (const auto t = m.find(r, l, -1); t && t->shape.size() == 2) out.push_back(r);
  return out;
}

// A non-expert linear's decomposition up to max_rank: whitened on its input Gram when the method
// whitens and the sweep saw its inputs, else plain (with a warning when it should have whitened).
lowrank::Decomposition decompose_linear(const Job& j, const std::vector<float>& W, int64_t rows, int64_t cols,
                                        int64_t l, Role role, const LayerInputs& in, int64_t max_rank, bool warn) {
  const auto t = Clock::now();
  const auto it = in.gram_linear.find(linear_input_owner(role));
  const bool whitened = j.grams && it != in.gram_linear.end();
  if (j.grams && !whitened && warn)
    j.r.warnings.push_back(str("layer ", l, " ", role_name(role), ": no calibration inputs observed; truncated on ",
                               "the weights (plain SVD)"));
  auto d = lowrank::decompose(W.data(), rows, cols, whitened ? it->second.data() : nullptr, max_rank,
                              svd_options(j.o));
  j.r.svd_seconds += since(t);
  return d;
}

// The largest rank a non-expert linear's decomposition needs.
int64_t linear_rank(const Job& j, int64_t rows, int64_t cols, const std::string& name) {
  if (j.o.rank > std::min(rows, cols))
    fail("svd: --rank ", j.o.rank, " is above min(out, in) = ", std::min(rows, cols), " of ", name, " [", rows, ", ",
         cols, "]");
  return j.o.rank > 0 ? j.o.rank : std::min({break_even_rank(rows, cols), rows, cols});
}

// The non-expert targets of one layer (pass 1, --targets all-linears).
void analyze_linears(Job& j, int64_t l, const LayerInputs& in, std::vector<Target>& out) {
  for (Role role : linear_roles(j.m, l)) {
    const Tensor w = j.m.weight(role, l);
    const int64_t rows = w.shape[0], cols = w.shape[1];
    const std::string name = module_of(j.m, role, l, -1);
    const auto d = decompose_linear(j, w.to_f32(), rows, cols, l, role, in, linear_rank(j, rows, cols, name), true);
    auto params = [rows, cols](int64_t rk) { return static_cast<double>(rk * (rows + cols)); };
    Target t = j.o.rank > 0 ? fixed(name, d, j.o.rank, params(j.o.rank))
                            : choices(name, d, 1.0, params, static_cast<double>(rows * cols), j.o.rank_steps,
                                      j.o.rank_multiple);
    t.info = TargetResult{name, l, -1, role, rows, cols};
    out.push_back(std::move(t));
  }
}

// shared-basis, calibrated: the layer's routed-input Gram pooled over its experts (gate/up: the input
// side is the hidden side; down shares its output side, whose basis is not whitened).
std::optional<std::vector<double>> pooled_gram(const Job& j, const Block& b, const LayerInputs& in) {
  if (!j.grams || side_of(b.role) != SharedSide::Input || in.gram_in.empty()) return std::nullopt;
  std::vector<double> G(static_cast<size_t>(b.cols * b.cols), 0.0);
  for (const auto& [e, g] : in.gram_in)
    for (size_t i = 0; i < G.size(); ++i) G[i] += g[i];
  return G;
}

// The targets of one MoE layer (pass 1).
void analyze_layer(Job& j, int64_t l, const LayerInputs& in, std::vector<Target>& out) {
  const int64_t steps = j.o.rank_steps;
  for (Role role : kRoles) {
    const Block b = load_block(j.m, j.o, l, role, in, j.tokens);
    if (j.shared) {
      const auto [n, mm] = shared_dims(b);
      const int64_t E = b.E;
      const auto G = pooled_gram(j, b, in);
      const auto d = decompose_shared(b, needed_rank(j, b), G ? &*G : nullptr, j.r);
      double weight = 0;
      for (double s : b.share) weight += s;
      auto params = [n = n, mm = mm, E](int64_t rk) { return static_cast<double>(rk * n + E * rk * mm); };
      const std::string name = shared_module(j.m, role, l);
      Target t = j.o.rank > 0 ? fixed(name, d, j.o.rank, params(j.o.rank))
                              : choices(name, d, weight, params, static_cast<double>(E * b.rows * b.cols), steps,
                                        j.o.rank_multiple);
      t.info = TargetResult{name, l, -1, role, b.rows, b.cols};
      out.push_back(std::move(t));
      continue;
    }
    for (int64_t e = 0; e < b.E; ++e) {
      const auto d = decompose_expert(b, e, in, j.grams, needed_rank(j, b), j.r);
      const std::string name = module_of(j.m, role, l, e);
      auto params = [&b](int64_t rk) { return static_cast<double>(rk * (b.rows + b.cols)); };
      Target t = j.o.rank > 0 ? fixed(name, d, j.o.rank, params(j.o.rank))
                              : choices(name, d, b.share[static_cast<size_t>(e)], params,
                                        static_cast<double>(b.rows * b.cols), steps, j.o.rank_multiple);
      t.info = TargetResult{name, l, e, role, b.rows, b.cols};
      out.push_back(std::move(t));
    }
  }
}

// Planned tensors of the factored targets (the lowrank layout): replacements of "<M>.weight" and
// config.json's lowrank block.
LowRankLayout plan_layout(const Job& j, const std::vector<TargetResult>& ts, CheckpointPlan& plan) {
  LowRankLayout lay;
  lay.method = j.o.method;
  const Family& fam = j.m.family();
  std::map<std::pair<int64_t, Role>, bool> base_planned;
  for (const TargetResult& t : ts) {
    if (t.rank == kDense) continue;
    const int64_t r = t.rank;
    if (t.expert < 0 && expert_role(t.role)) {  // shared-basis: t.module is the shared module
      const bool input = side_of(t.role) == SharedSide::Input;
      const std::string shared = t.module + (input ? ".weight_v" : ".weight_u");
      for (int64_t e = 0; e < j.m.config().moe->num_experts; ++e) {
        const std::string mod = module_of(j.m, t.role, t.layer, e), wn = fam.tensor_name(t.role, t.layer, e);
        const DType dt = j.m.weight(t.role, t.layer, e).dtype;
        std::vector<TensorSpec> specs;
        if (input) specs.push_back({mod + ".weight_u", dt, {t.rows, r}});
        else specs.push_back({mod + ".weight_v", dt, {r, t.cols}});
        if (e == 0) specs.push_back({shared, dt, input ? Shape{r, t.cols} : Shape{t.rows, r}});
        plan.replace(wn, specs);
        lay.ranks[mod] = r;
        lay.aliases[mod + (input ? ".weight_v" : ".weight_u")] = shared;
      }
      continue;
    }
    const std::string wn = fam.tensor_name(t.role, t.layer, t.expert);
    const DType dt = j.m.weight(t.role, t.layer, t.expert).dtype;
    std::vector<TensorSpec> specs = {{t.module + ".weight_u", dt, {t.rows, r}}, {t.module + ".weight_v", dt, {r, t.cols}}};
    if (j.delta && expert_role(t.role)) {
      const std::string base = shared_module(j.m, t.role, t.layer) +
                               ".weight_base";
      if (!base_planned[{t.layer, t.role}]) specs.push_back({base, dt, {t.rows, t.cols}});
      base_planned[{t.layer, t.role}] = true;
      lay.aliases[t.module + ".weight_base"] = base;
    }
    plan.replace(wn, specs);
    lay.ranks[t.module] = r;
  }
  return lay;
}

// U·V (+ base) [rows, cols].
std::vector<float> form(const std::vector<float>& U, const std::vector<float>& V, int64_t rows, int64_t r, int64_t cols,
                        const std::vector<float>* base) {
  std::vector<float> W(static_cast<size_t>(rows * cols));
  Eigen::Map<RowMat>(W.data(), rows, cols) =
      Eigen::Map<const RowMat>(U.data(), rows, r) * Eigen::Map<const RowMat>(V.data(), r, cols);
  if (base)
    for (size_t i = 0; i < W.size(); ++i) W[i] += (*base)[i];
  return W;
}

// Pass 2 for one layer's non-expert targets.
void write_linears(Job& j, int64_t l, const LayerInputs& in, const std::vector<TargetResult>& ts, CheckpointWriter& w) {
  for (const auto& t : ts) {
    if (t.layer != l || expert_role(t.role) || t.rank == kDense) continue;
    const auto W = j.m.weight(t.role, l).to_f32();
    const auto d = decompose_linear(j, W, t.rows, t.cols, l, t.role, in, linear_rank(j, t.rows, t.cols, t.module), false);
    std::vector<float> U, V;
    d.factors(t.rank, U, V);
    if (j.o.materialize) {
      const auto F = form(U, V, t.rows, t.rank, t.cols, nullptr);
      w.write_f32(Slot{t.role, l, -1}, F.data(), F.size());
      continue;
    }
    w.write_f32(t.module + ".weight_u", U.data(), U.size());
    w.write_f32(t.module + ".weight_v", V.data(), V.size());
  }
}

// Pass 2 for one MoE layer: the factors of its targets (recomputed exactly as in pass 1) written.
void write_layer(Job& j, int64_t l, const LayerInputs& in, const std::vector<TargetResult>& ts, CheckpointWriter& w) {
  std::map<std::pair<Role, int64_t>, int64_t> rank;  // (role, expert or -1) → rank
  for (const auto& t : ts)
    if (t.layer == l) rank[{t.role, t.expert}] = t.rank;
  for (Role role : kRoles) {
    const Block b = load_block(j.m, j.o, l, role, in, j.tokens);
    if (j.shared) {
      const int64_t r = rank.at({role, -1});
      if (r == kDense) continue;
      const auto G = pooled_gram(j, b, in);
      const auto d = decompose_shared(b, needed_rank(j, b), G ? &*G : nullptr, j.r);
      std::vector<const float*> p;
      for (const auto& x : b.W) p.push_back(x.data());
      std::vector<float> S;
      std::vector<std::vector<float>> own;
      const SharedSide side = side_of(role);
      shared_factors(d, r, side, p, b.rows, b.cols, S, own, G ? G->data() : nullptr, j.o.damp);
      const std::string shared = shared_module(j.m, role, l);
      if (!j.o.materialize) w.write_f32(shared + (side == SharedSide::Input ? ".weight_v" : ".weight_u"), S.data(), S.size());
      for (int64_t e = 0; e < b.E; ++e) {
        const auto& x = own[static_cast<size_t>(e)];
        const std::string mod = module_of(j.m, role, l, e);
        if (j.o.materialize) {
          const auto W = side == SharedSide::Input ? form(x, S, b.rows, r, b.cols, nullptr) : form(S, x, b.rows, r, b.cols, nullptr);
          w.write_f32(Slot{role, l, e}, W.data(), W.size());
        } else {
          w.write_f32(mod + (side == SharedSide::Input ? ".weight_u" : ".weight_v"), x.data(), x.size());
        }
      }
      continue;
    }
    bool base_written = false;
    for (int64_t e = 0; e < b.E; ++e) {
      const int64_t r = rank.at({role, e});
      if (r == kDense) continue;
      const auto d = decompose_expert(b, e, in, j.grams, needed_rank(j, b), j.r);
      std::vector<float> U, V;
      d.factors(r, U, V);
      if (j.o.materialize) {
        const auto W = form(U, V, b.rows, r, b.cols, j.delta ? &b.base : nullptr);
        w.write_f32(Slot{role, l, e}, W.data(), W.size());
        continue;
      }
      const std::string mod = module_of(j.m, role, l, e);
      w.write_f32(mod + ".weight_u", U.data(), U.size());
      w.write_f32(mod + ".weight_v", V.data(), V.size());
      if (j.delta && !base_written) {
        const std::string base = shared_module(j.m, role, l) + ".weight_base";
        w.write_f32(base, b.base.data(), b.base.size());
        base_written = true;
      }
    }
  }
}

}  // namespace

Result run(const Options& o) {
  const auto t0 = Clock::now();
  if (o.method != "plain" && o.method != "whitened" && o.method != "shared-basis" && o.method != "delta")
    fail("svd: unknown --method '", o.method, "' (expected plain, whitened, shared-basis or delta)");
  if ((o.ratio > 0) == (o.rank > 0)) fail("svd: give one of --ratio P and --rank R (", o.ratio > 0 ? "not both" : "neither given", ")");
  if (o.rank == 0 && !(o.ratio > 0 && o.ratio <= 1)) fail("svd: --ratio ", o.ratio, " must be in (0, 1]");
  if (o.rank < 0) fail("svd: --rank ", o.rank, " must be positive");
  if (!o.calib_texts.empty() && !o.calib_stats.empty()) fail("svd: give --calib-text or --calib-stats, not both");
  const bool calibrated = !o.calib_texts.empty() || !o.calib_stats.empty();
  if (o.method == "whitened" && !calibrated)
    fail("svd: --method whitened needs calibration inputs (give --calib-text FILE or --calib-stats FILE)");
  if (o.rank_steps < 1) fail("svd: --rank-steps ", o.rank_steps, " must be at least 1");
  if (o.rank_multiple < 1) fail("svd: --rank-multiple ", o.rank_multiple, " must be at least 1");
  if (o.targets != "experts" && o.targets != "all-linears")
    fail("svd: --targets '", o.targets, "': expected experts or all-linears");
  const bool all = o.targets == "all-linears";
  const Model m = Model::open(o.model);
  const ModelConfig& c = m.config();
  const bool moe = c.moe && !c.moe_layer_ids().empty();
  if (!moe && !all)
    fail("svd: ", o.model, " is a dense ", c.family, " model (expected a Mixture-of-Experts model, or --targets all-linears)");
  if (!moe && (o.method == "shared-basis" || o.method == "delta"))
    fail("svd: --method ", o.method, " factors routed experts together; ", o.model, " is a dense ", c.family,
         " model (use plain or whitened)");
  if (moe && c.moe->num_experts < 2) fail("svd: ", o.model, " has one routed expert per layer (expected several)");
  if (!o.dry_run) {
    if (o.output.empty()) fail("svd: give an output directory (-o OUT)");
    check_output_free(o.output, o.overwrite);
  }
  Result r;
  r.model = o.model;
  r.output = o.output;
  r.method = o.method;
  r.ratio = o.ratio;
  r.rank = o.rank;
  r.materialized = o.materialize;
  r.calibrated = calibrated;
  Job j{o, m, r, calibrated, calibrated && o.method != "plain", o.method == "shared-basis",
        o.method == "delta"};
  const int64_t H = c.hidden_size, I = moe ? c.moe->expert_intermediate : 0, E = moe ? c.moe->num_experts : 0;
  if (o.rank > 0 && moe) {
    const int64_t lim = j.shared ? std::min(H, E * I) : std::min(H, I);
    if (o.rank > lim)
      fail("svd: --rank ", o.rank, " is above min(out, in) = ", lim, " of the expert matrices (", I, " x ", H, ")");
  }
  const auto weights = safetensors_weights(m);
  auto inputs = [&] {
    return calibrated ? std::make_unique<CalibrationInputs>(weights, o.calib_texts, o.calib_stats, o.ctx, o.chunks,
                                                            j.grams, o.device, all)
                      : nullptr;
  };
  // The targets' parameters and the delta method's bases, known before anything is measured.
  const double n_moe = moe ? static_cast<double>(c.moe_layer_ids().size()) : 0.0;
  r.target_params = n_moe * static_cast<double>(E) * static_cast<double>(3 * I * H);
  if (all)
    for (int64_t l = 0; l < c.num_layers; ++l)
      for (Role role : linear_roles(m, l)) r.target_params += static_cast<double>(m.find(role, l, -1)->numel());
  // Layers a pass visits: the MoE layers, every layer with all-linears.
  auto visits = [&](int64_t l) { return all || (moe && c.is_moe_layer(l)); };
  const double base_params = j.delta ? n_moe * static_cast<double>(3 * I * H) : 0;
  if (o.rank == 0 && o.ratio * r.target_params - base_params <= 0)
    fail("svd: --ratio ", o.ratio, " leaves no room beside the delta method's base per layer and projection (",
         static_cast<int64_t>(base_params), " parameters; expected a ratio above ", base_params / r.target_params, ")");
  // Pass 1: every target's choices.
  std::vector<Target> targets;
  {
    auto in = inputs();
    if (in) j.tokens = r.calib_tokens = in->num_tokens();
    for (int64_t l = 0; l < c.num_layers; ++l) {
      if (!visits(l)) continue;
      const LayerInputs li = in ? in->layer(l) : LayerInputs{};
      if (moe && c.is_moe_layer(l)) analyze_layer(j, l, li, targets);
      if (all) analyze_linears(j, l, li, targets);
      if (o.progress) o.progress(str("layer ", l, ": measured"));
    }
  }
  std::vector<int64_t> ranks;
  if (o.rank > 0) {
    for (const auto& t : targets) ranks.push_back(t.ranks[0]);
    r.solver = "fixed rank";
  } else {
    const double budget = o.ratio * r.target_params - base_params;
    std::vector<RankTarget> rt(targets.begin(), targets.end());
    const RankPlan p = allocate_ranks(rt, budget);
    ranks = p.rank;
    r.solver = p.solver;
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    TargetResult t = targets[i].info;
    const auto it = std::find(targets[i].ranks.begin(), targets[i].ranks.end(), ranks[i]);
    const size_t k = static_cast<size_t>(it - targets[i].ranks.begin());
    t.rank = ranks[i];
    t.params = targets[i].params[k];
    t.rel_error = targets[i].rel[k];
    r.kept_params += t.params;
    r.targets.push_back(t);
  }
  r.kept_params += base_params;
  if (r.kept_params > r.target_params && moe)
    r.warnings.push_back(str("--rank ", o.rank, " stores ", static_cast<int64_t>(r.kept_params), " parameters, more than the ",
                             static_cast<int64_t>(r.target_params), " of the dense experts (the break-even rank of a ",
                             I, " x ", H, " matrix is ", break_even_rank(I, H), ")"));
  targets.clear();
  if (o.dry_run) {
    r.seconds = since(t0);
    return r;
  }
  // Pass 2: the plan, then the factors layer by layer.
  CheckpointPlan plan(m.family(), c, &m, [&](const TensorSlot&) { return m.weight(Role::Embed).dtype; });
  nlohmann::ordered_json cj = nlohmann::ordered_json::parse(c.raw.dump());
  if (!o.materialize) cj["lowrank"] = plan_layout(j, r.targets, plan).to_json();
  CheckpointWriterOptions wo;
  wo.overwrite = o.overwrite;
  wo.max_shard_bytes = o.max_shard_bytes;
  wo.metadata = o.metadata;
  wo.metadata["moetool.svd.method"] = o.method;
  wo.metadata["moetool.svd.budget"] = o.rank > 0 ? str("rank ", o.rank) : str("ratio ", o.ratio);
  wo.metadata["moetool.svd.materialized"] = o.materialize ? "true" : "false";
  wo.metadata["moetool.svd.targets"] = o.targets;
  {
    nlohmann::ordered_json rk = nlohmann::ordered_json::object();
    for (const auto& t : r.targets) rk[t.module] = t.rank;
    wo.metadata["moetool.svd.ranks"] = rk.dump();
  }
  wo.tokenizer_dir = m.checkpoint().dir();
  CheckpointWriter w(o.output, cj, std::move(plan), wo);
  const size_t nwarn = r.warnings.size();  // pass 2 repeats pass 1's warnings
  auto in = inputs();
  w.copy_untouched(-1);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (l + 1 < c.num_layers) w.prefetch(l + 1);
    if (visits(l)) {
      const LayerInputs li = in ? in->layer(l) : LayerInputs{};
      if (moe && c.is_moe_layer(l)) write_layer(j, l, li, r.targets, w);
      if (all) write_linears(j, l, li, r.targets, w);
    }
    w.copy_untouched(l);
    if (o.progress) o.progress(str("[", l + 1, "/", c.num_layers, "] layer ", l, " written"));
  }
  r.warnings.resize(nwarn);
  r.bytes = w.bytes();
  r.files = w.finish();
  r.written = true;
  r.seconds = since(t0);
  return r;
}

}  // namespace moetool::svd
