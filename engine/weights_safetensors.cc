// engine/weights_safetensors.cc — WeightSource over a Hugging Face safetensors checkpoint.
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "core/fs.h"
#include "formats/file_kind.h"
#include "formats/df11.h"
#include "kernels/linear_df11.h"
#include "kernels/linear_gptq.h"
#include "kernels/linear_lowrank.h"
#include "engine/weights.h"

namespace moetool {
namespace {

class SafetensorsWeights final : public WeightSource {
 public:
  explicit SafetensorsWeights(Model m) : m_(std::move(m)) {}
  const ModelConfig& config() const override { return m_.config(); }
  std::string path() const override { return m_.checkpoint().dir(); }
  bool has(Role r, int64_t layer, int64_t expert) const override {
    return m_.lowrank(r, layer, expert).has_value() || m_.has(r, layer, expert) ||
           m_.gptq(r, layer, expert).has_value();
  }
  std::shared_ptr<const WeightMatrix> matrix(Role r, int64_t layer, int64_t expert) const override {
    if (auto lr = m_.lowrank(r, layer, expert)) {
      // Factors multiplied as stored (U·(V·x), never re-formed into W); shared factors are the
      // same mapped tensor for every expert that uses them.
      std::optional<Tensor> base;
      if (!lr->base.empty()) base = factor(lr->base, lr->baseq);
      return make_lowrank_matrix(factor(lr->u, lr->uq), factor(lr->v, lr->vq), std::move(base),
                                 str(path(), ": ", lr->module));
    }
    if (!m_.has(r, layer, expert))
      if (auto g = m_.gptq(r, layer, expert)) return gptq_matrix(*g);
    if (auto n = m_.df11_tensor(r, layer, expert)) return df11_matrix(*n);
    Tensor t = m_.weight(r, layer, expert);
    return make_dense_matrix(t, str(path(), ": ", m_.family().tensor_name(r, layer, expert)));
  }
  std::vector<float> vector(Role r, int64_t layer, int64_t expert) const override {
    return m_.weight(r, layer, expert).to_f32();
  }
  void embed_rows(const int32_t* ids, int64_t n, float* out) const override {
    Tensor e = embedding();  // [V, H]
    const int64_t V = e.shape[0], H = e.shape[1];
    for (int64_t i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= V) fail(path(), ": token id ", ids[i], " out of range [0, ", V, ")");
      Tensor row = e.slice0(ids[i], ids[i] + 1);
      to_f32(row.dtype, row.data, out + i * H, static_cast<size_t>(H));
    }
  }

 private:
  // GPTQ tensors multiplied in place (dequantized tile by tile), kept alive by the mapping.
  std::shared_ptr<const WeightMatrix> gptq_matrix(const GPTQLinear& g) const {
    const auto& ck = m_.checkpoint();
    Tensor qw = ck.get(g.module + ".qweight"), qz = ck.get(g.module + ".qzeros");
    Tensor sc = ck.get(g.module + ".scales"), gi = ck.get(g.module + ".g_idx");
    return make_gptq_matrix(g.bits, g.rows, g.cols, g.ngroups, qw.as<const int32_t>(), qz.as<const int32_t>(),
                            sc.as<const uint16_t>(), gi.as<const int32_t>(),
                            std::make_shared<const std::vector<std::shared_ptr<const void>>>(
                                std::vector<std::shared_ptr<const void>>{qw.owner, qz.owner, sc.owner, gi.owner}),
                            str(path(), ": ", g.module));
  }
  // A DF11-coded 2-D tensor multiplied as coded (decoded once on first use, or on the GPU by the CUDA
  // engine), kept alive by the mapping.
  std::shared_ptr<const WeightMatrix> df11_matrix(const std::string& name) const {
    const auto& ck = m_.checkpoint();
    const int64_t block = m_.df11_block();
    const Shape shape = df11_check(ck, name, block);
    const std::string what = str(path(), ": '", name, "'");
    if (shape.size() != 2) fail(what, ": a DF11 weight of shape ", shape_str(shape), " (expected 2-D)");
    const auto nm = df11_tensor_names(name);
    const Tensor len = ck.get(nm[0]), off = ck.get(nm[1]), exp = ck.get(nm[2]), sm = ck.get(nm[3]), h = ck.get(nm[5]);
    PackedWeight pw;
    pw.kind = PackedWeight::Kind::Df11;
    pw.df11_block = block;
    pw.df11_nblocks = off.numel() - 1;
    pw.df11_exp_bytes = exp.numel();
    pw.df11_lengths = len.as<const uint8_t>();
    pw.df11_offsets = off.as<const int64_t>();
    pw.df11_exp = exp.as<const uint8_t>();
    pw.df11_sm = sm.as<const uint8_t>();
    pw.df11_hash = h.as<const uint64_t>();
    return make_df11_matrix(shape[0], shape[1], pw,
                            std::make_shared<const std::vector<std::shared_ptr<const void>>>(
                                std::vector<std::shared_ptr<const void>>{len.owner, off.owner, exp.owner, sm.owner, h.owner}),
                            what);
  }
  // A low-rank factor: the mapped float tensor, or a GPTQ-quantized one dequantized to float32 — once
  // while any matrix holds it, so a shared basis is decoded once for all the experts using it.
  Tensor factor(const std::string& name, const std::optional<GPTQLinear>& q) const {
    if (!q) return m_.checkpoint().get(name);
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = decoded_[name];
    if (auto alive = slot.second.lock()) {
      Tensor t = slot.first;
      t.owner = alive;
      return t;
    }
    Tensor t = Tensor::zeros(DType::F32, {q->rows, q->cols});
    gptq_matrix(*q)->to_dense(t.as<float>());
    slot.first = t;
    slot.first.owner.reset();
    slot.second = t.owner;
    return t;
  }
  // The embedding: mapped as stored, or — DF11-coded or FP8 — decoded once and kept (embed_rows runs
  // on every forward pass).
  Tensor embedding() const {
    if (!m_.df11() && !m_.fp8()) return m_.weight(Role::Embed);
    std::lock_guard<std::mutex> lock(mu_);
    if (!embed_) embed_ = m_.weight(Role::Embed);
    return *embed_;
  }
  Model m_;
  mutable std::optional<Tensor> embed_;
  mutable std::mutex mu_;
  mutable std::map<std::string, std::pair<Tensor, std::weak_ptr<const void>>> decoded_;
};

}  // namespace

std::shared_ptr<const WeightSource> safetensors_weights(const Model& m) {
  return std::make_shared<SafetensorsWeights>(m);
}

std::shared_ptr<const WeightSource> open_weights(const std::string& path) {
  // A GGUF file by its magic (whatever its name); anything else is read as a Hugging Face checkpoint,
  // whose parser names a file of another kind (formats/file_kind.h).
  if (!is_directory(path) && file_kind_of(path) == "GGUF") return gguf_weights(path);
  return safetensors_weights(Model::open(path));
}

}  // namespace moetool
