// tests/gguf_export_test.cc — GGUF export (formats/gguf_export.h) and the checker running GGUF
// files (verify/weights_gguf.cc): the TinyStories F16 export equals llama.cpp's own conversion
// tensor for tensor (names, shapes, types, bytes) and in its hyperparameter and tokenizer
// metadata; F32 exports of TinyStories and of synthetic models of every exportable family give the
// safetensors logits; quantized exports run in the checker close to the original; llama-quantize's
// type rules, overrides and fallbacks; refusals; the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <regex>

#include "compress/quantize_gguf.h"
#include "formats/ggml_quants.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf.h"
#include "formats/gguf_config.h"
#include "formats/gguf_export.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "formats/tokenizer.h"
#include "tests/test_util.h"
#include "engine/engine.h"

namespace moetool {
namespace {

std::string tinystories() { return testing::shared_path("models/tinystories-656k"); }

GGUFExportOptions opts(const std::string& type) {
  GGUFExportOptions o;
  o.file_type = type;
  o.overwrite = true;
  return o;
}

// max |a − b| of teacher-forced logits of the two models on `tokens`.
double max_logit_diff(const std::string& a, const std::string& b, const std::vector<int32_t>& tokens,
                      double* top1 = nullptr) {
  Engine ea(open_weights(a)), eb(open_weights(b));
  const auto la = ea.logits(tokens), lb = eb.logits(tokens);
  EXPECT_EQ(la.size(), lb.size());
  double d = 0;
  for (size_t i = 0; i < la.size(); ++i) d = std::max(d, std::fabs(double(la[i]) - lb[i]));
  if (top1) {
    const int64_t V = ea.config().vocab_size;
    int64_t same = 0, n = static_cast<int64_t>(tokens.size());
    for (int64_t t = 0; t < n; ++t) {
      const float* pa = la.data() + t * V;
      const float* pb = lb.data() + t * V;
      same += std::max_element(pa, pa + V) - pa == std::max_element(pb, pb + V) - pb;
    }
    *top1 = double(same) / double(n);
  }
  return d;
}

std::vector<int32_t> some_tokens(int64_t vocab, int64_t n, uint32_t seed) {
  std::vector<int32_t> t;
  uint64_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    t.push_back(static_cast<int32_t>((s >> 33) % static_cast<uint64_t>(vocab)));
  }
  return t;
}

TEST(GGUFExport, TinyStoriesF16EqualsLlamaCppConversion) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  testing::TempDir tmp;
  const std::string out = tmp.file("ts.f16.gguf");
  export_gguf(Model::open(tinystories()), out, opts("f16"));
  auto ours = GGUFFile::open(out);
  auto ref = GGUFFile::open(testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf"));
  ASSERT_EQ(ours->tensors().size(), ref->tensors().size());
  for (const GGUFTensorInfo& r : ref->tensors()) {
    SCOPED_TRACE(r.name);
    ASSERT_TRUE(ours->has_tensor(r.name));
    const GGUFTensorInfo& o = ours->tensor_info(r.name);
    EXPECT_EQ(o.type, r.type);
    EXPECT_EQ(o.ne, r.ne);
    const auto ob = ours->raw_tensor(o).bytes, rb = ref->raw_tensor(r).bytes;
    ASSERT_EQ(ob.size(), rb.size());
    EXPECT_EQ(std::memcmp(ob.data(), rb.data(), ob.size()), 0);
  }
  // Hyperparameters and tokenizer as llama.cpp's converter wrote them.
  for (const char* k :
       {"general.architecture", "general.file_type", "general.quantization_version", "llama.block_count",
        "llama.context_length", "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
        "llama.vocab_size", "llama.rope.dimension_count", "tokenizer.ggml.model", "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}) {
    SCOPED_TRACE(k);
    ASSERT_TRUE(ours->has(k));
    EXPECT_TRUE(ours->get(k) == ref->get(k)) << ours->get(k).to_string() << " vs " << ref->get(k).to_string();
  }
  for (const char* k : {"llama.expert_count", "llama.attention.key_length"}) EXPECT_FALSE(ours->has(k)) << k;
  EXPECT_EQ(ours->get_u32("general.alignment"), 32u);
  // The checker reads it back with the HF config.
  const ModelConfig c = model_config_of_gguf(*ours), h = Model::open(tinystories()).config();
  EXPECT_EQ(c.family, "llama");
  EXPECT_EQ(c.hidden_size, h.hidden_size);
  EXPECT_EQ(c.num_kv_heads, h.num_kv_heads);
  EXPECT_EQ(c.intermediate_size, h.intermediate_size);
  EXPECT_EQ(c.tie_word_embeddings, true);
  EXPECT_EQ(static_cast<float>(c.rms_norm_eps), static_cast<float>(h.rms_norm_eps));
}

TEST(GGUFExport, TinyStoriesF32LogitsEqualSafetensors) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  testing::TempDir tmp;
  const std::string out = tmp.file("ts.f32.gguf");
  export_gguf(Model::open(tinystories()), out, opts("f32"));
  auto tok = Tokenizer::from_hf_dir(tinystories());
  const auto ids = tok->encode("Once upon a time, there was a little girl named Lily. She loved to play outside.");
  ASSERT_GT(ids.size(), 10u);
  EXPECT_LE(max_logit_diff(tinystories(), out, ids), 1e-5);
  // The F16 file of llama.cpp runs in the checker too (its logits differ by the F16 rounding only).
  double top1 = 0;
  const double d16 = max_logit_diff(
      tinystories(), testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf"), ids, &top1);
  EXPECT_LT(d16, 0.05);
  EXPECT_GE(top1, 0.95);
}

TEST(GGUFExport, TinyStoriesQuantizedRunsInCheckerWithLlamaQuantizeTypes) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  testing::TempDir tmp;
  Model m = Model::open(tinystories());
  auto tok = Tokenizer::from_hf_dir(tinystories());
  const auto ids = tok->encode("Once upon a time, there was a little girl named Lily. She loved to play outside.");
  struct Case {
    const char* type;
    double max_diff, min_top1;
  };
  for (const Case& k : {Case{"q8_0", 0.5, 0.9}, Case{"q4_0", 5.0, 0.7}, Case{"q4_k_m", 4.0, 0.75}}) {
    SCOPED_TRACE(k.type);
    const std::string out = tmp.file(std::string(k.type) + ".gguf");
    const GGUFExportPlan p = export_gguf(m, out, opts(k.type));
    double top1 = 0;
    EXPECT_LE(max_logit_diff(tinystories(), out, ids, &top1), k.max_diff);
    EXPECT_GE(top1, k.min_top1);
    auto f = GGUFFile::open(out);
    // The tied embedding follows llama.cpp's output rule: 128 is not a multiple of 256 → Q8_0.
    EXPECT_EQ(f->tensor_info("token_embd.weight").type, GGMLType::Q8_0);
    EXPECT_EQ(f->tensor_info("output_norm.weight").type, GGMLType::F32);
    EXPECT_FALSE(f->has_tensor("output.weight"));
    EXPECT_EQ(f->file_size() > 0, true);
    const GGMLType q = f->tensor_info("blk.0.attn_q.weight").type;
    if (std::string(k.type) == "q8_0") EXPECT_EQ(q, GGMLType::Q8_0);
    if (std::string(k.type) == "q4_0") EXPECT_EQ(q, GGMLType::Q4_0);
    if (std::string(k.type) == "q4_k_m") {
      // Q4_K on 128- and 384-wide rows falls back to Q5_0; attn_v of layer 1 and ffn_down of layer 1
      // get Q6_K (use_more_bits), which falls back to Q8_0.
      EXPECT_EQ(q, GGMLType::Q5_0);
      EXPECT_EQ(f->tensor_info("blk.0.attn_v.weight").type, GGMLType::Q5_0);
      EXPECT_EQ(f->tensor_info("blk.1.attn_v.weight").type, GGMLType::Q8_0);
      EXPECT_EQ(f->tensor_info("blk.1.ffn_down.weight").type, GGMLType::Q8_0);
      EXPECT_EQ(f->get_u32("general.file_type"), 15u);
    }
    EXPECT_EQ(f->file_size() >= p.bytes, true);
  }
}

// Synthetic models of every exportable family: F32 exports give the safetensors logits exactly
// (q/k permutation undone, experts sliced, shared experts, biases, q/k norms, llama3 RoPE), Q8_0
// exports stay close.
TEST(GGUFExport, SynthFamiliesRoundTripThroughGGUF) {
  testing::TempDir tmp;
  for (const char* fam : {"llama", "qwen2", "qwen3", "mixtral", "qwen2_moe"}) {
    SCOPED_TRACE(fam);
    const std::string dir = tmp.file(std::string("m-") + fam);
    SynthOptions so;
    so.family = fam;
    synth_model(dir, so);
    Model m = Model::open(dir);
    const auto ids = some_tokens(m.config().vocab_size, 24, 7);
    const std::string f32 = tmp.file(std::string(fam) + ".f32.gguf");
    export_gguf(m, f32, opts("f32"));
    EXPECT_LE(max_logit_diff(dir, f32, ids), 1e-5);
    const std::string q8 = tmp.file(std::string(fam) + ".q8_0.gguf");
    export_gguf(m, q8, opts("q8_0"));
    double top1 = 0;
    max_logit_diff(dir, q8, ids, &top1);
    EXPECT_GE(top1, 0.9);
    auto f = GGUFFile::open(q8);
    if (m.config().moe) {
      const auto& e = f->tensor_info("blk.0.ffn_gate_exps.weight");
      EXPECT_EQ(e.ne, (std::vector<int64_t>{m.config().hidden_size, m.config().moe->expert_intermediate,
                                            m.config().moe->num_experts}));
      EXPECT_EQ(f->tensor_info("blk.0.ffn_down_exps.weight").ne[0], m.config().moe->expert_intermediate);
      EXPECT_EQ(f->tensor_info("blk.0.ffn_gate_inp.weight").type, GGMLType::F32);
      EXPECT_EQ(f->get_u64(f->get_string("general.architecture") + ".expert_count"),
                static_cast<uint64_t>(m.config().moe->num_experts));
    }
    if (std::string(fam) == "qwen2_moe") {
      EXPECT_EQ(f->get_string("general.architecture"), "qwen2moe");
      EXPECT_EQ(f->tensor_info("blk.0.ffn_gate_inp_shexp.weight").ne, (std::vector<int64_t>{m.config().hidden_size}));
      EXPECT_TRUE(f->has_tensor("blk.0.ffn_up_shexp.weight"));
      EXPECT_TRUE(f->has("qwen2moe.expert_shared_feed_forward_length"));
    }
    if (std::string(fam) == "mixtral") EXPECT_EQ(f->get_string("general.architecture"), "llama");
    if (std::string(fam) == "llama") EXPECT_TRUE(f->has_tensor("rope_freqs.weight"));  // llama3 RoPE
    // The byte-level tokenizer as model gpt2 encodes like tokenizer.json.
    EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
    auto hf = Tokenizer::from_hf_dir(dir);
    auto gg = Tokenizer::from_gguf(*f);
    const std::string text = "The quick brown fox, 42 times: it's jumping over the lazy dog!";
    EXPECT_EQ(hf->encode(text), gg->encode(text));
  }
}

TEST(GGUFExport, TypeRulesOverridesAndFallbacks) {
  testing::TempDir tmp;
  const std::string dir = tmp.file("mixtral-small");
  SynthOptions so;
  so.family = "mixtral";
  so.preset = "small";  // hidden 256, 8 experts of 256, 4 layers
  synth_model(dir, so);
  Model m = Model::open(dir);
  auto type_of = [](const GGUFExportPlan& p, const std::string& n) {
    for (const auto& t : p.tensors)
      if (t.name == n) return t.type;
    ADD_FAILURE() << "no tensor " << n;
    return GGMLType::F32;
  };
  GGUFExportPlan p = plan_gguf_export(m, opts("q4_k_m"));
  EXPECT_EQ(p.file_type.ftype, 15u);
  EXPECT_EQ(type_of(p, "blk.1.ffn_gate_exps.weight"), GGMLType::Q4_K);
  EXPECT_EQ(type_of(p, "blk.0.attn_v.weight"), GGMLType::Q8_0);  // 8 experts: attn_v and attn_k Q8_0
  EXPECT_EQ(type_of(p, "blk.0.attn_k.weight"), GGMLType::Q8_0);
  EXPECT_EQ(type_of(p, "blk.0.attn_output.weight"), GGMLType::Q5_K);  // 8 experts, q4_k_m
  // use_more_bits(i, 4): layers 2 and 3 (i >= 7·4/8, or (i − 4/8) % 3 == 2), not 0 and 1.
  EXPECT_EQ(type_of(p, "blk.0.ffn_down_exps.weight"), GGMLType::Q4_K);
  EXPECT_EQ(type_of(p, "blk.1.ffn_down_exps.weight"), GGMLType::Q4_K);
  EXPECT_EQ(type_of(p, "blk.2.ffn_down_exps.weight"), GGMLType::Q6_K);
  EXPECT_EQ(type_of(p, "blk.3.ffn_down_exps.weight"), GGMLType::Q6_K);
  EXPECT_EQ(type_of(p, "output.weight"), GGMLType::Q6_K);
  EXPECT_EQ(type_of(p, "token_embd.weight"), GGMLType::Q4_K);
  EXPECT_EQ(type_of(p, "blk.0.ffn_gate_inp.weight"), GGMLType::F32);
  EXPECT_EQ(type_of(p, "blk.0.attn_norm.weight"), GGMLType::F32);
  EXPECT_GT(p.bpw_quantizable(), 4.5);
  EXPECT_LT(p.bpw_quantizable(), 6.0);

  GGUFExportOptions o = opts("q4_k_m");
  o.tensor_types = {{"ffn_(gate|up)_exps", GGMLType::Q5_K}, {"blk\\.0\\.", GGMLType::Q8_0}};
  o.embed_type = GGMLType::Q8_0;
  o.output_type = GGMLType::F16;
  o.allocation["blk.2.ffn_down_exps.weight"] = GGMLType::Q4_0;
  p = plan_gguf_export(m, o);
  EXPECT_EQ(type_of(p, "blk.1.ffn_up_exps.weight"), GGMLType::Q5_K);
  EXPECT_EQ(type_of(p, "blk.0.ffn_gate_exps.weight"), GGMLType::Q5_K);  // first match wins
  EXPECT_EQ(type_of(p, "blk.0.ffn_down_exps.weight"), GGMLType::Q8_0);
  EXPECT_EQ(type_of(p, "blk.1.ffn_down_exps.weight"), GGMLType::Q4_K);
  EXPECT_EQ(type_of(p, "blk.3.ffn_down_exps.weight"), GGMLType::Q6_K);
  EXPECT_EQ(type_of(p, "blk.2.ffn_down_exps.weight"), GGMLType::Q4_0);
  EXPECT_EQ(type_of(p, "token_embd.weight"), GGMLType::Q8_0);
  EXPECT_EQ(type_of(p, "output.weight"), GGMLType::F16);
  EXPECT_EQ(type_of(p, "blk.0.ffn_gate_inp.weight"), GGMLType::F32);  // never quantized

  o = opts("q6_k");
  o.pure = true;
  p = plan_gguf_export(m, o);
  for (const auto& t : p.tensors) EXPECT_EQ(t.type, t.quantizable ? GGMLType::Q6_K : GGMLType::F32) << t.name;

  // Shape fallback on the tiny model (hidden 64): Q4_K → Q5_0, Q5_K (q4_k_s's attn_v of the first
  // layers) → Q5_1; the output rule takes Q8_0 when 256 does not divide the row.
  const std::string tdir = tmp.file("mixtral-tiny");
  so.preset = "tiny";
  synth_model(tdir, so);
  p = plan_gguf_export(Model::open(tdir), opts("q4_k_s"));
  for (const auto& t : p.tensors) {
    if (!t.quantizable) continue;
    const GGMLType want = t.role == Role::LmHead ? GGMLType::Q8_0 : t.role == Role::V ? GGMLType::Q5_1 : GGMLType::Q5_0;
    EXPECT_EQ(t.type, want) << t.name << " " << ggml_type_name(t.type);
    if (t.role != Role::LmHead) EXPECT_NE(t.why.find("fallback"), std::string::npos) << t.name;
  }
}

TEST(GGUFExport, RefusesWhatLlamaCppCannotRun) {
  testing::TempDir tmp;
  struct Case {
    const char* family;
    const char* message;
  };
  for (const Case& k : {Case{"olmoe", "cannot be exported to GGUF yet"}, Case{"deepseek_v3", "cannot be exported"},
                        Case{"mistral", "sliding window"}, Case{"qwen3_moe", "needs every layer to be MoE"}}) {
    SCOPED_TRACE(k.family);
    const std::string dir = tmp.file(k.family);
    SynthOptions so;
    so.family = k.family;
    synth_model(dir, so);
    try {
      export_gguf(Model::open(dir), tmp.file(std::string(k.family) + ".gguf"), opts("q8_0"));
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(k.message), std::string::npos) << e.what();
    }
    EXPECT_FALSE(file_exists(tmp.file(std::string(k.family) + ".gguf")));
  }
  EXPECT_THROW(parse_gguf_file_type("q3_k_m", "--type"), Error);
  EXPECT_EQ(parse_gguf_file_type("Q4_K", "--type").name, "q4_k_m");
  EXPECT_THROW(parse_gguf_tensor_type("iq2_xxs", "--tensor-type"), Error);
}

