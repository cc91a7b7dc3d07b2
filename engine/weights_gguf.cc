// verify/weights_gguf.cc — WeightSource over a GGUF file (llama.cpp's format, as moetool quantize
// writes it or llama.cpp's converter does): the config is rebuilt from the GGUF metadata through
// the family's GGUF tables (formats/gguf_config.h), matrices stay in their stored ggml type and
// are multiplied by dequantizing tiles (kernels/linear_quant.h), llama's q/k row permutation is
// undone row by row (whole quantized rows move, nothing is requantized), and stacked expert tensors
// [E, rows, cols] are sliced per expert without copying.
#include <cstring>

#include "formats/ggml_quants.h"
#include "core/error.h"
#include "formats/gguf_config.h"
#include "kernels/linear_quant.h"
#include "engine/weights.h"

namespace moetool {
namespace {

class GGUFWeights final : public WeightSource {
 public:
  explicit GGUFWeights(std::shared_ptr<GGUFFile> f)
      : f_(std::move(f)), family_(&family_of_gguf(*f_)), arch_(family_->gguf_arch()),
        config_(model_config_of_gguf(*f_)) {}

  const ModelConfig& config() const override { return config_; }
  std::string path() const override { return f_->path(); }

  bool has(Role r, int64_t layer, int64_t expert) const override {
    (void)expert;
    const auto ref = resolve(r, layer);
    return ref && f_->has_tensor(ref->name);
  }

  std::shared_ptr<const WeightMatrix> matrix(Role r, int64_t layer, int64_t expert) const override {
    const auto ref = need(r, layer);
    const GGUFTensorInfo& info = f_->tensor_info(ref.name);
    const GGUFRawTensor raw = f_->raw_tensor(info);
    const std::string what = path() + ": " + ref.name;
    int64_t rows, cols;
    std::span<const uint8_t> bytes = raw.bytes;
    if (ref.stacked) {
      if (info.ne.size() != 3) fail(what, ": expected a 3-D stacked expert tensor, got ", info.ne.size(), " dims");
      cols = info.ne[0];
      rows = info.ne[1];
      if (expert < 0 || expert >= info.ne[2])
        fail(what, ": expert ", expert, " out of range [0, ", info.ne[2], ")");
      const size_t per = static_cast<size_t>(rows) * ggml_row_size(info.type, cols, what);
      bytes = bytes.subspan(static_cast<size_t>(expert) * per, per);
    } else if (ref.squeeze || info.ne.size() == 1) {
      cols = info.ne[0];
      rows = 1;
    } else {
      if (info.ne.size() != 2) fail(what, ": expected a 2-D matrix, got ", info.ne.size(), " dims");
      cols = info.ne[0];
      rows = info.ne[1];
    }
    if (ref.permute_heads > 0) {
      // Undo llama.cpp's rotary permutation: whole (quantized) rows change places.
      const size_t rb = ggml_row_size(info.type, cols, what);
      auto buf = std::make_shared<std::vector<uint8_t>>(bytes.size());
      gguf_unpermute_rows(bytes.data(), buf->data(), rows, rb, ref.permute_heads);
      return make_quant_matrix(info.type, rows, cols, std::span<const uint8_t>(buf->data(), buf->size()),
                               std::shared_ptr<const void>(buf, buf->data()), what);
    }
    if (info.type == GGMLType::F32) {
      // F32 in place, as the safetensors source does (the engine keeps such layers loaded).
      Tensor t;
      t.dtype = DType::F32;
      t.shape = {rows, cols};
      t.data = const_cast<uint8_t*>(bytes.data());
      t.owner = raw.owner;
      return make_dense_matrix(t, what);
    }
    return make_quant_matrix(info.type, rows, cols, bytes, raw.owner, what);
  }

  std::vector<float> vector(Role r, int64_t layer, int64_t expert) const override {
    (void)expert;
    const auto ref = need(r, layer);
    const GGUFTensorInfo& info = f_->tensor_info(ref.name);
    const GGUFRawTensor raw = f_->raw_tensor(info);
    const std::string what = path() + ": " + ref.name;
    const int64_t n = info.numel();
    std::vector<float> v(static_cast<size_t>(n));
    dequantize_rows(info.type, raw.bytes.data(), v.data(), 1, n, what);
    if (ref.permute_heads > 0) {
      std::vector<float> u(v.size());
      gguf_unpermute_rows(v.data(), u.data(), n, 4, ref.permute_heads);
      v = std::move(u);
    }
    return v;
  }

  void embed_rows(const int32_t* ids, int64_t n, float* out) const override {
    const auto ref = need(Role::Embed, -1);
    const GGUFTensorInfo& info = f_->tensor_info(ref.name);
    if (info.ne.size() != 2) fail(path(), ": ", ref.name, " is not 2-D");
    const int64_t H = info.ne[0], V = info.ne[1];
    const GGUFRawTensor raw = f_->raw_tensor(info);
    const size_t rb = ggml_row_size(info.type, H, ref.name);
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= V) fail(path(), ": token id ", ids[i], " out of range [0, ", V, ")");
      dequantize_row(info.type, raw.bytes.data() + static_cast<size_t>(ids[i]) * rb, out + i * H, H);
    }
  }

 private:
  // The GGUF tensor of a role; LmHead of a tied model (no output.weight) is token_embd.
  std::optional<GGUFTensorRef> resolve(Role r, int64_t layer) const {
    auto ref = arch_->tensor(config_, r, layer);
    if (!ref && r == Role::LmHead && config_.tie_word_embeddings) ref = arch_->tensor(config_, Role::Embed, -1);
    return ref;
  }
  GGUFTensorRef need(Role r, int64_t layer) const {
    const auto ref = resolve(r, layer);
    if (!ref) fail(path(), ": no GGUF tensor for ", role_name(r), layer >= 0 ? str(" of layer ", layer) : "");
    if (!f_->has_tensor(ref->name)) fail(path(), ": tensor '", ref->name, "' (", role_name(r), ") not found");
    return *ref;
  }

  std::shared_ptr<GGUFFile> f_;
  const Family* family_;
  const GGUFArch* arch_;
  ModelConfig config_;
};

}  // namespace

std::shared_ptr<const WeightSource> gguf_weights(const std::string& path) {
  return std::make_shared<GGUFWeights>(GGUFFile::open(path));
}

}  // namespace moetool
