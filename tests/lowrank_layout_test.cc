// tests/lowrank_layout_test.cc — the low-rank layout (formats/lowrank.h) and its matrix
// (kernels/linear_lowrank.h): the factored product equals U·(V·x) in float64 within the textbook
// dot-product error bound (f32 and bf16 factors, with and without base and beta); a synthetic
// Mixtral whose experts are stored factored (a shared V, a shared base, an own base, bf16 factors)
// runs in the engine with the logits of the same model stored dense, is consistent, and inspect
// reports its ranks and its smaller stored parameter count; inconsistent layouts fail in one line
// naming the tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "engine/engine.h"
#include "formats/inspect.h"
#include "formats/lowrank.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "kernels/linear_lowrank.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::error_of;
using testing::random_normal;
using testing::TempDir;

Tensor make_tensor(const std::vector<float>& v, const Shape& s, DType dt = DType::F32) {
  Tensor t = Tensor::zeros(DType::F32, s);
  std::memcpy(t.data, v.data(), v.size() * sizeof(float));
  return dt == DType::F32 ? t : t.to(dt);
}

std::vector<float> scaled(std::vector<float> v, float a) {
  for (float& x : v) x *= a;
  return v;
}

// ---- (1) the factored product against float64 ----

// Y = (X·Vᵀ)·Uᵀ (+ X·baseᵀ) (+ beta·Y) in float32 BLAS against the float64 product of the same
// (rounded) values. Bound (Higham, Accuracy and Stability §3.1): a float32 dot product of length k
// in any summation order, with or without FMA, errs by at most γ_k·Σ|x_i||y_i|, γ_k = k·u/(1−k·u),
// u = 2⁻²⁴. T = X·Vᵀ errs by γ_cols·|X||V|ᵀ; T·Uᵀ adds γ_r·|T||U|ᵀ; base and beta·Y add one rounding
// each: |Y − Y64| ≤ γ_{cols+r+3}·(|U|(|V||x|) + |base||x| + |beta·Y0|), checked per element.
TEST(LowRankLayout, MatmulEqualsFloat64Product) {
  const int64_t R = 48, C = 40, r = 7;
  for (DType dt : {DType::F32, DType::BF16})
    for (bool with_base : {false, true})
      for (float beta : {0.0f, 0.75f})
        for (int64_t n : {1, 5, 33}) {
          const std::string label = str(dtype_name(dt), with_base ? " base" : "", " beta=", beta, " n=", n);
          Tensor U = make_tensor(random_normal(size_t(R * r), 1), {R, r}, dt);
          Tensor V = make_tensor(scaled(random_normal(size_t(r * C), 2), 0.3f), {r, C}, dt);
          std::optional<Tensor> B;
          if (with_base) B = make_tensor(scaled(random_normal(size_t(R * C), 3), 0.1f), {R, C}, dt);
          auto m = make_lowrank_matrix(U, V, B, "test");
          ASSERT_EQ(m->rows(), R);
          ASSERT_EQ(m->cols(), C);
          EXPECT_EQ(m->storage(), with_base ? "lowrank(r=7)+base" : "lowrank(r=7)");
          EXPECT_EQ(m->stored_bytes(), U.nbytes() + V.nbytes() + (B ? B->nbytes() : 0));
          ASSERT_NE(m->lowrank(), nullptr);
          EXPECT_EQ(m->lowrank()->rank, r);
          EXPECT_EQ(m->lowrank()->base != nullptr, with_base);
          if (dt == DType::F32) EXPECT_EQ(static_cast<const void*>(m->lowrank()->U), U.data) << "F32 used in place";
          const auto u = U.to_f32(), v = V.to_f32(), b = B ? B->to_f32() : std::vector<float>();
          const auto X = random_normal(size_t(n * C), 4 + uint64_t(n));
          const auto Y0 = random_normal(size_t(n * R), 5);
          std::vector<float> Y = Y0;
          m->matmul(X.data(), n, Y.data(), beta);
          const double gamma = double(C + r + 3) * std::ldexp(1.0, -24) * 1.001;
          for (int64_t t = 0; t < n; ++t) {
            std::vector<double> T(static_cast<size_t>(r)), Ta(static_cast<size_t>(r));
            for (int64_t k = 0; k < r; ++k)
              for (int64_t j = 0; j < C; ++j) {
                T[size_t(k)] += double(v[size_t(k * C + j)]) * X[size_t(t * C + j)];
                Ta[size_t(k)] += std::abs(double(v[size_t(k * C + j)]) * X[size_t(t * C + j)]);
              }
            for (int64_t i = 0; i < R; ++i) {
              double y = beta * double(Y0[size_t(t * R + i)]), a = std::abs(y);
              for (int64_t k = 0; k < r; ++k) {
                y += double(u[size_t(i * r + k)]) * T[size_t(k)];
                a += std::abs(double(u[size_t(i * r + k)])) * Ta[size_t(k)];
              }
              if (with_base)
                for (int64_t j = 0; j < C; ++j) {
                  y += double(b[size_t(i * C + j)]) * X[size_t(t * C + j)];
                  a += std::abs(double(b[size_t(i * C + j)]) * X[size_t(t * C + j)]);
                }
              ASSERT_LE(std::abs(Y[size_t(t * R + i)] - y), gamma * a) << label << " at " << t << "," << i;
            }
          }
          // to_dense: U·V (+ base), each element a length-r dot product (+1 for the base).
          std::vector<float> W(size_t(R * C));
          m->to_dense(W.data());
          for (int64_t i = 0; i < R; ++i)
            for (int64_t j = 0; j < C; ++j) {
              double w = with_base ? b[size_t(i * C + j)] : 0.0, a = std::abs(w);
              for (int64_t k = 0; k < r; ++k) {
                w += double(u[size_t(i * r + k)]) * v[size_t(k * C + j)];
                a += std::abs(double(u[size_t(i * r + k)]) * v[size_t(k * C + j)]);
              }
              ASSERT_LE(std::abs(W[size_t(i * C + j)] - w), double(r + 2) * std::ldexp(1.0, -24) * 1.001 * a) << label;
            }
        }
}

