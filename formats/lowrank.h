// formats/lowrank.h — low-rank linears ("moetool.lowrank/1", written by `moetool svd`): the spec of
// the layout and its lookup in a checkpoint.
//
// A linear whose weight would be "<M>.weight" W [out, in] (M a module name such as
// "model.layers.0.block_sparse_moe.experts.3.w1") may instead be stored as
//   <M>.weight_u     [out, r]    any float dtype (F32, BF16, F16)
//   <M>.weight_v     [r, in]     any float dtype
//   <M>.weight_base  [out, in]   optional, any float dtype
// meaning W = U · V, or W = base + U · V when a base is stored (method "delta"), with
// 1 ≤ r ≤ min(out, in). "<M>.weight" must then be absent.
//
// A factor may be SHARED by several modules (the "shared-basis" method shares V of gate/up, or U of
// down, across a layer's experts; "delta" shares the base): it is stored once under a name of its
// own — by convention the module name with the expert index replaced by "shared"
// (shared_module_name), e.g. "model.layers.0.block_sparse_moe.experts.shared.w1.weight_v" — and
// config.json maps the names of the modules that use it to it.
//
// config.json carries the block
//   "lowrank": {
//     "format":  "moetool.lowrank/1",                 // required, exactly this string
//     "method":  "whitened",                          // plain | whitened | shared-basis | delta
//                                                     //   (informational: loaders do not need it)
//     "ranks":   {"<M>": r, ...},                     // every factored module → its rank
//     "aliases": {"<M>.weight_v": "<stored name>", ...}  // optional
//   }
// A module is factored iff "ranks" names it. For a factored module M, each of the names
// N ∈ {M.weight_u, M.weight_v, M.weight_base} resolves to
//   1. the tensor N, if the checkpoint stores it; else
//   2. the tensor aliases[N], if "aliases" has N (that tensor must be stored: an alias to a missing
//      tensor is an error; aliases do not chain); else
//   3. nothing — an error for weight_u and weight_v, "no base" for weight_base.
// "Stored" means either a float tensor of that name or — in a checkpoint `quantize --format gptq`
// wrote — the four GPTQ tensors "<name>.qweight/.qzeros/.scales/.g_idx" (formats/gptq.h's v1
// packing, the factor as a linear [rows, cols] of its own, bits from the shapes); moetool
// dequantizes such a factor to float32 when it loads it.
// Every alias key must be one of those three names of a module in "ranks".
//
// moetool runs the layout directly (engine, verify, logits, generate: WeightSource::matrix gives a
// kernels/linear_lowrank.h matrix that multiplies by V then U and never forms W). Stock loaders
// (transformers, vLLM, llama.cpp) do not know it; docs/lowrank-format.md describes it for users.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"
#include "formats/gptq.h"

namespace moetool {

// The one format string this version reads and writes.
inline constexpr const char* kLowRankFormat = "moetool.lowrank/1";

// config.json's "lowrank" block.
struct LowRankLayout {
  std::string format = kLowRankFormat;
  std::string method = "plain";
  std::map<std::string, int64_t> ranks;          // module → r
  std::map<std::string, std::string> aliases;    // "<M>.weight_{u,v,base}" → stored tensor name

  nlohmann::ordered_json to_json() const;
  // Reads and validates a "lowrank" object (throws naming `what`: wrong format string, a rank that
  // is not a positive integer, an alias key that is no factor name of a module in ranks, ...).
  static LowRankLayout from_json(const nlohmann::json& j, const std::string& what);
};

// The layout of a model's config.json (raw), or nullopt when it has no "lowrank" block.
std::optional<LowRankLayout> lowrank_layout_of(const nlohmann::json& raw_config, const std::string& what);

// One factored linear found in a checkpoint: the names of the stored tensors it uses (aliases
// resolved), its shape [rows, cols] = [out, in] and rank.
struct LowRankLinear {
  std::string module;  // "model.layers.0.block_sparse_moe.experts.3.w1"
  std::string u, v;    // stored tensors: U [rows, rank], V [rank, cols]
  std::string base;    // stored tensor [rows, cols], "" when none
  int64_t rows = 0, cols = 0, rank = 0;
  // The factors stored GPTQ-quantized (nullopt: a float tensor), e.g. uq->module == u.
  std::optional<GPTQLinear> uq, vq, baseq;
  // The stored tensors of a factor name u, v or base ("<name>" or its four GPTQ tensors).
  std::vector<std::string> stored_tensors() const;
};

// Whether `weight_name` ("<M>.weight", [rows, cols] expected) is a factored module of `layout`
// (nullopt when it is not). Throws one line naming the checkpoint and the tensor when its tensors
// are inconsistent: "<M>.weight" stored too, U or V missing, an alias to a missing tensor, a
// non-float dtype, U not [rows, r] / V not [r, cols] with r = ranks[M], a base not [rows, cols],
// r > min(rows, cols).
std::optional<LowRankLinear> find_lowrank_linear(const Checkpoint& ck, const LowRankLayout& layout,
                                                 const std::string& weight_name, int64_t rows, int64_t cols);

// {"<M>.weight_u", "<M>.weight_v", "<M>.weight_base"}.
std::vector<std::string> lowrank_tensor_names(const std::string& module);

// The name of a factor shared by the experts whose module names are module_e0 and module_e1: the one
// dot-separated component in which they differ replaced by "shared" ("….experts.0.w1" and
// "….experts.1.w1" → "….experts.shared.w1"). Throws unless they differ in exactly one component.
std::string shared_module_name(const std::string& module_e0, const std::string& module_e1);

}  // namespace moetool
