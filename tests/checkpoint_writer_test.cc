// tests/checkpoint_writer_test.cc — the common checkpoint writer (formats/checkpoint_writer.h): an MoE
// copied through it from several threads comes back byte-identical with the same config and files; a
// pass-like edit (fewer experts, renumbered, router rows sliced) opens clean and holds the source's kept
// experts, also from a fused-expert source (itself written with plan replacements); a missing tensor
// is named at finish and leaves no output behind; an existing output is refused without overwrite.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "formats/checkpoint_writer.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

std::string synth(const TempDir& d, const std::string& name, const std::string& family, DType dt) {
  SynthOptions so;
  so.family = family;
  so.seed = 21;
  so.dtype = dt;
  synth_model(d.file(name), so);
  return d.file(name);
}

CheckpointWriterOptions options_from(const Model& src) {
  CheckpointWriterOptions o;
  o.tokenizer_dir = src.checkpoint().dir();
  o.metadata["moetool.test"] = "checkpoint_writer";
  return o;
}

std::string bytes_of(const Tensor& t) { return std::string(reinterpret_cast<const char*>(t.data), t.nbytes()); }

bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && bytes_of(a) == bytes_of(b);
}

// Writes `src` with only the routed experts `kept` (renumbered 0, 1, ...) in every MoE layer: the
// experts copied, the router's rows sliced, everything else copied untouched.
void keep_experts(const Model& src, const std::string& out, const std::vector<int64_t>& kept) {
  ModelConfig cfg = src.config();
  cfg.moe->num_experts = static_cast<int64_t>(kept.size());
  cfg.moe->top_k = std::min<int64_t>(cfg.moe->top_k, cfg.moe->num_experts);
  const Family& fam = src.family();
  CheckpointWriter w(out, fam.to_config_json(cfg), CheckpointPlan(fam, cfg, &src, {}), options_from(src));
  w.copy_untouched(-1);
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (cfg.is_moe_layer(l)) {
      for (size_t i = 0; i < kept.size(); ++i)
        for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown})
          w.copy({r, l, static_cast<int64_t>(i)}, {r, l, kept[i]});
      const std::vector<float> all = src.weight(Role::Router, l).to_f32();  // [E, H]
      const int64_t H = cfg.hidden_size;
      std::vector<float> rows;
      for (int64_t e : kept) rows.insert(rows.end(), all.begin() + e * H, all.begin() + (e + 1) * H);
      w.write_f32({Role::Router, l}, rows.data(), rows.size());
    }
    w.copy_untouched(l);
  }
  w.finish();
}

void expect_kept(const Model& src, const std::string& out, const std::vector<int64_t>& kept) {
  Model m = Model::open(out);
  const auto problems = m.check();
  EXPECT_TRUE(problems.empty()) << problems.front().message();
  EXPECT_EQ(m.config().moe->num_experts, static_cast<int64_t>(kept.size()));
  for (int64_t l = 0; l < m.config().num_layers; ++l) {
    EXPECT_TRUE(same_tensor(m.weight(Role::Q, l), src.weight(Role::Q, l)));
    if (!m.config().is_moe_layer(l)) continue;
    const int64_t H = m.config().hidden_size;
    const std::vector<float> r = m.weight(Role::Router, l).to_f32(), all = src.weight(Role::Router, l).to_f32();
    EXPECT_EQ(m.weight(Role::Router, l).dtype, src.weight(Role::Router, l).dtype);
    for (size_t i = 0; i < kept.size(); ++i) {
      EXPECT_TRUE(std::equal(r.begin() + static_cast<int64_t>(i) * H, r.begin() + static_cast<int64_t>(i + 1) * H,
                             all.begin() + kept[i] * H))
          << "router row " << i << " of layer " << l;
      for (Role ro : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown})
        EXPECT_TRUE(same_tensor(m.weight(ro, l, static_cast<int64_t>(i)), src.weight(ro, l, kept[i])))
            << role_name(ro) << " " << i << " of layer " << l;
    }
  }
}

TEST(CheckpointWriter, MoeRoundTripFromThreadsIsByteIdentical) {
  TempDir d;
  const std::string in = synth(d, "src", "qwen2_moe", DType::BF16);
  Model src = Model::open(in);
  CheckpointWriterOptions o = options_from(src);
  o.max_shard_bytes = 200000;
  CheckpointWriter w(d.file("out"), src.checkpoint().config_json(),
                     CheckpointPlan(src.family(), src.config(), &src, {}), o);
  const std::vector<PlannedTensor> planned = w.plan().tensors();
  std::vector<std::thread> threads;
  for (size_t k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (size_t i = k; i < planned.size(); i += 4) w.copy(planned[i].slot);
    });
  for (auto& t : threads) t.join();
  const std::vector<std::string> files = w.finish();

  ASSERT_GE(files.size(), 6u);
  EXPECT_EQ(std::vector<std::string>(files.begin(), files.begin() + 4),
            (std::vector<std::string>{"config.json", "special_tokens_map.json", "tokenizer.json",
                                      "tokenizer_config.json"}));
  EXPECT_EQ(files.back(), "model.safetensors.index.json");
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(read_file(d.file("out/" + files[i])), read_file(in + "/" + files[i]));
  Model back = Model::open(d.file("out"));
  EXPECT_TRUE(back.check().empty());
  EXPECT_EQ(back.checkpoint().names().size(), src.checkpoint().names().size());
  for (const auto& n : src.checkpoint().names())
    EXPECT_TRUE(same_tensor(back.checkpoint().get(n), src.checkpoint().get(n))) << n;
  EXPECT_EQ(back.checkpoint().files().front()->metadata().at("moetool.test"), "checkpoint_writer");
  EXPECT_EQ(w.bytes(), src.checkpoint().total_bytes());
}

