// formats/checkpoint_writer.cc — output plans and the staged, streaming checkpoint writer (see
// checkpoint_writer.h).
#include "formats/checkpoint_writer.h"

#include <algorithm>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "core/fs.h"
#include "formats/checkpoint_files.h"

namespace moetool {

namespace {

// The source's tensor at slot `s`; nullopt when the source has none there (also for layers and
// experts beyond the source's counts, which a fused expert layout could not slice).
std::optional<Tensor> source_tensor(const Model& m, const Slot& s) {
  const ModelConfig& c = m.config();
  if (s.layer >= c.num_layers) return std::nullopt;
  if (s.expert >= 0 && (!c.moe || s.layer < 0 || !c.is_moe_layer(s.layer) || s.expert >= c.moe->num_experts))
    return std::nullopt;
  return m.find(s.role, s.layer, s.expert);
}

Slot slot_of(const TensorSlot& s) { return {s.role, s.layer, s.expert}; }

}  // namespace

std::string slot_str(const Slot& s) {
  std::string out = role_name(s.role);
  if (s.layer >= 0) out += str(" of layer ", s.layer);
  if (s.expert >= 0) out += str(", expert ", s.expert);
  return out;
}

// ---------------------------------------------------------------------------------------------------

CheckpointPlan::CheckpointPlan(const Family& family, ModelConfig config, const Model* source,
                               const DTypeRule& new_dtype)
    : family_(&family), config_(std::move(config)), source_(source), table_(family.tensors(config_)) {
  specs_.reserve(table_.size());
  for (size_t i = 0; i < table_.size(); ++i) {
    const TensorSlot& s = table_[i];
    const std::optional<Tensor> t = source ? source_tensor(*source, slot_of(s)) : std::nullopt;
    if (!t && !new_dtype) fail("tensor '", s.name, "' (", slot_str(slot_of(s)), "): the source has no tensor there");
    // A block-FP8 or compressed-tensors source tensor is read dequantized (F32); the output stores it in
    // the model's float dtype (a pass that writes a quantized form replaces the tensor itself).
    const DType dt = !t ? new_dtype(s)
                     : source->dequantized_on_read(s.role, s.layer, s.expert) ? source->dequantized_dtype()
                                                                              : t->dtype;
    specs_.push_back({TensorSpec{s.name, dt, s.shape}});
    by_name_.emplace(s.name, i);
    by_slot_.emplace(slot_of(s), i);
  }
}

size_t CheckpointPlan::entry(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) fail("tensor '", name, "' is not in the ", family_->name(), " tensor table");
  return it->second;
}

const TensorSpec* CheckpointPlan::find(const Slot& s) const {
  auto it = by_slot_.find(s);
  if (it == by_slot_.end()) return nullptr;
  const auto& v = specs_[it->second];
  return v.size() == 1 && v[0].name == table_[it->second].name ? &v[0] : nullptr;
}

void CheckpointPlan::set_dtype(const std::string& name, DType dt) {
  const size_t e = entry(name);
  auto& v = specs_[e];
  if (v.size() != 1 || v[0].name != name) fail("tensor '", name, "' was replaced in the plan; its dtype cannot change");
  v[0].dtype = dt;
}

void CheckpointPlan::replace(const std::string& name, std::vector<TensorSpec> specs) {
  specs_[entry(name)] = std::move(specs);
}

std::vector<PlannedTensor> CheckpointPlan::tensors() const {
  std::vector<PlannedTensor> out;
  out.reserve(table_.size());
  for (size_t i = 0; i < table_.size(); ++i)
    for (const auto& sp : specs_[i]) out.push_back({sp, slot_of(table_[i]), sp.name == table_[i].name});
  return out;
}

uint64_t CheckpointPlan::bytes() const {
  uint64_t b = 0;
  for (const auto& v : specs_)
    for (const auto& sp : v) b += static_cast<uint64_t>(numel(sp.shape)) * dtype_size(sp.dtype);
  return b;
}

// ---------------------------------------------------------------------------------------------------

struct CheckpointWriter::Impl {
  explicit Impl(CheckpointPlan p) : plan(std::move(p)) {}