TEST(GGUFExport, CommandLine) {
  testing::TempDir tmp;
  const std::string dir = tmp.file("qm");
  SynthOptions so;
  so.family = "qwen2_moe";
  synth_model(dir, so);
  const std::string out = tmp.file("qm.gguf");
  auto r = testing::run_moetool({"quantize", dir, "-o", out, "--type", "q8_0", "--dry-run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "qwen2moe");
  EXPECT_EQ(j["written"], false);
  EXPECT_FALSE(file_exists(out));
  r = testing::run_moetool({"quantize", dir, "-o", out, "--type", "q4_0", "--tensor-type", "attn_v=q8_0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("blk.0.attn_v.weight - [64, 32], type = f32, converting to q8_0"), std::string::npos) << r.err;
  auto f = GGUFFile::open(out);
  EXPECT_EQ(f->tensor_info("blk.0.attn_v.weight").type, GGMLType::Q8_0);
  EXPECT_EQ(f->tensor_info("blk.0.attn_q.weight").type, GGMLType::Q4_0);
  EXPECT_TRUE(f->has("general.moetool.version"));
  EXPECT_NE(f->get_string("general.moetool.command").find("quantize"), std::string::npos);
  r = testing::run_moetool({"quantize", dir, "-o", out, "--type", "q4_0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  r = testing::run_moetool({"quantize", dir, "-o", out, "--type", "q9_9", "--force"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown GGUF file type 'q9_9'"), std::string::npos) << r.err;
  // verify runs the GGUF directly against the original.
  const std::string text = tmp.file("t.txt");
  testing::write_bytes(text, std::string(400, 'a') + " the quick brown fox jumps over the lazy dog. ");
  r = testing::run_moetool({"verify", dir, out, "--text", text, "--ctx", "32", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("kld"), std::string::npos);
}

}  // namespace
}  // namespace moetool
