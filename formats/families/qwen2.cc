// formats/families/qwen2.cc — the qwen2 family (Qwen2ForCausalLM): q/k/v biases always (o_proj none),
// a sliding window only when use_sliding_window is true and then only on layers >= max_window_layers
// (or as layer_types says).
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers Qwen2Config defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 32768;
  d.rms_norm_eps = 1e-6;
  d.rope_theta = 10000.0;
  d.kv_heads = 32;
  return d;
}

class Qwen2 final : public fam::LlamaLikeFamily {
 public:
  Qwen2() : LlamaLikeFamily("qwen2", "Qwen2ForCausalLM", false, fam::kMha | fam::kAttnBias | fam::kDenseFfn) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    c.attention_bias = true;  // Qwen2Attention: q/k/v_proj bias=True, o_proj bias=False
    fam::parse_qwen_sliding(r, fam::QwenSlidingRule::FromMaxWindowLayers, c);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(c.attention_bias && !c.o_bias, "qwen2: attention has q/k/v biases and no o_proj bias");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    fam::write_qwen_sliding(c, fam::QwenSlidingRule::FromMaxWindowLayers, j);
    return j;
  }

  // Qwen2.5-0.5B-style: q/k/v biases, tied embeddings, theta 1e6.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.attention_bias = true;
    c.tie_word_embeddings = true;
    c.rope_theta = 1000000.0;
    return c;
  }

  // llama.cpp "qwen2": NEOX RoPE (no permutation), q/k/v biases.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "qwen2", .attn_bias_always = true, .hf_model_type = "qwen2",
                                          .hf_architecture = "Qwen2ForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& qwen2_family() {
  static const Qwen2 f;
  return f;
}

}  // namespace moetool