  CheckpointPlan plan;
  std::string dir;                      // the final output path, for messages
  std::vector<PlannedTensor> tensors;   // file order
  std::map<std::string, size_t> by_name;
  std::map<Slot, size_t> by_slot;       // own tensors only
  std::vector<char> started;            // a write of tensor i has begun
  std::vector<std::string> files;       // config.json, tokenizer and extra files
  uint64_t bytes = 0;
  std::unique_ptr<OutputDir> out;
  std::unique_ptr<SafetensorsWriter> st;  // destroyed before `out` (its temporaries live in the staging)
  mutable std::mutex mu;

  size_t index(const std::string& name) const {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail(dir, ": tensor '", name, "' is not part of the planned checkpoint");
    return it->second;
  }
  size_t index(const Slot& s) const {
    auto it = by_slot.find(s);
    if (it == by_slot.end())
      fail(dir, ": no tensor for ", slot_str(s), " is planned in this ", plan.family().name(), " checkpoint");
    return it->second;
  }
  const std::string& name(size_t i) const { return tensors[i].spec.name; }
  // Marks tensor i begun; the caller holds `mu`.
  void begin(size_t i) { started[i] = 1; }
  void mark(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    begin(i);
  }
  bool is_started(size_t i) const {
    std::lock_guard<std::mutex> lock(mu);
    return started[i] != 0;
  }
  void write_tensor(size_t i, const Tensor& t) {
    std::lock_guard<std::mutex> lock(mu);
    begin(i);
    st->write(name(i), t);
  }
  void write_chunk(size_t i, uint64_t off, const void* data, size_t nbytes) {
    std::lock_guard<std::mutex> lock(mu);
    begin(i);
    st->write_chunk(name(i), off, data, nbytes);
  }
  // The source tensor copy_untouched would copy into tensor i.
  std::optional<Tensor> untouched(size_t i) const {
    const PlannedTensor& p = tensors[i];
    if (!plan.source() || !p.own || is_started(i)) return std::nullopt;
    auto t = source_tensor(*plan.source(), p.slot);
    if (!t || t->shape != p.spec.shape) return std::nullopt;
    return t;
  }
};

CheckpointWriter::CheckpointWriter(const std::string& out_dir, const nlohmann::ordered_json& config,
                                   CheckpointPlan plan, const CheckpointWriterOptions& opt)
    : impl_(std::make_unique<Impl>(std::move(plan))) {
  Impl& m = *impl_;
  m.dir = out_dir;
  m.tensors = m.plan.tensors();
  std::vector<TensorSpec> specs;
  specs.reserve(m.tensors.size());
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const PlannedTensor& p = m.tensors[i];
    specs.push_back(p.spec);
    m.by_name.emplace(p.spec.name, i);
    if (p.own) m.by_slot.emplace(p.slot, i);
    m.bytes += static_cast<uint64_t>(numel(p.spec.shape)) * dtype_size(p.spec.dtype);
  }
  m.started.assign(m.tensors.size(), 0);
  m.out = std::make_unique<OutputDir>(out_dir, opt.overwrite);
  write_file_atomic(m.out->file("config.json"), config.dump(2) + "\n");
  m.files.push_back("config.json");
  if (!opt.tokenizer_dir.empty())
    for (const auto& f : tokenizer_files(opt.tokenizer_dir)) {
      write_file_atomic(m.out->file(f), read_file(path_join(opt.tokenizer_dir, f)));
      m.files.push_back(f);
    }
  for (const auto& [f, text] : opt.extra_files) {
    write_file_atomic(m.out->file(f), text);
    m.files.push_back(f);
  }
  m.st = std::make_unique<SafetensorsWriter>(m.out->staging(), std::move(specs), opt.metadata, opt.max_shard_bytes);
}

CheckpointWriter::~CheckpointWriter() = default;
CheckpointWriter::CheckpointWriter(CheckpointWriter&&) noexcept = default;

const CheckpointPlan& CheckpointWriter::plan() const { return impl_->plan; }
uint64_t CheckpointWriter::bytes() const { return impl_->bytes; }

const TensorSpec& CheckpointWriter::spec(const Slot& s) const { return impl_->tensors[impl_->index(s)].spec; }
const TensorSpec& CheckpointWriter::spec(const std::string& name) const {
  return impl_->tensors[impl_->index(name)].spec;
}

void CheckpointWriter::write(const Slot& s, const Tensor& t) { impl_->write_tensor(impl_->index(s), t); }

void CheckpointWriter::write(const std::string& name, const void* data, size_t nbytes) {
  Impl& m = *impl_;
  const size_t i = m.index(name);
  std::lock_guard<std::mutex> lock(m.mu);
  m.begin(i);
  m.st->write(name, data, nbytes);
}

