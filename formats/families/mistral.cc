// formats/families/mistral.cc — the mistral family (MistralForCausalLM): llama without biases, GQA
// (num_key_value_heads defaults to 8), a sliding window on every layer (sliding_window: 4096 when the
// key is missing, none when it is null).
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers MistralConfig defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 4096 * 32;
  d.rms_norm_eps = 1e-6;
  d.rope_theta = 10000.0;
  d.kv_heads = 8;
  d.bos = 1;
  d.eos = 2;
  return d;
}

class Mistral final : public fam::LlamaLikeFamily {
 public:
  Mistral() : LlamaLikeFamily("mistral", "MistralForCausalLM", false, fam::kMha | fam::kDenseFfn) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    fam::parse_plain_sliding(r, 4096, c);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    nlohmann::json j = fam::base_json(c, *this, defaults());
    fam::write_plain_sliding(c, j);
    return j;
  }

  // Mistral-7B-v0.1-style: sliding window (short, so tests see it act), untied, theta 1e6.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.rope_theta = 1000000.0;
    c.sliding_window = std::max<int64_t>(2, s.max_positions / 32);
    c.sliding_layers.assign(static_cast<size_t>(c.num_layers), true);
    return c;
  }

  // llama.cpp has no mistral architecture: "llama" (q/k permuted); a sliding window narrower than
  // the context is refused (llama.cpp's llama ignores it). Files read back as llama.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "llama", .permute_qk = true, .hf_model_type = "mistral",
                                          .hf_architecture = "MistralForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& mistral_family() {
  static const Mistral f;
  return f;
}

}  // namespace moetool
