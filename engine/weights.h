// engine/weights.h — storage-agnostic access to a model's weights by role, for the engine and
// the compress passes: matrices come back as WeightMatrix (dense, quantized or factored), vectors
// (norms, biases) as float32. The safetensors implementation wraps formats/model.h; GGUF and
// GPTQ sources join it as those formats gain writers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/family.h"
#include "formats/model.h"
#include "kernels/linear.h"

namespace moetool {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual std::string path() const = 0;
  virtual bool has(Role r, int64_t layer = -1, int64_t expert = -1) const = 0;
  // A 2-D weight; throws moetool::Error naming the model and tensor if absent.
  virtual std::shared_ptr<const WeightMatrix> matrix(Role r, int64_t layer = -1, int64_t expert = -1) const = 0;
  // A 1-D weight (norm, bias) as float32; throws if absent.
  virtual std::vector<float> vector(Role r, int64_t layer = -1, int64_t expert = -1) const = 0;
  // Rows `ids` of the token embedding, as float32: out[n, hidden].
  virtual void embed_rows(const int32_t* ids, int64_t n, float* out) const = 0;
};

// Weights of a Hugging Face safetensors checkpoint (memory-mapped; F32 used in place, other float
// dtypes converted to f32 when a layer is loaded).
std::shared_ptr<const WeightSource> safetensors_weights(const Model& m);
// Weights of a GGUF file (verify/weights_gguf.cc): config from its metadata, quantized tensors
// multiplied in their stored ggml type.
std::shared_ptr<const WeightSource> gguf_weights(const std::string& path);
// Opens any checkpoint moetool can run: a Hugging Face safetensors directory (or file), or a
// .gguf file.
std::shared_ptr<const WeightSource> open_weights(const std::string& path);

}  // namespace moetool