void CheckpointWriter::write_chunk(const std::string& name, uint64_t byte_offset, const void* data, size_t nbytes) {
  impl_->write_chunk(impl_->index(name), byte_offset, data, nbytes);
}

void CheckpointWriter::write_f32(const Slot& s, const float* v, size_t n) {
  write_f32(impl_->tensors[impl_->index(s)].spec.name, v, n);
}

void CheckpointWriter::write_f32(const std::string& name, const float* v, size_t n) {
  Impl& m = *impl_;
  const size_t i = m.index(name);
  const TensorSpec& sp = m.tensors[i].spec;
  check(static_cast<int64_t>(n) == numel(sp.shape), m.dir, ": tensor '", sp.name, "': ", n, " values for shape ",
        shape_str(sp.shape));
  if (sp.dtype == DType::F32) return write(sp.name, v, n * 4);
  m.mark(i);  // also when n = 0
  constexpr size_t kChunk = size_t{1} << 20;
  const size_t es = dtype_size(sp.dtype);
  std::vector<uint8_t> buf(std::min(n, kChunk) * es);
  for (size_t b = 0; b < n; b += kChunk) {
    const size_t c = std::min(kChunk, n - b);
    convert(DType::F32, v + b, sp.dtype, buf.data(), c);
    m.write_chunk(i, b * es, buf.data(), c * es);
  }
}

void CheckpointWriter::write_zeros(const Slot& s) {
  Impl& m = *impl_;
  const size_t i = m.index(s);
  const TensorSpec& sp = m.tensors[i].spec;
  const size_t nb = static_cast<size_t>(numel(sp.shape)) * dtype_size(sp.dtype);
  m.mark(i);  // also when nb = 0
  std::vector<uint8_t> z(std::min<size_t>(nb, size_t{1} << 22), 0);
  for (size_t b = 0; b < nb; b += z.size()) m.write_chunk(i, b, z.data(), std::min(z.size(), nb - b));
}

void CheckpointWriter::copy(const Slot& out, const Slot& from) {
  Impl& m = *impl_;
  const size_t i = m.index(out);
  const TensorSpec& sp = m.tensors[i].spec;
  const Model* src = m.plan.source();
  if (!src) fail(m.dir, ": tensor '", sp.name, "': no source model to copy it from");
  const std::optional<Tensor> t = source_tensor(*src, from);
  if (!t) fail(m.dir, ": tensor '", sp.name, "': the source ", src->checkpoint().dir(), " has no ", slot_str(from));
  if (t->shape != sp.shape)
    fail(m.dir, ": tensor '", sp.name, "': the source's ", slot_str(from), " has shape ", shape_str(t->shape),
         ", planned ", shape_str(sp.shape));
  m.write_tensor(i, *t);
  release_pages(src->checkpoint(), *t);
}

void CheckpointWriter::copy_untouched(int64_t layer) {
  Impl& m = *impl_;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    if (m.tensors[i].slot.layer != layer) continue;
    if (const auto t = m.untouched(i)) {
      m.write_tensor(i, *t);
      release_pages(m.plan.source()->checkpoint(), *t);
    }
  }
}

void CheckpointWriter::prefetch(int64_t layer) const {
  const Impl& m = *impl_;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    if (m.tensors[i].slot.layer != layer) continue;
    if (const auto t = m.untouched(i)) prefetch_pages(m.plan.source()->checkpoint(), *t);
  }
}

std::vector<std::string> CheckpointWriter::finish() {
  Impl& m = *impl_;
  check(m.st != nullptr, m.dir, ": the checkpoint was already finished");
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const PlannedTensor& p = m.tensors[i];
    if (m.started[i] || numel(p.spec.shape) == 0) continue;
    std::string why;
    if (p.own && m.plan.source()) {
      const auto t = source_tensor(*m.plan.source(), p.slot);
      why = t ? str("; the source's has shape ", shape_str(t->shape), ", planned ", shape_str(p.spec.shape))
              : std::string("; the source has none");
    }
    fail(m.dir, ": tensor '", p.spec.name, "' (", slot_str(p.slot), ") was planned but never written", why);
  }
  std::vector<std::string> files = m.st->finish();
  m.st.reset();
  files.insert(files.begin(), m.files.begin(), m.files.end());
  m.out->commit();
  return files;
}

}  // namespace moetool
