// compress/quantize_ct.cc — compressed-tensors output of the GPTQ pass (see quantize_ct.h).
#include "compress/quantize_ct.h"

#include <map>
#include <set>

#include "compress/quantize_int.h"
#include "core/error.h"

namespace moetool {

DType ct_scale_dtype(const Model& m) { return m.dequantized_dtype() == DType::F32 ? DType::F32 : DType::F16; }

std::vector<TensorSpec> ct_specs(const Model& m, const std::string& module, int bits, int64_t rows, int64_t cols,
                                 int64_t ngroups) {
  const DType sdt = ct_scale_dtype(m);
  const auto n = ct_tensor_names(module);
  return {{n[0], DType::I32, {rows, ct_packed_cols(cols, bits)}}, {n[1], sdt, {rows, ngroups}}, {n[2], DType::I64, {2}}};
}

CTConfig ct_config_for(const Model& m, const GPTQConfig& qc) {
  CTConfig c;
  c.quantizer = qc.quantizer;
  // The main group takes every Linear; modules stored otherwise get groups naming them exactly (an
  // exact name outranks the class in compressed-tensors' matching).
  c.groups.push_back({qc.bits, qc.group_size, {"Linear"}});
  std::map<std::pair<int, int64_t>, std::vector<std::string>> others;
  for (const auto& mod : qc.quantized_modules) {
    const auto b = qc.module_bits.find(mod);
    const auto g = qc.module_group_size.find(mod);
    const std::pair<int, int64_t> key{b != qc.module_bits.end() ? b->second : qc.bits,
                                      g != qc.module_group_size.end() ? g->second : qc.group_size};
    if (key != std::make_pair(qc.bits, qc.group_size)) others[key].push_back(mod);
  }
  for (auto& [k, mods] : others) c.groups.push_back({k.first, k.second, std::move(mods)});
  std::set<std::string> ignore(qc.unquantized_modules.begin(), qc.unquantized_modules.end());
  for (const auto& s : m.family().tensors(m.config()))
    if (s.shape.size() == 2 && s.role != Role::Embed && !int_quantizable_role(s.role))
      if (const auto mod = gptq_module_of(s.name)) ignore.insert(*mod);  // routers, the output head
  // The output head also when tied (the table then has no slot for it): transformers still builds it as a
  // Linear, and replacing that would break the tie.
  if (const auto head = gptq_module_of(m.family().tensor_name(Role::LmHead))) ignore.insert(*head);
  c.ignore.assign(ignore.begin(), ignore.end());
  return c;
}

CTTensors ct_from_gptq(const GPTQTensors& t, const std::string& module) {
  return ct_from_int(gptq_unpack(t, module), module);
}

}  // namespace moetool
