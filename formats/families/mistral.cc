// formats/families/mistral.cc — the mistral family (MistralForCausalLM): llama without biases, GQA
// (num_key_value_heads defaults to 8), a sliding window on every layer (sliding_window: 4096 when the
// key is missing, none when it is null).
#include "formats/families/common.h"

namespace moetool {

const Family& mistral_family() {
  static const fam::LlamaLikeFamily f({
      .name = "mistral",
      .architecture = "MistralForCausalLM",
      .features = fam::kMha | fam::kDenseFfn,
      .defaults = {.max_positions = 4096 * 32, .kv_heads = 8, .bos = 1, .eos = 2},  // transformers MistralConfig
      .sliding = {.kind = fam::SlidingKeys::Kind::Plain, .plain_default = 4096},
      // Mistral-7B-v0.1-style: sliding window (short, so tests see it act), untied, theta 1e6.
      .synth = {.rope_theta = 1000000.0, .sliding_window = true},
      // llama.cpp has no mistral architecture: "llama" (q/k permuted); a sliding window narrower than
      // the context is refused (llama.cpp's llama ignores it). Files read back as llama.
      .gguf = GGUFArchDesc{.arch = "llama", .permute_qk = true},
  });
  return f;
}

}  // namespace moetool
