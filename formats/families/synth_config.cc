// formats/families/synth_config.cc — the configs `moetool synth` writes: sizes from SynthSizes, the
// family's features from its Spec (SynthStyle, attention biases and q/k norms, MoE keys) and synth_own hook.
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool::fam {

ModelConfig synth_base(const Spec& f, const SynthSizes& s) {
  check(s.vocab > 0 && s.hidden > 0 && s.layers > 0 && s.heads > 0 && s.kv_heads > 0 && s.intermediate > 0 &&
            s.max_positions > 0,
        f.name, ": synthetic sizes must be positive");
  check(s.hidden % s.heads == 0, f.name, ": synthetic hidden size ", s.hidden, " is not a multiple of ", s.heads,
        " heads");
  check(s.heads % s.kv_heads == 0, f.name, ": synthetic heads ", s.heads, " are not a multiple of ", s.kv_heads,
        " KV heads");
  check((s.hidden / s.heads) % 2 == 0, f.name, ": synthetic head dim ", s.hidden / s.heads, " must be even");
  const SynthStyle& y = f.synth;
  ModelConfig c;
  c.family = f.name;
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.num_layers = s.layers;
  c.head_dim = y.head_dim_factor * (s.hidden / s.heads);
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.intermediate_size = s.intermediate;
  c.max_position_embeddings = s.max_positions;
  c.rms_norm_eps = f.defaults.rms_norm_eps;
  c.rope_theta = y.rope_theta.value_or(f.defaults.rope_theta);
  c.tie_word_embeddings = y.tied;
  c.attention_bias = f.bias == BiasKey::QkvAlways || f.bias == BiasKey::QkvBias;
  c.qk_norm = f.qk_norm;
  if (y.sliding_window) {
    c.sliding_window = std::max<int64_t>(2, s.max_positions / 32);
    c.sliding_layers.assign(static_cast<size_t>(c.num_layers), true);
  }
  c.layer_kinds.assign(static_cast<size_t>(s.layers), LayerKind::Dense);
  c.bos_token_id = std::min<int64_t>(1, s.vocab - 1);
  c.eos_token_id = std::min<int64_t>(2, s.vocab - 1);
  return c;
}

MoeConfig synth_moe(const SynthSizes& s, const SynthStyle& style, RoutingKind routing) {
  MoeConfig m;
  m.num_experts = s.experts;
  m.top_k = std::min(s.top_k, s.experts);
  m.expert_intermediate = s.expert_intermediate;
  m.routing = routing;
  m.norm_topk_prob = style.norm_topk_prob;
  m.shared_intermediate = style.shared_factor * s.expert_intermediate;
  m.shared_gated = style.shared_factor > 0;
  return m;
}

ModelConfig LlamaLikeFamily::synth_config(const SynthSizes& s) const {
  ModelConfig c = synth_base(spec_, s);
  if (spec_.moe) {
    c.moe = synth_moe(s, spec_.synth, spec_.moe->routing);
    c.layer_kinds.assign(c.layer_kinds.size(), LayerKind::Moe);
    if (!spec_.moe->width) c.intermediate_size = s.expert_intermediate;  // the experts' width is intermediate_size
  }
  if (spec_.synth_own) spec_.synth_own(s, c);
  return c;
}

}  // namespace moetool::fam
