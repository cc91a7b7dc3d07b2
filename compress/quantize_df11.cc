// compress/quantize_df11.cc — the DF11 / BF16 writer (see quantize_df11.h).
#include "compress/quantize_df11.h"

#include <chrono>

#include "core/error.h"
#include "formats/checkpoint_writer.h"

namespace moetool {
namespace {

bool coded_slot(const TensorSlot& s) { return s.shape.size() >= 2 && numel(s.shape) > 0; }

// The slot's tensor as BF16 bits (rounded from other float dtypes).
std::vector<uint16_t> bf16_of(const Model& m, const TensorSlot& s, int64_t& rounded) {
  auto t = m.find(s.role, s.layer, s.expert);
  if (!t) fail(m.checkpoint().dir(), ": tensor '", s.name, "' (", role_name(s.role), ") not found");
  std::vector<uint16_t> v(static_cast<size_t>(t->numel()));
  if (t->dtype != DType::BF16) ++rounded;
  convert(t->dtype, t->data, DType::BF16, v.data(), v.size());
  return v;
}

}  // namespace

DF11Report write_df11(const Model& m, const std::string& out_dir, const DF11Options& o, bool dry_run) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string what = m.checkpoint().dir();
  if (o.block <= 0) fail("DF11 block ", o.block, ": expected a positive number of values");
  if (m.lowrank_layout() || m.fp8() || m.compressed_tensors() || m.df11())
    fail(what, ": a ", m.lowrank_layout() ? "low-rank" : m.fp8() ? "block-FP8" : m.compressed_tensors() ? "compressed-tensors" : "DF11",
         " checkpoint; DF11 codes a float model losslessly (write the float model first)");
  DF11Report rep;
  rep.output = out_dir;
  rep.coded = o.coded;
  rep.block = o.block;
  CheckpointPlan plan(m.family(), m.config(), &m, [&](const TensorSlot& s) -> DType {
    fail(what, ": tensor '", s.name, "' (", role_name(s.role), ") not found");
  });
  const auto table = plan.table();
  int64_t rounded = 0;
  for (const auto& s : table) {
    if (m.gptq(s.role, s.layer, s.expert)) fail(what, ": '", s.name, "' is GPTQ-quantized; DF11 needs float weights");
    rep.bf16_bytes += 2u * static_cast<uint64_t>(numel(s.shape));
    if (!o.coded || !coded_slot(s)) {
      plan.set_dtype(s.name, DType::BF16);
      continue;
    }
    // Planning pass: the coded size of every block.
    const std::vector<uint16_t> v = bf16_of(m, s, rounded);
    const int64_t n = static_cast<int64_t>(v.size()), nb = (n + o.block - 1) / o.block;
    const int64_t eb = df11_exp_bytes(v.data(), n, o.block);
    const auto nm = df11_tensor_names(s.name);
    plan.replace(s.name, {{nm[0], DType::U8, {256}}, {nm[1], DType::I64, {nb + 1}}, {nm[2], DType::U8, {eb}},
                          {nm[3], DType::U8, {n}}, {nm[4], DType::I64, {static_cast<int64_t>(s.shape.size())}},
                          {nm[5], DType::I64, {nb}}});
    DF11TensorRecord r;
    r.name = s.name, r.n = n, r.bf16_bytes = 2u * static_cast<uint64_t>(n);
    r.stored_bytes = 256u + 8u * static_cast<uint64_t>(2 * nb + 1) + static_cast<uint64_t>(eb + n) + 8u * s.shape.size();
    r.exponent_bits = n ? 8.0 * static_cast<double>(eb) / static_cast<double>(n) : 0;
    rep.tensors.push_back(r);
  }
  rep.bytes = plan.bytes();
  rep.rounded_from_f32 = rounded;
  if (dry_run) return rep;
  nlohmann::ordered_json cj = nlohmann::ordered_json::parse(m.config().raw.dump());
  cj.erase("quantization_config");
  cj["torch_dtype"] = "bfloat16";
  if (o.coded) cj["moetool_df11"] = df11_config_json(o.block);
  CheckpointWriterOptions wo;
  wo.overwrite = o.overwrite;
  wo.max_shard_bytes = o.max_shard_bytes;
  wo.metadata = o.metadata;
  wo.tokenizer_dir = m.checkpoint().dir();
  CheckpointWriter w(out_dir, cj, std::move(plan), wo);
  int64_t ignored = 0;
  for (int64_t l = -1; l < m.config().num_layers; ++l) {
    int coded = 0;
    if (o.coded)
      for (const auto& s : table) {
        if (s.layer != l || !coded_slot(s)) continue;
        const std::vector<uint16_t> v = bf16_of(m, s, ignored);
        const DF11Encoded e = df11_encode(v.data(), static_cast<int64_t>(v.size()), o.block);
        const auto nm = df11_tensor_names(s.name);
        w.write(nm[0], e.lengths.data(), e.lengths.size());
        w.write(nm[1], e.offsets.data(), e.offsets.size() * 8);
        w.write(nm[2], e.exp.data(), e.exp.size());
        w.write(nm[3], e.sm.data(), e.sm.size());
        w.write(nm[4], s.shape.data(), s.shape.size() * 8);
        w.write(nm[5], e.hash.data(), e.hash.size() * 8);
        ++coded;
      }
    w.copy_untouched(l);
    if (o.progress && l >= 0)
      o.progress(str("layer ", l + 1, "/", m.config().num_layers, ": ", coded, " tensors ",
                     o.coded ? "DF11-coded" : "written", " as BF16"));
  }
  w.finish();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace moetool