TEST(LowRankLayout, MatrixRejectsMismatchedFactors) {
  Tensor U = make_tensor(random_normal(8 * 3, 1), {8, 3}), V = make_tensor(random_normal(4 * 6, 2), {4, 6});
  EXPECT_NE(error_of([&] { make_lowrank_matrix(U, V, std::nullopt, "m.w1"); }).find("m.w1"), std::string::npos);
  Tensor V3 = make_tensor(random_normal(3 * 6, 2), {3, 6});
  Tensor B = make_tensor(random_normal(6 * 8, 3), {6, 8});
  EXPECT_NE(error_of([&] { make_lowrank_matrix(U, V3, B, "m.w2"); }).find("base shape [6, 8], expected [8, 6]"),
            std::string::npos);
}

TEST(LowRankLayout, NamesAndConfigBlock) {
  EXPECT_EQ(shared_module_name("model.layers.0.block_sparse_moe.experts.0.w1",
                               "model.layers.0.block_sparse_moe.experts.1.w1"),
            "model.layers.0.block_sparse_moe.experts.shared.w1");
  EXPECT_EQ(shared_module_name("a.mlp.experts.10.down_proj", "a.mlp.experts.7.down_proj"),
            "a.mlp.experts.shared.down_proj");
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"x.0.w1", "x.0.w1"}, {"x.0.w1", "x.1.w2"}, {"x.0.w1", "x.0.w1.y"}})
    EXPECT_NE(error_of([&] { shared_module_name(a, b); }).find("exactly one"), std::string::npos) << a << " " << b;
  EXPECT_EQ(lowrank_tensor_names("m"), (std::vector<std::string>{"m.weight_u", "m.weight_v", "m.weight_base"}));

  LowRankLayout l;
  l.method = "shared-basis";
  l.ranks = {{"m.experts.0.w1", 4}, {"m.experts.1.w1", 5}};
  l.aliases = {{"m.experts.0.w1.weight_v", "m.experts.shared.w1.weight_v"}};
  const auto j = nlohmann::json::parse(l.to_json().dump());
  EXPECT_EQ(j["format"], "moetool.lowrank/1");
  const LowRankLayout back = LowRankLayout::from_json(j, "cfg");
  EXPECT_EQ(back.method, l.method);
  EXPECT_EQ(back.ranks, l.ranks);
  EXPECT_EQ(back.aliases, l.aliases);
  EXPECT_FALSE(lowrank_layout_of(nlohmann::json::object(), "cfg"));
  auto bad = j;
  bad["format"] = "moetool.lowrank/9";
  EXPECT_NE(error_of([&] { LowRankLayout::from_json(bad, "cfg"); }).find("moetool.lowrank/9"), std::string::npos);
  bad = j;
  bad["ranks"]["m.experts.0.w1"] = 0;
  EXPECT_NE(error_of([&] { LowRankLayout::from_json(bad, "cfg"); }).find("positive integer"), std::string::npos);
  bad = j;
  bad["aliases"]["m.experts.7.w1.weight_v"] = "x";
  EXPECT_NE(error_of([&] { LowRankLayout::from_json(bad, "cfg"); }).find("m.experts.7.w1.weight_v"), std::string::npos);
}

