// formats/families/qwen3.cc — the qwen3 family (Qwen3ForCausalLM): explicit head_dim (default 128, not
// hidden/heads), per-head q/k RMSNorm (weight [head_dim]), q/k/v/o biases when attention_bias, qwen
// sliding-window keys as qwen2.
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers Qwen3Config defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 32768;
  d.rms_norm_eps = 1e-6;
  d.rope_theta = 10000.0;
  d.kv_heads = 32;
  d.head_dim = 128;
  return d;
}

class Qwen3 final : public fam::LlamaLikeFamily {
 public:
  Qwen3()
      : LlamaLikeFamily("qwen3", "Qwen3ForCausalLM", false,
                        fam::kMha | fam::kAttnBias | fam::kOBias | fam::kQkNorm | fam::kDenseFfn) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    c.attention_bias = c.o_bias = r.bool_or("attention_bias", false);
    c.qk_norm = QkNorm::PerHead;
    fam::parse_qwen_sliding(r, fam::QwenSlidingRule::FromMaxWindowLayers, c);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(c.attention_bias == c.o_bias, "qwen3: q/k/v and o_proj biases come together (attention_bias)");
    check(c.qk_norm == QkNorm::PerHead, "qwen3: attention always has per-head q/k norms");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    j["attention_bias"] = c.attention_bias;
    fam::write_qwen_sliding(c, fam::QwenSlidingRule::FromMaxWindowLayers, j);
    return j;
  }

  // Qwen3-0.6B-style: head_dim twice hidden/heads, q/k norms, tied embeddings, theta 1e6.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.head_dim = 2 * (s.hidden / s.heads);
    c.qk_norm = QkNorm::PerHead;
    c.tie_word_embeddings = true;
    c.rope_theta = 1000000.0;
    return c;
  }

  // llama.cpp "qwen3": NEOX RoPE, per-head attn_q_norm / attn_k_norm, head size in key_length.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "qwen3", .qk_norm = true, .hf_model_type = "qwen3",
                                          .hf_architecture = "Qwen3ForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& qwen3_family() {
  static const Qwen3 f;
  return f;
}

}  // namespace moetool
