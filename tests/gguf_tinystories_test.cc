// tests/gguf_tinystories_test.cc — the llama.cpp F16 GGUF of TinyStories-656K holds the same
// weights as the Hugging Face safetensors checkpoint: every tensor equals its HF counterpart after
// llama.cpp's rotary row permutation of q/k and rounding to F16 (norms stay F32).
#include <gtest/gtest.h>

#include "formats/gguf.h"
#include "formats/model.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

// llama.cpp's convert_hf_to_gguf permute(): rows of each head reordered from (2, d/2) to (d/2, 2).
std::vector<float> permute_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  std::vector<float> out(w.size());
  const int64_t d = rows / n_head;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < d / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t dst = h * d + i * 2 + j, src = h * d + j * (d / 2) + i;
        std::copy_n(w.begin() + src * cols, cols, out.begin() + dst * cols);
      }
  return out;
}

TEST(GGUFTinyStories, TensorsEqualSafetensorsAfterPermutationAndF16) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  auto g = GGUFFile::open(testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf"));
  Model m = Model::open(testing::shared_path("models/tinystories-656k"));
  const ModelConfig& c = m.config();
  ASSERT_EQ(g->tensors().size(), 20u);
  struct Pair {
    std::string gguf;
    Role role;
    int64_t layer;
  };
  std::vector<Pair> pairs = {{"token_embd.weight", Role::Embed, -1}, {"output_norm.weight", Role::FinalNorm, -1}};
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    pairs.push_back({b + "attn_norm.weight", Role::AttnNorm, l});
    pairs.push_back({b + "ffn_norm.weight", Role::FfnNorm, l});
    pairs.push_back({b + "attn_q.weight", Role::Q, l});
    pairs.push_back({b + "attn_k.weight", Role::K, l});
    pairs.push_back({b + "attn_v.weight", Role::V, l});
    pairs.push_back({b + "attn_output.weight", Role::O, l});
    pairs.push_back({b + "ffn_gate.weight", Role::Gate, l});
    pairs.push_back({b + "ffn_up.weight", Role::Up, l});
    pairs.push_back({b + "ffn_down.weight", Role::Down, l});
  }
  ASSERT_EQ(pairs.size(), 20u);
  for (const auto& p : pairs) {
    Tensor gt = g->tensor(p.gguf);
    Tensor ht = m.weight(p.role, p.layer);
    ASSERT_EQ(gt.shape, ht.shape) << p.gguf;
    std::vector<float> want = ht.to_f32();
    if (p.role == Role::Q) want = permute_rows(want, ht.shape[0], ht.shape[1], c.num_heads);
    if (p.role == Role::K) want = permute_rows(want, ht.shape[0], ht.shape[1], c.num_kv_heads);
    const std::vector<float> got = gt.to_f32();
    int64_t mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const float w = gt.dtype == DType::F16 ? f16_to_f32(f32_to_f16(want[i])) : want[i];
      mismatches += got[i] != w;
    }
    EXPECT_EQ(mismatches, 0) << p.gguf << " (" << dtype_name(gt.dtype) << ")";
    EXPECT_EQ(gt.dtype, ht.shape.size() == 1 ? DType::F32 : DType::F16) << p.gguf;
  }
  // Without the permutation q would not match: the comparison above can fail.
  const auto raw = m.weight(Role::Q, 0).to_f32();
  const auto gq = g->tensor("blk.0.attn_q.weight").to_f32();
  int64_t differ = 0;
  for (size_t i = 0; i < raw.size(); ++i) differ += gq[i] != f16_to_f32(f32_to_f16(raw[i]));
  EXPECT_GT(differ, 0);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_u64("llama.attention.head_count"), 8u);
  EXPECT_EQ(g->get_u64("llama.attention.head_count_kv"), 4u);
}

}  // namespace
}  // namespace moetool
