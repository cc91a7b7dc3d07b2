// formats/families/llama.cc — the llama family (LlamaForCausalLM): GQA, optional head_dim, q/k/v/o
// biases when attention_bias, FFN biases when mlp_bias, linear/dynamic/llama3/yarn RoPE scaling.
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers LlamaConfig defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 2048;
  d.rms_norm_eps = 1e-6;
  d.rope_theta = 10000.0;
  d.bos = 1;
  d.eos = 2;
  return d;
}

class Llama final : public fam::LlamaLikeFamily {
 public:
  Llama()
      : LlamaLikeFamily("llama", "LlamaForCausalLM", false,
                        fam::kMha | fam::kAttnBias | fam::kOBias | fam::kDenseFfn | fam::kMlpBias) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    // LlamaAttention: q/k/v/o_proj all take bias=attention_bias; LlamaMLP: bias=mlp_bias.
    c.attention_bias = c.o_bias = r.bool_or("attention_bias", false);
    c.mlp_bias = r.bool_or("mlp_bias", false);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(c.attention_bias == c.o_bias, "llama: q/k/v and o_proj biases come together (attention_bias)");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
    return j;
  }

  // Llama 3.2-style: tied embeddings and llama3 RoPE scaling.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.tie_word_embeddings = true;
    c.rope_theta = 500000.0;
    c.rope.type = RopeScaling::Type::Llama3;
    c.rope.factor = 8.0;
    c.rope.low_freq_factor = 1.0;
    c.rope.high_freq_factor = 4.0;
    c.rope.original_max_position_embeddings = std::max<int64_t>(1, s.max_positions / 4);
    return c;
  }

  // llama.cpp "llama": NORM RoPE (q/k rows permuted), llama3 scaling as the rope_freqs tensor.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "llama", .permute_qk = true, .rope_freqs_for_llama3 = true,
                                          .hf_model_type = "llama", .hf_architecture = "LlamaForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& llama_family() {
  static const Llama f;
  return f;
}

}  // namespace moetool
