// formats/synth.cc — deterministic random checkpoints (see synth.h). Values come from a counter-
// based generator (element i of tensor t depends only on seed, t's name and i), so tensors are
// generated in parallel chunks and streamed to the writer with bounded memory.
#include "formats/synth.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <future>

#include "core/error.h"
#include "formats/checkpoint_writer.h"
#include "formats/synth_tokenizer.h"

namespace moetool {

namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t name_hash(const std::string& s) {  // FNV-1a
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Uniform in [-1, 1) scaled so the standard deviation is 1: sqrt(3) * u.
inline float unit_uniform(uint64_t key, uint64_t i) {
  const uint64_t r = splitmix64(key + i * 0xd1b54a32d192ed03ull);
  const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
  return (2.0f * u - 1.0f) * 1.7320508f;
}

struct Init {
  float mean, stdev;
};

Init init_for(const TensorSlot& s) {
  switch (s.role) {
    case Role::AttnNorm: case Role::FfnNorm: case Role::FinalNorm: case Role::QNorm: case Role::KNorm:
    case Role::QANorm: case Role::KVANorm:
      return {1.0f, 0.1f};
    case Role::QBias: case Role::KBias: case Role::VBias: case Role::OBias: case Role::GateBias:
    case Role::UpBias: case Role::DownBias: case Role::RouterBias:
      return {0.0f, 0.1f};
    case Role::Embed: case Role::LmHead:
      return {0.0f, 1.0f / std::sqrt(static_cast<float>(s.shape.back()))};
    default:
      return {0.0f, 1.0f / std::sqrt(static_cast<float>(s.shape.back()))};
  }
}

}  // namespace

float synth_value(uint64_t seed, const std::string& name, uint64_t i, float mean, float stdev) {
  return mean + stdev * unit_uniform(splitmix64(seed) ^ name_hash(name), i);
}

std::vector<std::string> synth_preset_names() { return {"tiny", "small", "bench"}; }

SynthSizes synth_preset(const std::string& preset, bool moe) {
  SynthSizes s;
  if (preset == "tiny") {
    s = SynthSizes{};  // vocab 512, hidden 64, 2 layers, 4 heads / 2 KV, FFN 128, 4 experts top-2 of 64
    if (moe) s.layers = 3;
    return s;
  }
  if (preset == "small") {
    s.vocab = 2048, s.hidden = 256, s.layers = 4, s.heads = 8, s.kv_heads = 4, s.intermediate = 768;
    s.experts = 8, s.top_k = 2, s.expert_intermediate = 256, s.max_positions = 2048;
    return s;
  }
  if (preset == "bench") {
    if (!moe) {  // Llama-3.2-1B-like shape: ~1.0B parameters
      s.vocab = 32000, s.hidden = 2048, s.layers = 16, s.heads = 32, s.kv_heads = 8, s.intermediate = 8192;
      s.experts = 0, s.top_k = 0, s.expert_intermediate = 0, s.max_positions = 4096;
    } else {  // Mixtral-shaped: 8 experts, top-2, ~0.8B parameters (3.2 GB in f32)
      s.vocab = 32000, s.hidden = 1024, s.layers = 8, s.heads = 16, s.kv_heads = 4, s.intermediate = 3584;
      s.experts = 8, s.top_k = 2, s.expert_intermediate = 3584, s.max_positions = 4096;
    }
    return s;
  }
  fail("synth: unknown preset '", preset, "' (expected tiny, small or bench)");
}

SynthResult synth_model(const std::string& out_dir, const SynthOptions& opt) {
  const Family& fam = family_by_name(opt.family);
  if (!is_float(opt.dtype) || opt.dtype == DType::F8_E4M3 || opt.dtype == DType::F8_E5M2)
    fail("synth: --dtype ", dtype_name(opt.dtype), " is not supported (expected f32, f16, bf16 or f64)");
  const SynthSizes sizes = synth_preset(opt.preset, fam.is_moe());
  SynthResult res;
  res.config = fam.synth_config(sizes);
  const ModelConfig& cfg = res.config;

  // config.json and tokenizer files.
  nlohmann::json cj = fam.to_config_json(cfg);
  const char* dtname = opt.dtype == DType::F32 ? "float32" : opt.dtype == DType::F16 ? "float16"
                       : opt.dtype == DType::BF16 ? "bfloat16" : "float64";
  cj["torch_dtype"] = dtname;
  const SynthTokenizer tok = make_synth_tokenizer(std::min<int64_t>(cfg.vocab_size, 512));
  check(tok.size <= cfg.vocab_size, "synth: tokenizer larger than the vocabulary");
  cj["bos_token_id"] = tok.bos_id;
  cj["eos_token_id"] = tok.eos_id;
  CheckpointWriterOptions wo;
  wo.overwrite = opt.overwrite;
  wo.max_shard_bytes = opt.max_shard_bytes;
  wo.metadata = opt.metadata;
  wo.metadata["moetool.synth"] = str("family=", opt.family, " preset=", opt.preset, " seed=", opt.seed);
  wo.extra_files = {{"tokenizer.json", tok.tokenizer_json},
                    {"tokenizer_config.json", tok.tokenizer_config_json},
                    {"special_tokens_map.json", tok.special_tokens_map_json}};
  CheckpointWriter w(out_dir, cj, CheckpointPlan(fam, cfg, nullptr, [&](const TensorSlot&) { return opt.dtype; }), wo);
  const std::vector<TensorSlot>& slots = w.plan().table();

  // Generate in chunks of 4M elements on all cores, straight into the output dtype, while the
  // previous chunk is being written (double buffering): bounded memory, generation overlaps I/O.
  constexpr size_t kChunk = size_t{1} << 22;
  const size_t es = dtype_size(opt.dtype);
  std::vector<uint8_t> buf[2] = {std::vector<uint8_t>(kChunk * es), std::vector<uint8_t>(kChunk * es)};
  std::future<void> pending;
  int cur = 0;
  size_t idx = 0;
  for (const auto& s : slots) {
    const Init in = init_for(s);
    const uint64_t key = splitmix64(opt.seed) ^ name_hash(s.name);
    const size_t n = static_cast<size_t>(numel(s.shape));
    for (size_t b = 0; b < n; b += kChunk) {
      const size_t c = std::min(kChunk, n - b);
      uint8_t* out = buf[cur].data();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < static_cast<int64_t>(c); ++i) {
        const float v = in.mean + in.stdev * unit_uniform(key, b + static_cast<uint64_t>(i));
        const size_t k = static_cast<size_t>(i);
        switch (opt.dtype) {
          case DType::F32: reinterpret_cast<float*>(out)[k] = v; break;
          case DType::F16: reinterpret_cast<uint16_t*>(out)[k] = f32_to_f16(v); break;
          case DType::BF16: reinterpret_cast<uint16_t*>(out)[k] = f32_to_bf16(v); break;
          default: reinterpret_cast<double*>(out)[k] = v; break;
        }
      }
      if (pending.valid()) pending.get();  // at most one write in flight; rethrows its error
      pending = std::async(std::launch::async, [&w, name = s.name, off = b * es, out, bytes = c * es] {
        w.write_chunk(name, off, out, bytes);
      });
      cur ^= 1;
    }
    res.params += static_cast<int64_t>(n);
    res.bytes += n * es;
    ++idx;
    if (opt.progress)
      opt.progress(str("[", idx, "/", slots.size(), "] ", s.name, " ", shape_str(s.shape), " ", dtype_name(opt.dtype)));
  }
  if (pending.valid()) pending.get();
  res.files = w.finish();
  return res;
}

}  // namespace moetool
