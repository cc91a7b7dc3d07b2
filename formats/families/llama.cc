// formats/families/llama.cc — the llama family (LlamaForCausalLM): GQA, optional head_dim, q/k/v/o
// biases when attention_bias, FFN biases when mlp_bias, linear/dynamic/llama3/yarn RoPE scaling.
#include <algorithm>

#include "formats/families/common.h"

namespace moetool {

const Family& llama_family() {
  static const fam::LlamaLikeFamily f({
      .name = "llama",
      .architecture = "LlamaForCausalLM",
      .features = fam::kMha | fam::kAttnBias | fam::kOBias | fam::kDenseFfn | fam::kMlpBias,
      .defaults = {.bos = 1, .eos = 2},  // transformers LlamaConfig
      .bias = fam::BiasKey::AttentionBias,  // LlamaAttention: q/k/v/o_proj all take bias=attention_bias
      // Llama 3.2-style: tied embeddings and llama3 RoPE scaling.
      .synth = {.rope_theta = 500000.0, .tied = true},
      // llama.cpp "llama": NORM RoPE (q/k rows permuted), llama3 scaling as the rope_freqs tensor.
      .gguf = GGUFArchDesc{.arch = "llama", .permute_qk = true, .rope_freqs_for_llama3 = true},
      // LlamaMLP: bias=mlp_bias.
      .parse_own = [](const fam::ConfigReader& r, ModelConfig& c) { c.mlp_bias = r.bool_or("mlp_bias", false); },
      .write_own = [](const ModelConfig& c, nlohmann::json& j) { j["mlp_bias"] = c.mlp_bias; },
      .synth_own =
          [](const SynthSizes& s, ModelConfig& c) {
            c.rope.type = RopeScaling::Type::Llama3;
            c.rope.factor = 8.0;
            c.rope.low_freq_factor = 1.0;
            c.rope.high_freq_factor = 4.0;
            c.rope.original_max_position_embeddings = std::max<int64_t>(1, s.max_positions / 4);
          },
  });
  return f;
}

}  // namespace moetool