// ---- (2) a whole model stored factored ----

// A checkpoint: its tensors and config.json.
struct Ckpt {
  std::map<std::string, Tensor> tensors;
  nlohmann::json config;
};

void write_ckpt(const std::string& dir, const Ckpt& c) {
  std::filesystem::create_directories(dir);
  std::vector<TensorSpec> specs;
  for (const auto& [n, t] : c.tensors) specs.push_back({n, t.dtype, t.shape});
  SafetensorsWriter w(dir, specs, {{"format", "pt"}});
  for (const auto& [n, t] : c.tensors) w.write(n, t);
  w.finish();
  testing::write_bytes(dir + "/config.json", c.config.dump(2));
}

// The source Mixtral's experts factored (checkpoint `lowrank`) and the same weights stored dense
// (`dense`: W = U·V (+ base) in float64, rounded to f32). Ranks: gate 12, up 16, down 20. Layer 0's
// gate V is shared by its experts; layer 1's down base is shared (delta); layer 2 expert 1's up has a
// base of its own; layer 2 expert 0's down factors are bf16.
struct Factored {
  Ckpt lowrank, dense;
  int64_t modules = 0, dense_elems = 0;       // factored modules, their rows·cols
  std::map<std::string, int64_t> stored;      // distinct stored factor tensors → elements
  std::string own_base_module, bf16_module, shared_v;
};

