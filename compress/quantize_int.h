// compress/quantize_int.h — a whole checkpoint quantized to group-wise integer weights (2–8 bits)
// and written as a GPTQ checkpoint (formats/gptq.h) that transformers / vLLM / GPTQModel load and
// the checker runs directly. Methods per linear (and per routed expert):
//   rtn      round-to-nearest (compress/int_quant.h), no calibration
//   imatrix  RTN weighted by the calibration second moments Σx² of the linear's input columns
//   gptq     GPTQ with the Hessian Σ xxᵀ of the linear's calibration inputs (compress/gptq.h)
// Calibration runs layer by layer: layer l's Hessians are collected, its linears quantized and
// written, the Hessians dropped; with `sequential` the next layer is calibrated on the outputs of
// the already-quantized layers (as GPTQ does). Peak memory: one layer's weights and Hessians plus
// the calibration set's residual stream. A linear whose calibration rows are fewer than min_tokens
// (a routed expert the router never chose) is rounded without importance, with a warning and a
// line in the coverage report — never zeroed, never an error; with GPTQ a routed expert's Hessian
// then comes from its layer's pooled inputs (compress/expert_pool.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "compress/gptq.h"
#include "compress/int_quant.h"
#include "formats/model.h"
#include "engine/calibrate.h"

namespace moetool {

struct IntQuantOptions {
  IntQuantSpec spec;              // default width, group size, symmetry
  std::string method = "gptq";    // "gptq" | "imatrix" | "rtn"
  GPTQOptions gptq;               // damping, act-order, block size (its spec is set per linear)
  int64_t min_tokens = 16;        // fewer calibration rows → importance-free rounding (warned)
  // GPTQ coverage guard (compress/expert_pool.h): a routed expert with fewer than min_tokens rows
  // gets its Hessians from them plus this many pooled rows of its layer (0: RTN fallback instead).
  int64_t pool_rows = 4096;
  bool sequential = true;         // calibrate layer l on the quantized layers before it
  // vLLM-loadable widths: `dynamic` rules per fused group (formats/gptq.h gptq_fused_rule); refuses
  // per-linear widths that differ inside a group (q/k/v, gate/up, the experts of a layer).
  bool fused_groups = false;
  std::map<LinearKey, int> bits;  // per-linear widths (a --bpw allocation); absent: spec.bits
  // Modules (and low-rank factors) whose name a regex matches (std::regex_search) stay in float.
  std::vector<std::string> skip;
  // Write compressed-tensors' pack-quantized layout (compress/quantize_ct.h) instead of GPTQ's
  // (symmetric, no act-order, no low-rank factors).
  bool compressed_tensors = false;
  int ct_scale_bytes = 4;  // bytes of one stored scale there (set from the model by quantize_to_gptq)
  // Width of the delta bases of a low-rank checkpoint (compress/quantize_lowrank.h); 0: spec.bits.
  int base_bits = 0;
  // dtype of the tensors kept in float (embedding, output head, norms, routers, unpackable linears);
  // nullopt keeps each tensor's source dtype. GPTQModel saves them in the model's f16/bf16.
  std::optional<DType> float_dtype;
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;  // provenance for the safetensors __metadata__
  std::string quantizer;                        // "moetool:<version>" for quantization_config.meta
  std::function<void(const std::string&)> progress;  // one line per linear
};

// IntQuantOptions::skip compiled once: whether a module (or factor) name is kept in float.
class SkipRules {
 public:
  explicit SkipRules(const std::vector<std::string>& patterns);
  bool match(const std::string& name) const;

 private:
  std::vector<std::regex> re_;
};

// What happened to one linear.
struct LinearQuantRecord {
  std::string module;  // "model.layers.0.mlp.experts.3.down_proj"
  Role role;
  int64_t layer = -1, expert = -1;
  int64_t rows = 0, cols = 0;
  int bits = 0;                // 0: kept in float (shape not packable)
  std::string method;          // "gptq", "imatrix", "rtn", "rtn (fallback: 0 tokens)", "float"
  // A low-rank factor: its stored name is `module`; role/layer/expert are its first user's (expert
  // −1 when several modules share it).
  bool factor = false;
  int64_t tokens = 0;          // calibration rows its input saw
  int64_t pooled = 0;          // pooled layer rows added to its Hessian (coverage guard)
  double rel_error = -1;       // ‖(W − Ŵ)Xᵀ‖_F / ‖W Xᵀ‖_F on the calibration inputs (−1: no calibration)
  uint64_t bytes = 0;          // stored bytes
};

struct IntQuantReport {
  std::string output, method;
  IntQuantSpec spec;
  int64_t calib_tokens = 0;
  std::vector<LinearQuantRecord> linears;
  std::vector<std::string> warnings;
  int64_t quantized_params = 0, params = 0;  // linears quantized; every tensor
  uint64_t quantized_bytes = 0, bytes = 0;   // their stored bytes; all tensor data
  double seconds = 0;
  double bpw_quantized() const { return quantized_params ? 8.0 * quantized_bytes / quantized_params : 0; }
  double bpw() const { return params ? 8.0 * bytes / params : 0; }
};

// Roles a GPTQ checkpoint stores as integers: every projection of attention, dense FFN, routed and
// shared experts. Never: embeddings, the output head, routers, norms, biases, the shared-expert gate.
bool int_quantizable_role(Role r);

// Writes `out_dir`. `chunks` are the calibration sequences (unused, may be empty, for "rtn").
IntQuantReport quantize_to_gptq(const Model& m, const std::string& out_dir,
                                const std::vector<std::vector<int32_t>>& chunks, const IntQuantOptions& o);

}  // namespace moetool
