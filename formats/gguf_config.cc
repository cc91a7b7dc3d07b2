// formats/gguf_config.cc — the llama-like GGUF architectures (see gguf_config.h): hyperparameter
// keys, tensor names, q/k row permutation, and the reverse mapping from a GGUF file to a config.
#include "formats/gguf_config.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include "core/error.h"

namespace moetool {

// Moves rows between HF's order and llama.cpp's within each head: `to_gguf` permutes, else unpermutes.
static void move_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head, bool to_gguf) {
  if (n_head <= 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0)
    fail("q/k permutation: ", rows, " rows do not split into ", n_head, " heads of even size");
  const int64_t d = rows / n_head;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* o = static_cast<uint8_t*>(dst);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < d / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t gguf_row = h * d + i * 2 + j, hf_row = h * d + j * (d / 2) + i;
        const int64_t to = to_gguf ? gguf_row : hf_row, from = to_gguf ? hf_row : gguf_row;
        std::memcpy(o + static_cast<size_t>(to) * row_bytes, s + static_cast<size_t>(from) * row_bytes, row_bytes);
      }
}

void gguf_permute_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head) {
  move_rows(src, dst, rows, row_bytes, n_head, true);
}

void gguf_unpermute_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head) {
  move_rows(src, dst, rows, row_bytes, n_head, false);
}

namespace {

using nlohmann::json;

class LlamaLikeGGUF final : public GGUFArch {
 public:
  explicit LlamaLikeGGUF(GGUFArchDesc d) : d_(std::move(d)) {}

  std::string name() const override { return d_.arch; }

  void check_exportable(const ModelConfig& c, const std::string& what) const override {
    auto refuse = [&](const std::string& why) {
      fail(what, ": cannot export ", c.family, " to GGUF architecture '", d_.arch, "': ", why);
    };
    if (c.family != d_.hf_model_type) refuse(str("the config is of family ", c.family));
    if (c.mla) refuse("multi-head latent attention has no GGUF form in moetool yet");
    if (c.qk_norm == QkNorm::Full) refuse("q/k norms over the whole projection are not supported");
    if ((c.qk_norm == QkNorm::PerHead) != d_.qk_norm) refuse("q/k norm layout differs from llama.cpp's");
    if (c.clip_qkv) refuse("clip_qkv is not supported by llama.cpp's architecture");
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const auto w = c.window_for_layer(l);
      if (w && *w < c.max_position_embeddings)
        refuse(str("layer ", l, " uses a sliding window of ", *w,
                   " tokens, which llama.cpp ignores for this architecture (results would differ)"));
    }
    switch (c.rope.type) {
      case RopeScaling::Type::Default:
      case RopeScaling::Type::Linear: break;
      case RopeScaling::Type::Llama3:
        if (!d_.rope_freqs_for_llama3) refuse("llama3 RoPE scaling is only exported for the llama architecture");
        break;
      case RopeScaling::Type::Dynamic: refuse("dynamic NTK RoPE scaling is not supported by llama.cpp"); break;
      case RopeScaling::Type::Yarn: refuse("YaRN RoPE scaling is not exported yet"); break;
    }
    if (c.head_dim % 2 != 0) refuse("odd head_dim");
    const bool any_moe = c.moe.has_value() &&
                         std::count(c.layer_kinds.begin(), c.layer_kinds.end(), LayerKind::Moe) > 0;
    if (any_moe != d_.moe) refuse(any_moe ? "the model has MoE layers" : "the model has no MoE layers");
    if (d_.moe) {
      const MoeConfig& m = *c.moe;
      if (m.routing != RoutingKind::SoftmaxTopK || m.router_bias)
        refuse("only softmax top-k routing without a router bias is supported");
      if (m.routed_scaling_factor != 1.0) refuse("routed_scaling_factor must be 1");
      const bool want_norm = d_.topk_norm == GGUFArchDesc::TopkNorm::Always;
      if (m.norm_topk_prob != want_norm)
        refuse(str("llama.cpp's ", d_.arch, (want_norm ? " renormalises" : " does not renormalise"),
                   " the top-k routing weights, but norm_topk_prob is ", m.norm_topk_prob ? "true" : "false"));
      const bool shared = m.shared_intermediate > 0;
      if (shared != d_.shared_expert) refuse(shared ? "shared experts are not supported" : "a shared expert is required");
      if (shared && !m.shared_gated) refuse("the shared expert must be sigmoid-gated");
      if (!d_.dense_layers_ok)
        for (int64_t l = 0; l < c.num_layers; ++l)
          if (!c.is_moe_layer(l))
            refuse(str("layer ", l, " is dense, but llama.cpp's ", d_.arch, " needs every layer to be MoE"));
      if (!d_.expert_ff_key && m.expert_intermediate != c.intermediate_size)
        refuse("the expert width must equal intermediate_size");
    }
    if (c.o_bias && !c.attention_bias) refuse("an o_proj bias without q/k/v biases");
  }