Factored factor_model(const Model& src) {
  Factored f;
  const ModelConfig& c = src.config();
  const Family& fam = src.family();
  for (const auto& n : src.checkpoint().names()) f.lowrank.tensors[n] = f.dense.tensors[n] = src.checkpoint().get(n);
  f.lowrank.config = f.dense.config = src.checkpoint().config_json();
  LowRankLayout layout;
  layout.method = "whitened";
  const std::map<Role, int64_t> rank = {{Role::ExpertGate, 12}, {Role::ExpertUp, 16}, {Role::ExpertDown, 20}};
  uint64_t seed = 100;
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (const auto& [role, r] : rank) {
      const auto module_of = [&](int64_t e) { return *gptq_module_of(fam.tensor_name(role, l, e)); };
      const std::string shared = shared_module_name(module_of(0), module_of(1));
      std::vector<float> shared_v, shared_base;
      for (int64_t e = 0; e < c.moe->num_experts; ++e) {
        const std::string wn = fam.tensor_name(role, l, e), m = module_of(e);
        const Tensor w0 = src.weight(role, l, e);
        const int64_t R = w0.shape[0], C = w0.shape[1];
        double ss = 0;
        for (float x : w0.to_f32()) ss += double(x) * x;
        const float sd = float(std::sqrt(ss / double(R * C)));
        const bool share_v = l == 0 && role == Role::ExpertGate, share_base = l == 1 && role == Role::ExpertDown;
        const bool own_base = l == 2 && role == Role::ExpertUp && e == 1;
        const bool bf16 = l == 2 && role == Role::ExpertDown && e == 0;
        const DType dt = bf16 ? DType::BF16 : DType::F32;
        const float delta = share_base || own_base ? 0.3f : 1.0f;
        const float v_scale = sd * delta / std::sqrt(float(r));  // W = U·V with about the source's spread
        Tensor U = make_tensor(random_normal(size_t(R * r), ++seed), {R, r}, dt);
        if (share_v && shared_v.empty()) shared_v = scaled(random_normal(size_t(r * C), ++seed), v_scale);
        Tensor V = make_tensor(share_v ? shared_v : scaled(random_normal(size_t(r * C), ++seed), v_scale), {r, C}, dt);
        if (share_base && shared_base.empty()) shared_base = scaled(random_normal(size_t(R * C), ++seed), sd);
        std::optional<Tensor> B;
        if (share_base) B = make_tensor(shared_base, {R, C});
        if (own_base) B = make_tensor(scaled(random_normal(size_t(R * C), ++seed), sd), {R, C});
        // Stored names: own, or the shared one (written once) with an alias.
        auto store = [&](const std::string& own, const std::string& shared_name, bool is_shared, const Tensor& t) {
          const std::string name = is_shared ? shared_name : own;
          if (is_shared) layout.aliases[own] = shared_name;
          f.lowrank.tensors[name] = t;
          f.stored[name] = t.numel();
        };
        const auto names = lowrank_tensor_names(m);
        store(names[0], "", false, U);
        store(names[1], shared + ".weight_v", share_v, V);
        if (B) store(names[2], shared + ".weight_base", share_base, *B);
        f.lowrank.tensors.erase(wn);
        layout.ranks[m] = r;
        ++f.modules;
        f.dense_elems += R * C;
        if (own_base) f.own_base_module = m;
        if (bf16) f.bf16_module = m;
        if (share_v) f.shared_v = shared + ".weight_v";
        // The dense twin, from the stored (rounded) values in float64.
        const auto u = U.to_f32(), v = V.to_f32(), b = B ? B->to_f32() : std::vector<float>();
        std::vector<float> W(size_t(R * C));
        for (int64_t i = 0; i < R; ++i)
          for (int64_t j = 0; j < C; ++j) {
            double s = B ? b[size_t(i * C + j)] : 0.0;
            for (int64_t k = 0; k < r; ++k) s += double(u[size_t(i * r + k)]) * v[size_t(k * C + j)];
            W[size_t(i * C + j)] = float(s);
          }
        f.dense.tensors[wn] = make_tensor(W, {R, C});
      }
    }
  f.lowrank.config["lowrank"] = nlohmann::json::parse(layout.to_json().dump());
  return f;
}

struct FactoredFixture {
  TempDir td;
  Factored f;
  std::string a, b;
  FactoredFixture() {
    const Model src = Model::open(testing::synth_in(td, "src", "mixtral", 11, "tiny"));
    f = factor_model(src);
    a = td.file("lowrank");
    b = td.file("dense");
    write_ckpt(a, f.lowrank);
    write_ckpt(b, f.dense);
  }
};

