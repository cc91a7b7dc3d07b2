// formats/gguf_config.h — how a model family maps onto llama.cpp's GGUF conventions: the
// architecture name (general.architecture), the hyperparameter keys "<arch>.*" written from a
// ModelConfig and read back into one, the GGUF tensor name of every role (blk.N.attn_q.weight, the
// stacked blk.N.ffn_{gate,up,down}_exps.weight, ...), llama's rotary q/k row permutation, and what
// llama.cpp cannot run (refused with a clear error instead of a file that computes something else).
//
// Each family file (formats/families/*.cc) states its GGUFArchDesc; the family builds its GGUFArch
// (Family::gguf_arch()) with make_gguf_arch(); nothing outside formats/families decides by family name.
// Facts from llama.cpp's convert_hf_to_gguf.py, gguf-py constants and src/llama-arch.cpp.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/family.h"
#include "formats/gguf.h"
#include "formats/model_config.h"

namespace moetool {

// Where a role's tensor lives in a GGUF file.
struct GGUFTensorRef {
  std::string name;           // "blk.3.attn_q.weight"
  bool stacked = false;       // routed experts: one tensor [E, rows, cols] (PyTorch order) for all experts
  int64_t permute_heads = 0;  // > 0: rows are llama.cpp's rotary permutation of HF's, with this many heads
  bool squeeze = false;       // a [1, cols] matrix stored as the 1-D [cols] (ffn_gate_inp_shexp)
};

// llama.cpp's convert_hf_to_gguf permute(): within each of `n_head` heads of d rows, row
// i·2 + j (i < d/2, j < 2) of the result is row j·(d/2) + i of `w` (`rows` rows of `row_bytes`).
// The inverse, unpermute, restores HF's rotate-half order.
void gguf_permute_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head);
void gguf_unpermute_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int64_t n_head);

class GGUFArch {
 public:
  virtual ~GGUFArch() = default;
  virtual std::string name() const = 0;  // general.architecture: "llama", "qwen2moe", ...
  // Throws moetool::Error (naming `what`) when llama.cpp cannot run config `c` as transformers does.
  virtual void check_exportable(const ModelConfig& c, const std::string& what) const = 0;
  // The "<arch>.*" hyperparameter keys of `c`, plus "moetool.*" keys for what llama.cpp's keys
  // cannot express (llama3 RoPE parameters), in llama.cpp's order.
  virtual std::vector<GGUFKV> metadata(const ModelConfig& c) const = 0;
  // Whether a GGUF file of this architecture holds a model of this family (llama with experts is
  // mixtral). Called only for files whose general.architecture equals name().
  virtual bool accepts(const GGUFFile& f) const = 0;
  // The config.json (HF keys) of the model in `f`, from its metadata and tensor shapes; the
  // family's parse_config turns it into a ModelConfig. Throws naming the file on missing keys.
  virtual nlohmann::json config_json(const GGUFFile& f) const = 0;
  // The GGUF tensor of a role (nullopt: none, e.g. LmHead of a tied model).
  virtual std::optional<GGUFTensorRef> tensor(const ModelConfig& c, Role r, int64_t layer = -1) const = 0;
  // Tensors llama.cpp needs that a checkpoint does not hold: name, data (f32) — llama3 RoPE's
  // "rope_freqs.weight" [head_dim / 2] of frequency divisors.
  virtual std::vector<std::pair<std::string, std::vector<float>>> extra_tensors(const ModelConfig& c) const = 0;
};

// What distinguishes one llama-like family's GGUF form from another's.
struct GGUFArchDesc {
  std::string arch;               // general.architecture
  bool permute_qk = false;        // llama.cpp's "llama" arch: NORM (interleaved) RoPE, q/k rows permuted
  bool moe = false;               // experts stacked in ffn_*_exps, router ffn_gate_inp
  bool expert_ff_key = false;     // expert width in <arch>.expert_feed_forward_length (qwen*moe)
  bool shared_expert = false;     // ffn_*_shexp + ffn_gate_inp_shexp, expert_shared_feed_forward_length
  // How llama.cpp weights the chosen experts: renormalised always (llama/mixtral, qwen3moe),
  // never (qwen2moe); a config that disagrees is refused.
  enum class TopkNorm { Always, Never } topk_norm = TopkNorm::Always;
  bool qk_norm = false;           // per-head attn_q_norm / attn_k_norm (qwen3, qwen3moe)
  bool attn_bias_always = false;  // q/k/v biases always present (qwen2, qwen2_moe)
  bool dense_layers_ok = true;    // MoE archs: llama.cpp needs every layer to be MoE
  bool rope_freqs_for_llama3 = false;  // llama3 RoPE scaling as the rope_freqs tensor (llama arch)
  // Filled in by the family from its own names (formats/families/common.h LlamaLikeFamily):
  std::string hf_model_type = {};    // the family, written as config.json "model_type" on import
  std::string hf_architecture = {};  // config.json "architectures"[0]
};

// The standard implementation of GGUFArch over that description.
std::unique_ptr<GGUFArch> make_gguf_arch(GGUFArchDesc d);

// The family of a GGUF file (by general.architecture and GGUFArch::accepts); throws naming the
// file and the architecture when no family takes it.
const Family& family_of_gguf(const GGUFFile& f);
// The ModelConfig of a GGUF file (family_of_gguf + config_json + the family's parse_config).
ModelConfig model_config_of_gguf(const GGUFFile& f);

}  // namespace moetool