  std::vector<GGUFKV> metadata(const ModelConfig& c) const override {
    const std::string a = d_.arch + ".";
    std::vector<GGUFKV> kv;
    auto u32 = [&](const std::string& k, int64_t v) { kv.push_back({a + k, GGUFValue::u32(static_cast<uint32_t>(v))}); };
    auto f32 = [&](const std::string& k, double v) { kv.push_back({a + k, GGUFValue::f32(static_cast<float>(v))}); };
    u32("context_length", c.max_position_embeddings);
    u32("embedding_length", c.hidden_size);
    u32("block_count", c.num_layers);
    u32("feed_forward_length", c.intermediate_size);
    u32("attention.head_count", c.num_heads);
    u32("attention.head_count_kv", c.num_kv_heads);
    f32("rope.freq_base", c.rope_theta);
    f32("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
    if (c.moe && d_.moe) {
      u32("expert_count", c.moe->num_experts);
      u32("expert_used_count", c.moe->top_k);
      if (d_.expert_ff_key) u32("expert_feed_forward_length", c.moe->expert_intermediate);
      if (d_.shared_expert) u32("expert_shared_feed_forward_length", c.moe->shared_intermediate);
    }
    u32("vocab_size", c.vocab_size);
    u32("rope.dimension_count", c.head_dim);
    if (c.head_dim * c.num_heads != c.hidden_size) {
      u32("attention.key_length", c.head_dim);
      u32("attention.value_length", c.head_dim);
    }
    if (c.rope.type == RopeScaling::Type::Linear) {
      kv.push_back({a + "rope.scaling.type", GGUFValue::string("linear")});
      f32("rope.scaling.factor", c.rope.factor);
    }
    if (c.rope.type == RopeScaling::Type::Llama3) {
      // llama.cpp takes llama3 scaling from the rope_freqs tensor; the parameters themselves go
      // into moetool's own key so the checker can rebuild the exact transformers computation.
      json rs = {{"rope_type", "llama3"},
                 {"factor", c.rope.factor},
                 {"low_freq_factor", c.rope.low_freq_factor},
                 {"high_freq_factor", c.rope.high_freq_factor},
                 {"original_max_position_embeddings", c.rope.original_max_position_embeddings}};
      kv.push_back({"moetool.rope_scaling", GGUFValue::string(rs.dump())});
    }
    return kv;
  }

  bool accepts(const GGUFFile& f) const override {
    const uint64_t experts = f.get_u64_or(d_.arch + ".expert_count", 0);
    return d_.moe ? experts > 0 : experts == 0;
  }

  json config_json(const GGUFFile& f) const override {
    const std::string a = d_.arch + ".";
    json j = json::object();
    j["model_type"] = d_.hf_model_type;
    j["architectures"] = json::array({d_.hf_architecture});
    j["hidden_act"] = "silu";
    const int64_t hidden = static_cast<int64_t>(f.get_u64(a + "embedding_length"));
    const int64_t heads = static_cast<int64_t>(f.get_u64(a + "attention.head_count"));
    j["hidden_size"] = hidden;
    j["num_hidden_layers"] = f.get_u64(a + "block_count");
    j["intermediate_size"] = f.get_u64(a + "feed_forward_length");
    j["num_attention_heads"] = heads;
    j["num_key_value_heads"] = f.get_u64_or(a + "attention.head_count_kv", static_cast<uint64_t>(heads));
    if (f.has(a + "attention.key_length")) {
      const uint64_t k = f.get_u64(a + "attention.key_length");
      if (f.get_u64_or(a + "attention.value_length", k) != k)
        fail(f.path(), ": different key and value head sizes are not supported");
      j["head_dim"] = k;
    } else if (heads > 0) {
      j["head_dim"] = hidden / heads;
    }
    if (f.has(a + "rope.dimension_count") && heads > 0 &&
        f.get_u64(a + "rope.dimension_count") != j["head_dim"].get<uint64_t>())
      fail(f.path(), ": partial rotary embeddings (", a, "rope.dimension_count = ", f.get_u64(a + "rope.dimension_count"),
           ", head size ", j["head_dim"].get<uint64_t>(), ") are not supported");
    j["max_position_embeddings"] = f.get_u64(a + "context_length");
    j["rms_norm_eps"] = f.get_f64(a + "attention.layer_norm_rms_epsilon");
    j["rope_theta"] = f.get_f64_or(a + "rope.freq_base", 10000.0);
    uint64_t vocab = f.get_u64_or(a + "vocab_size", 0);
    if (vocab == 0) {
      const GGUFTensorInfo& e = f.tensor_info("token_embd.weight");
      if (e.ne.size() != 2) fail(f.path(), ": token_embd.weight is not 2-D");
      vocab = static_cast<uint64_t>(e.ne[1]);
    }
    j["vocab_size"] = vocab;
    j["tie_word_embeddings"] = !f.has_tensor("output.weight");
    const bool qkv_bias = f.has_tensor("blk.0.attn_q.bias");
    j["attention_bias"] = qkv_bias;
    j["qkv_bias"] = qkv_bias;
    if (qkv_bias && !d_.attn_bias_always && f.has_tensor("blk.0.attn_q.bias") != f.has_tensor("blk.0.attn_output.bias"))
      fail(f.path(), ": q/k/v biases without an attn_output bias (or the reverse) are not supported for ", d_.arch);
    j["mlp_bias"] = f.has_tensor("blk.0.ffn_gate.bias");
    if (const GGUFValue* v = f.find("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = v->as_u64();
    if (const GGUFValue* v = f.find("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = v->as_u64();
    // RoPE scaling.
    j["rope_scaling"] = nullptr;
    if (const GGUFValue* v = f.find("moetool.rope_scaling")) {
      try {
        j["rope_scaling"] = json::parse(v->as_string(f.key_context("moetool.rope_scaling")));
      } catch (const json::exception& e) {
        fail(f.key_context("moetool.rope_scaling"), ": not valid JSON (", e.what(), ")");
      }
    } else {
      const std::string type = f.get_string_or(a + "rope.scaling.type", "none");
      if (type == "linear") {
        j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", f.get_f64(a + "rope.scaling.factor")}};
      } else if (type != "none") {
        fail(f.path(), ": RoPE scaling type '", type, "' is not supported by moetool's checker");
      }
      if (f.has_tensor("rope_freqs.weight"))
        fail(f.path(), ": RoPE frequency factors (rope_freqs.weight) without moetool.rope_scaling are not supported");
    }
    if (d_.moe) {
      j["num_local_experts"] = f.get_u64(a + "expert_count");
      j["num_experts"] = f.get_u64(a + "expert_count");
      j["num_experts_per_tok"] = f.get_u64(a + "expert_used_count");
      if (d_.expert_ff_key) j["moe_intermediate_size"] = f.get_u64(a + "expert_feed_forward_length");
      if (d_.shared_expert) j["shared_expert_intermediate_size"] = f.get_u64(a + "expert_shared_feed_forward_length");
      j["norm_topk_prob"] = d_.topk_norm == GGUFArchDesc::TopkNorm::Always;
      j["decoder_sparse_step"] = 1;
      j["mlp_only_layers"] = json::array();
    }
    return j;
  }

  std::optional<GGUFTensorRef> tensor(const ModelConfig& c, Role r, int64_t layer) const override {
    const std::string b = "blk." + std::to_string(layer) + ".";
    auto ref = [](std::string n) { return std::optional<GGUFTensorRef>(GGUFTensorRef{std::move(n)}); };
    auto permuted = [&](std::string n, int64_t heads) {
      GGUFTensorRef t{std::move(n)};
      if (d_.permute_qk) t.permute_heads = heads;
      return std::optional<GGUFTensorRef>(t);
    };
    auto stacked = [](std::string n) {
      GGUFTensorRef t{std::move(n)};
      t.stacked = true;
      return std::optional<GGUFTensorRef>(t);
    };
    switch (r) {
      case Role::Embed: return ref("token_embd.weight");
      case Role::LmHead:
        if (c.tie_word_embeddings) return std::nullopt;
        return ref("output.weight");
      case Role::FinalNorm: return ref("output_norm.weight");
      case Role::AttnNorm: return ref(b + "attn_norm.weight");
      case Role::FfnNorm: return ref(b + "ffn_norm.weight");
      case Role::Q: return permuted(b + "attn_q.weight", c.num_heads);
      case Role::K: return permuted(b + "attn_k.weight", c.num_kv_heads);
      case Role::V: return ref(b + "attn_v.weight");
      case Role::O: return ref(b + "attn_output.weight");
      case Role::QBias: return permuted(b + "attn_q.bias", c.num_heads);
      case Role::KBias: return permuted(b + "attn_k.bias", c.num_kv_heads);
      case Role::VBias: return ref(b + "attn_v.bias");
      case Role::OBias: return ref(b + "attn_output.bias");
      case Role::QNorm: return ref(b + "attn_q_norm.weight");
      case Role::KNorm: return ref(b + "attn_k_norm.weight");
      case Role::Gate: return ref(b + "ffn_gate.weight");
      case Role::Up: return ref(b + "ffn_up.weight");
      case Role::Down: return ref(b + "ffn_down.weight");
      case Role::GateBias: return ref(b + "ffn_gate.bias");
      case Role::UpBias: return ref(b + "ffn_up.bias");
      case Role::DownBias: return ref(b + "ffn_down.bias");
      case Role::Router: return ref(b + "ffn_gate_inp.weight");
      case Role::ExpertGate: return stacked(b + "ffn_gate_exps.weight");
      case Role::ExpertUp: return stacked(b + "ffn_up_exps.weight");
      case Role::ExpertDown: return stacked(b + "ffn_down_exps.weight");
      case Role::SharedGate: return ref(b + "ffn_gate_shexp.weight");
      case Role::SharedUp: return ref(b + "ffn_up_shexp.weight");
      case Role::SharedDown: return ref(b + "ffn_down_shexp.weight");
      case Role::SharedExpertGate: {
        GGUFTensorRef t{b + "ffn_gate_inp_shexp.weight"};
        t.squeeze = true;
        return t;
      }
      default: return std::nullopt;
    }
  }

  std::vector<std::pair<std::string, std::vector<float>>> extra_tensors(const ModelConfig& c) const override {
    if (c.rope.type != RopeScaling::Type::Llama3 || !d_.rope_freqs_for_llama3) return {};
    // convert_hf_to_gguf.py LlamaModel.generate_extra_tensors: per frequency, the divisor llama.cpp
    // applies to theta (1 for high frequencies, factor for low ones, smoothed in between).
    const RopeScaling& rs = c.rope;
    const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_ctx / rs.low_freq_factor, high_wavelen = old_ctx / rs.high_freq_factor;
    std::vector<float> factors;
    for (int64_t i = 0; i < c.head_dim; i += 2) {
      const float freq = 1.0f / std::pow(static_cast<float>(c.rope_theta),
                                         static_cast<float>(i) / static_cast<float>(c.head_dim));
      const double wavelen = 2 * std::numbers::pi / freq;
      if (wavelen < high_wavelen) {
        factors.push_back(1.0f);
      } else if (wavelen > low_wavelen) {
        factors.push_back(static_cast<float>(rs.factor));
      } else {
        const double smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        factors.push_back(static_cast<float>(1.0 / ((1 - smooth) / rs.factor + smooth)));
      }
    }
    return {{"rope_freqs.weight", factors}};
  }

 private:
  GGUFArchDesc d_;
};

}  // namespace

std::unique_ptr<GGUFArch> make_gguf_arch(GGUFArchDesc d) { return std::make_unique<LlamaLikeGGUF>(std::move(d)); }

const Family& family_of_gguf(const GGUFFile& f) {
  const std::string arch = f.get_string("general.architecture");
  std::string known;
  for (const Family* fam : all_families()) {
    const GGUFArch* g = fam->gguf_arch();
    if (!g) continue;
    if (known.find(g->name()) == std::string::npos) known += (known.empty() ? "" : ", ") + g->name();
    if (g->name() == arch && g->accepts(f)) return *fam;
  }
  fail(f.path(), ": GGUF architecture '", arch, "' is not supported by moetool (supported: ", known, ")");
}

ModelConfig model_config_of_gguf(const GGUFFile& f) {
  const Family& fam = family_of_gguf(f);
  return fam.parse_config(fam.gguf_arch()->config_json(f), f.path() + " (GGUF metadata)");
}

}  // namespace moetool
