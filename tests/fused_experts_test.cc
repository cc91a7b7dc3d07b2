// tests/fused_experts_test.cc — checkpoints that store experts in the fused 3-D layout newer
// transformers versions save (mlp.experts.gate_up_proj [E, 2I, H], mlp.experts.down_proj [E, H, I])
// read exactly like the per-expert layout: no inconsistency, same weights, same logits.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/fs.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "formats/synth.h"
#include "tests/test_util.h"
#include "engine/engine.h"

namespace moetool {
namespace {

namespace fs = std::filesystem;

// Rewrites a per-expert checkpoint at `src` into the fused layout at `dst`.
void fuse(const std::string& src, const std::string& dst) {
  Model m = Model::open(src);
  const ModelConfig& c = m.config();
  const Family& f = m.family();
  fs::create_directories(dst);
  for (const char* n : {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(src + "/" + n, dst + "/" + n);
  const int64_t E = c.moe->num_experts, I = c.moe->expert_intermediate, H = c.hidden_size;
  std::vector<TensorSpec> specs;
  std::vector<std::string> skip;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const auto fn = f.fused_expert_names(l);
    specs.push_back({fn.gate_up, DType::F32, {E, 2 * I, H}});
    specs.push_back({fn.down, DType::F32, {E, H, I}});
    if (!fn.router.empty() && fn.router != f.tensor_name(Role::Router, l)) {
      specs.push_back({fn.router, DType::F32, {E, H}});
      skip.push_back(f.tensor_name(Role::Router, l));
    }
    for (int64_t e = 0; e < E; ++e)
      for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown}) skip.push_back(f.tensor_name(r, l, e));
  }
  const auto& names = m.checkpoint().names();
  for (const auto& n : names)
    if (std::find(skip.begin(), skip.end(), n) == skip.end()) specs.push_back({n, m.checkpoint().info(n).dtype, m.checkpoint().info(n).shape});
  SafetensorsWriter w(dst, specs, {});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) continue;
    const auto fn = f.fused_expert_names(l);
    Tensor gu = Tensor::zeros(DType::F32, {E, 2 * I, H}), dn = Tensor::zeros(DType::F32, {E, H, I});
    for (int64_t e = 0; e < E; ++e) {
      auto g = m.weight(Role::ExpertGate, l, e).to_f32(), u = m.weight(Role::ExpertUp, l, e).to_f32(),
           d = m.weight(Role::ExpertDown, l, e).to_f32();
      std::memcpy(gu.as<float>() + e * 2 * I * H, g.data(), g.size() * 4);
      std::memcpy(gu.as<float>() + e * 2 * I * H + I * H, u.data(), u.size() * 4);
      std::memcpy(dn.as<float>() + e * H * I, d.data(), d.size() * 4);
    }
    w.write(fn.gate_up, gu);
    w.write(fn.down, dn);
    if (!fn.router.empty() && fn.router != f.tensor_name(Role::Router, l)) w.write(fn.router, m.weight(Role::Router, l));
  }
  for (const auto& n : names)
    if (std::find(skip.begin(), skip.end(), n) == skip.end()) w.write(n, m.checkpoint().get(n));
  w.finish();
}

TEST(FusedExperts, ReadLikePerExpertLayout) {
  for (const char* family : {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"}) {
    testing::TempDir d;
    SynthOptions so;
    so.family = family;
    so.seed = 11;
    synth_model(d.file("per"), so);
    fuse(d.file("per"), d.file("fused"));
    Model a = Model::open(d.file("per")), b = Model::open(d.file("fused"));
    const auto problems = b.check();
    EXPECT_TRUE(problems.empty()) << family << ": " << (problems.empty() ? "" : problems[0].message());
    int64_t moe_layer = -1;
    for (int64_t l = 0; l < a.config().num_layers && moe_layer < 0; ++l)
      if (a.config().is_moe_layer(l)) moe_layer = l;
    ASSERT_GE(moe_layer, 0);
    EXPECT_TRUE(b.fused_experts(moe_layer)) << family;
    EXPECT_EQ(b.weight(Role::ExpertUp, moe_layer, 1).to_f32(), a.weight(Role::ExpertUp, moe_layer, 1).to_f32());
    std::vector<int32_t> toks = {1, 7, 42, 99, 3, 250, 17, 8};
    auto la = Engine(safetensors_weights(a)).logits(toks), lb = Engine(safetensors_weights(b)).logits(toks);
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i) ASSERT_EQ(la[i], lb[i]) << family << " at " << i;
  }
}

}  // namespace
}  // namespace moetool