// Logits of the factored and the dense checkpoint agree to float32 rounding: every expert linear
// differs between them only by rounding (B's W rounded once to f32; A's two GEMMs by at most
// γ_{cols+r+1}·|U||V||x| ≈ 5e-6 of the magnitudes, per the bound above, typically √k·u ≈ 5e-7), and
// the rest of the network is identical, so the logits of three layers differ by a few 1e-7 of their
// scale (measured: 4.7e-7). Tolerance 2e-5 · max |logit|: the worst-case per-linear bound with room
// for its growth over three layers, yet far below what a wrong factor, base or alias gives (O(1)),
// or a near-tie flipping a routing decision.
TEST(LowRankLayout, EngineRunsFactoredCheckpointLikeDenseTwin) {
  FactoredFixture fx;
  const Model A = Model::open(fx.a), B = Model::open(fx.b);
  for (const auto& inc : A.check()) ADD_FAILURE() << "A: " << inc.message();
  for (const auto& inc : B.check()) ADD_FAILURE() << "B: " << inc.message();
  ASSERT_TRUE(A.lowrank_layout());
  EXPECT_FALSE(B.lowrank_layout());

  // Role lookups: factored modules resolve (aliases included), weight() refuses them.
  const auto lr0 = A.lowrank(Role::ExpertGate, 0, 2);
  ASSERT_TRUE(lr0);
  EXPECT_EQ(lr0->rank, 12);
  EXPECT_EQ(lr0->v, fx.f.shared_v);
  EXPECT_EQ(lr0->base, "");
  EXPECT_FALSE(A.lowrank(Role::Q, 0));
  const std::string msg = error_of([&] { A.weight(Role::ExpertUp, 1, 3); });
  EXPECT_NE(msg.find("model.layers.1.block_sparse_moe.experts.3.w3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stored low-rank"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos);

  const auto wa = open_weights(fx.a), wb = open_weights(fx.b);
  EXPECT_TRUE(wa->has(Role::ExpertDown, 2, 3));
  EXPECT_EQ(wa->matrix(Role::ExpertDown, 1, 0)->storage(), "lowrank(r=20)+base");
  EXPECT_EQ(wa->matrix(Role::ExpertUp, 2, 1)->storage(), "lowrank(r=16)+base");
  EXPECT_EQ(wa->matrix(Role::ExpertDown, 2, 0)->storage(), "lowrank(r=20)");
  EXPECT_EQ(wa->matrix(Role::ExpertGate, 0, 0)->storage(), "lowrank(r=12)");
  EXPECT_EQ(wa->matrix(Role::Q, 0)->storage(), "F32");

  const auto toks = testing::random_tokens(24, A.config().vocab_size, 5);
  const auto la = Engine(wa).logits(toks), lb = Engine(wb).logits(toks);
  ASSERT_EQ(la.size(), lb.size());
  double scale = 0, diff = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    scale = std::max(scale, double(std::abs(lb[i])));
    diff = std::max(diff, double(std::abs(la[i] - lb[i])));
  }
  EXPECT_GT(scale, 1e-3);
  EXPECT_LE(diff, 2e-5 * scale) << "max |Δlogit| " << diff << " of " << scale;

  // inspect: ranks, and the parameters really stored (a shared tensor once) below the dense twin's.
  const InspectReport ra = inspect_model(A), rb = inspect_model(B);
  EXPECT_TRUE(ra.inconsistencies.empty());
  ASSERT_TRUE(ra.lowrank);
  EXPECT_FALSE(rb.lowrank);
  EXPECT_EQ(ra.lowrank->modules, fx.f.modules);
  EXPECT_EQ(ra.lowrank->rank_min, 12);
  EXPECT_EQ(ra.lowrank->rank_median, 16);
  EXPECT_EQ(ra.lowrank->rank_max, 20);
  EXPECT_EQ(ra.lowrank->method, "whitened");
  EXPECT_EQ(ra.lowrank->shared_tensors, 2);  // layer 0's gate V, layer 1's down base
  EXPECT_EQ(ra.lowrank->with_base, A.config().moe->num_experts + 1);
  int64_t stored = 0;
  for (const auto& [n, k] : fx.f.stored) stored += k;
  EXPECT_EQ(ra.params_total, rb.params_total);
  EXPECT_EQ(rb.params_stored, rb.params_total);
  EXPECT_EQ(ra.params_stored, rb.params_total - fx.f.dense_elems + stored);
  EXPECT_LT(ra.params_stored, rb.params_stored);
  const auto j = ra.to_json();
  EXPECT_EQ(j["lowrank"]["rank_median"], 16);
  EXPECT_EQ(j["params_stored"], ra.params_stored);
  EXPECT_NE(ra.to_text().find("rank min 12 / median 16 / max 20"), std::string::npos) << ra.to_text();
  const testing::RunResult cli = testing::run_moetool({"inspect", fx.a, "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const auto cj = nlohmann::json::parse(cli.out);
  EXPECT_TRUE(cj["consistent"].get<bool>()) << cli.out;
  EXPECT_EQ(cj["params_stored"], ra.params_stored);
  EXPECT_EQ(cj["lowrank"]["modules"], fx.f.modules);
}

// The CUDA engine multiplies through the factors (engine/gpu_ops.cc): float32 like the CPU engine;
// bf16 within the bf16 tolerance of the CUDA family tests.
TEST(LowRankLayout, CudaEngineRunsFactoredCheckpoint) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  FactoredFixture fx;
  const auto wa = open_weights(fx.a);
  const auto toks = testing::random_tokens(24, wa->config().vocab_size, 5);
  const auto cpu = Engine(wa).logits(toks);
  for (Precision p : {Precision::F32, Precision::BF16}) {
    const auto gpu = Engine(wa, true, DeviceOptions{Device::Cuda, p}).logits(toks);
    ASSERT_EQ(gpu.size(), cpu.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      num += (double(gpu[i]) - cpu[i]) * (double(gpu[i]) - cpu[i]);
      den += double(cpu[i]) * cpu[i];
    }
    EXPECT_LE(num / den, p == Precision::F32 ? 1e-8 : 5e-3) << precision_name(p);
  }
}

// ---- (3) inconsistent layouts ----

// The message of the first failing step on checkpoint `dir` — Model::lowrank of the module, then
// WeightSource::matrix — which must agree, name `tensor` and be one line; check() reports it too.
void expect_bad(const std::string& dir, Role role, int64_t l, int64_t e, const std::string& tensor,
                const std::string& what) {
  const Model m = Model::open(dir);
  const std::string a = error_of([&] { m.lowrank(role, l, e); });
  EXPECT_NE(a.find(tensor), std::string::npos) << a;
  EXPECT_NE(a.find(what), std::string::npos) << a;
  EXPECT_EQ(a.find('\n'), std::string::npos) << a;
  EXPECT_NE(a.find(dir), std::string::npos) << a;
  EXPECT_EQ(error_of([&] { open_weights(dir)->matrix(role, l, e); }), a);
  bool reported = false;
  for (const auto& inc : m.check()) reported |= inc.message().find(a) != std::string::npos;
  EXPECT_TRUE(reported) << a;
}

TEST(LowRankLayout, BadLayoutsFailInOneLineNamingTheTensor) {
  TempDir td;
  const Model src = Model::open(testing::synth_in(td, "src", "mixtral", 11, "tiny"));
  const Factored good = factor_model(src);
  const std::string m = "model.layers.1.block_sparse_moe.experts.2.w1";
  int k = 0;
  auto variant = [&](const std::function<void(Ckpt&)>& edit) {
    Ckpt c = good.lowrank;
    edit(c);
    const std::string dir = td.file("bad" + std::to_string(++k));
    write_ckpt(dir, c);
    return dir;
  };
  // A missing weight_v.
  expect_bad(variant([&](Ckpt& c) { c.tensors.erase(m + ".weight_v"); }), Role::ExpertGate, 1, 2, m + ".weight_v",
             "is missing");
  // A rank that does not fit the stored factors.
  expect_bad(variant([&](Ckpt& c) { c.config["lowrank"]["ranks"][m] = 13; }), Role::ExpertGate, 1, 2,
             m + ".weight_u", "expected shape [64, 13] (rank 13), got [64, 12]");
  // An alias to a tensor that is not stored.
  expect_bad(variant([&](Ckpt& c) {
               c.tensors.erase(m + ".weight_v");
               c.config["lowrank"]["aliases"][m + ".weight_v"] = "model.layers.1.nowhere.weight_v";
             }),
             Role::ExpertGate, 1, 2, "model.layers.1.nowhere.weight_v", "which is missing");
  // Both the dense weight and its factors.
  expect_bad(variant([&](Ckpt& c) { c.tensors[m + ".weight"] = good.dense.tensors.at(m + ".weight"); }),
             Role::ExpertGate, 1, 2, m + ".weight'", "is stored although");
  // A rank above min(out, in).
  expect_bad(variant([&](Ckpt& c) { c.config["lowrank"]["ranks"][m] = 65; }), Role::ExpertGate, 1, 2, m,
             "rank 65 exceeds min(out, in) = 64");
  // A non-float factor.
  expect_bad(variant([&](Ckpt& c) {
               Tensor t = Tensor::zeros(DType::I32, c.tensors.at(m + ".weight_u").shape);
               c.tensors[m + ".weight_u"] = t;
             }),
             Role::ExpertGate, 1, 2, m + ".weight_u", "expected a float dtype, got I32");
  // A ranks entry for a module the config does not have.
  const Model extra = Model::open(variant([&](Ckpt& c) { c.config["lowrank"]["ranks"]["model.layers.9.x"] = 4; }));
  bool seen = false;
  for (const auto& inc : extra.check()) seen |= inc.tensor == "model.layers.9.x.weight";
  EXPECT_TRUE(seen);
}

}  // namespace
}  // namespace moetool