TEST(CheckpointWriter, FewerExpertsOpenCleanWithTheKeptOnes) {
  TempDir d;
  Model src = Model::open(synth(d, "src", "mixtral", DType::BF16));
  ASSERT_EQ(src.config().moe->num_experts, 4);
  keep_experts(src, d.file("kept"), {3, 1});
  expect_kept(src, d.file("kept"), {3, 1});
}

TEST(CheckpointWriter, FromFusedExpertLayout) {
  TempDir d;
  Model per = Model::open(synth(d, "per", "mixtral", DType::F32));
  const ModelConfig& c = per.config();
  const Family& fam = per.family();
  const int64_t E = c.moe->num_experts, I = c.moe->expert_intermediate, H = c.hidden_size;
  {  // The fused layout: each layer's experts as gate_up [E, 2I, H] and down [E, H, I].
    CheckpointPlan plan(fam, c, &per, {});
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const FusedExpertNames fn = fam.fused_expert_names(l);
      plan.replace(fam.tensor_name(Role::ExpertGate, l, 0),
                   {{fn.gate_up, DType::F32, {E, 2 * I, H}}, {fn.down, DType::F32, {E, H, I}}});
      for (int64_t e = 0; e < E; ++e)
        for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown})
          if (e > 0 || r != Role::ExpertGate) plan.replace(fam.tensor_name(r, l, e), {});
      plan.replace(fam.tensor_name(Role::Router, l), {{fn.router, DType::F32, {E, H}}});
    }
    CheckpointWriter w(d.file("fused"), per.checkpoint().config_json(), std::move(plan), options_from(per));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const FusedExpertNames fn = fam.fused_expert_names(l);
      std::vector<float> gu, dn;
      for (int64_t e = 0; e < E; ++e) {
        for (Role r : {Role::ExpertGate, Role::ExpertUp}) {
          const auto v = per.weight(r, l, e).to_f32();
          gu.insert(gu.end(), v.begin(), v.end());
        }
        const auto v = per.weight(Role::ExpertDown, l, e).to_f32();
        dn.insert(dn.end(), v.begin(), v.end());
      }
      w.write(fn.gate_up, gu.data(), gu.size() * 4);
      w.write(fn.down, dn.data(), dn.size() * 4);
      const Tensor router = per.weight(Role::Router, l);
      w.write(fn.router, router.data, router.nbytes());
      w.copy_untouched(l);
    }
    w.copy_untouched(-1);
    w.finish();
  }
  Model fused = Model::open(d.file("fused"));
  ASSERT_TRUE(fused.fused_experts(0));
  EXPECT_TRUE(fused.check().empty());
  keep_experts(fused, d.file("kept"), {0, 2, 3});
  expect_kept(per, d.file("kept"), {0, 2, 3});
}

TEST(CheckpointWriter, MissingTensorIsNamedAndNothingIsLeft) {
  TempDir d;
  Model src = Model::open(synth(d, "src", "olmoe", DType::F32));
  const std::string skipped = src.family().tensor_name(Role::ExpertUp, 1, 2);
  const std::string msg = testing::error_of([&] {
    CheckpointWriter w(d.file("out"), src.checkpoint().config_json(),
                       CheckpointPlan(src.family(), src.config(), &src, {}), options_from(src));
    for (const auto& p : w.plan().tensors())
      if (p.spec.name != skipped) w.copy(p.slot);
    w.finish();
  });
  EXPECT_NE(msg.find("'" + skipped + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("never written"), std::string::npos) << msg;
  // More experts than the source has: the first one it cannot provide is named.
  ModelConfig more = src.config();
  more.moe->num_experts += 1;
  const std::string msg2 = testing::error_of([&] {
    CheckpointWriter w(d.file("out"), src.family().to_config_json(more),
                       CheckpointPlan(src.family(), more, &src, [](const TensorSlot&) { return DType::F32; }),
                       options_from(src));
    for (int64_t l = -1; l < more.num_layers; ++l) w.copy_untouched(l);
    w.finish();
  });
  EXPECT_NE(msg2.find("'" + src.family().tensor_name(Role::Router, 0) + "'"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("the source's has shape"), std::string::npos) << msg2;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d.path())) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"src"});
}

TEST(CheckpointWriter, ExistingOutputIsRefusedWithoutOverwrite) {
  TempDir d;
  Model src = Model::open(synth(d, "src", "llama", DType::F32));
  fs::create_directories(d.file("out"));
  testing::write_bytes(d.file("out/keep.txt"), "mine");
  auto write = [&](bool overwrite) {
    CheckpointWriterOptions o = options_from(src);
    o.overwrite = overwrite;
    CheckpointWriter w(d.file("out"), src.checkpoint().config_json(),
                       CheckpointPlan(src.family(), src.config(), &src, {}), o);
    for (int64_t l = -1; l < src.config().num_layers; ++l) w.copy_untouched(l);
    w.finish();
  };
  const std::string msg = testing::error_of([&] { write(false); });
  EXPECT_NE(msg.find("output exists"), std::string::npos) << msg;
  EXPECT_EQ(read_file(d.file("out/keep.txt")), "mine");
  write(true);
  EXPECT_FALSE(fs::exists(d.file("out/keep.txt")));
  EXPECT_TRUE(Model::open(d.file("out")).check().empty());
}

}  // namespace
}  // namespace moetool
