// compress/quantize_gguf_gptq.h — `quantize --format gguf --method gptq|autoround`: every weight
// matrix of a GGUF export plan (compress/quantize_gguf.h) whose type has a level grid (Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) is encoded by GPTQ over ggml blocks (compress/gptq_ggml.h) or
// AutoRound over ggml blocks (compress/autoround_ggml.h) instead of ggml's rounding; both read the
// same per-matrix Hessians; formats/gguf_export.h then writes those rows as they are (the file stays what
// llama.cpp loads: the same types, the same blocks, only better-chosen levels and scales).
//
// Calibration runs layer by layer (engine/layer_sweep.h), as the GPTQ checkpoint pass does
// (compress/quantize_int.h): layer l's Hessians Σ xxᵀ are collected, its matrices encoded, and with
// `sequential` the next layer is calibrated on this one as encoded (the decoded blocks). Routed
// experts use their own Hessian, or — with fewer than min_tokens rows — that plus pool_rows pooled
// rows of the layer run through the expert (compress/expert_pool.h); an expert with neither is
// rounded by ggml (warned). An untied output head gets the Hessian of the final-normed streams
// after the last layer. A tied embedding is left to the writer's (importance-weighted) rounding:
// it is also the token lookup table, whose error GPTQ's objective does not see — on TinyStories-656K
// GPTQ-encoding it raised the held-out KLD (0.0107 → 0.0113 with a Q5_1 head). An untied token
// embedding (a lookup) and types without a grid are left to the writer's own quantizer too.
//
// Encoded tensors wait in a spool file beside the output until the writer takes them, so peak
// memory stays one layer's weights and Hessians plus the calibration streams.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "compress/autoround_ggml.h"
#include "compress/gptq_ggml.h"
#include "formats/gguf_export.h"
#include "formats/model.h"

namespace moetool {

struct GGUFGPTQOptions {
  enum class Method { Gptq, AutoRound } method = Method::Gptq;
  GPTQGGMLOptions gptq;         // damping, act-order (whole blocks), importance for block scales
  AutoRoundOptions autoround;   // steps, step size, scale bound
  int64_t min_tokens = 16;      // fewer calibration rows → pooled Hessian (or ggml rounding)
  int64_t pool_rows = 4096;     // pooled rows for under-covered experts (0: none)
  bool sequential = true;       // calibrate layer l on the encoded layers before it
  bool head = true;             // the untied output head too
  std::function<void(const std::string&)> progress;  // one line per encoded matrix
};

// One matrix (or routed expert) GPTQ encoded, or left to ggml's rounding.
struct GGUFGPTQRecord {
  std::string tensor;           // GGUF name, "blk.0.ffn_down_exps.weight"
  int64_t expert = -1;
  GGMLType type = GGMLType::F32;
  std::string method;           // "gptq", "autoround (pooled Hessian)", "ggml (3 calibration tokens)"
  int64_t tokens = 0, pooled = 0;
  double rel_error = -1;        // ‖(W − Ŵ)Xᵀ‖_F / ‖W Xᵀ‖_F on the calibration inputs (−1: not encoded)
};

// The encoded rows, keyed by (GGUF tensor name, expert), held in a spool file that is removed with
// this object. encoded() is what GGUFWriteOptions::encoded wants.
class GGUFGPTQSpool {
 public:
  explicit GGUFGPTQSpool(std::string path);
  ~GGUFGPTQSpool();
  GGUFGPTQSpool(const GGUFGPTQSpool&) = delete;
  GGUFGPTQSpool& operator=(const GGUFGPTQSpool&) = delete;
  void put(const std::string& tensor, int64_t expert, const std::vector<uint8_t>& bytes);  // thread-safe
  std::optional<std::vector<uint8_t>> get(const std::string& tensor, int64_t expert) const;
  size_t size() const { return index_.size(); }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  mutable std::mutex mu_;
  uint64_t end_ = 0;
  std::map<std::pair<std::string, int64_t>, std::pair<uint64_t, uint64_t>> index_;  // → offset, bytes
};

struct GGUFGPTQResult {
  std::shared_ptr<GGUFGPTQSpool> spool;
  std::vector<GGUFGPTQRecord> records;
  std::vector<std::string> warnings;
  int64_t calib_tokens = 0;
};

// Encodes the matrices of `plan` (types chosen) over the calibration `chunks` (non-empty) into a
// spool at `spool_path`. Throws naming the tensor on a Hessian that stays singular.
GGUFGPTQResult gptq_encode_gguf(const Model& m, const GGUFExportPlan& plan, const std::string& spool_path,
                                const std::vector<std::vector<int32_t>>& chunks, const GGUFGPTQOptions& o);

// Every matrix the pass above encodes, encoded in each of `types` (nullopt: a candidate that is not
// a ggml type, left alone) — not sequential: on the float model's inputs, as --bpw measures every
// unit alone over the float model — so that the allocation measures each unit as it will be written
// (AllocOptions::encoded). One calibration sweep for all types (each layer's Hessians collected
// once, every type encoded from them); the spools (spool_prefix + ".<k>") are removed with this object.
struct GGUFCandidateEncodings {
  std::vector<std::shared_ptr<GGUFGPTQSpool>> spools;     // per candidate (null: nothing encoded)
  std::map<std::pair<Role, int64_t>, std::string> names;  // (role, layer) → GGUF tensor name (head: layer −1)
  std::vector<std::string> warnings;
  // Candidate k's encoded bytes of matrix (role, layer, expert), or nullopt where it has none.
  std::optional<std::vector<uint8_t>> get(size_t k, Role role, int64_t layer, int64_t expert) const;
};
GGUFCandidateEncodings encode_gguf_candidates(const Model& m, const GGUFExportPlan& plan,
                                              const std::vector<std::optional<GGMLType>>& types,
                                              const std::string& spool_prefix,
                                              const std::vector<std::vector<int32_t>>& chunks, GGUFGPTQOptions o);

}  // namespace moetool
