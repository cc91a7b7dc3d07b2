// formats/gptq.cc — GPTQ quantization_config and the per-module tensor layout (see gptq.h).
#include "formats/gptq.h"

#include "core/error.h"

namespace moetool {

namespace {

// Escapes a module name for the regular expressions of `dynamic` (Python's re syntax).
std::string regex_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (std::string_view(".^$*+?()[]{}|\\").find(c) != std::string_view::npos) o += '\\';
    o += c;
  }
  return o;
}

bool ends_with(const std::string& s, std::string_view suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

}  // namespace

std::string gptq_fused_rule(const std::string& module) {
  const auto ex = module.find(".experts.");
  if (ex != std::string::npos) {
    const auto tail = module.substr(ex + 9);
    const auto dot = tail.find('.');
    if (dot != std::string::npos && dot > 0 && tail.find_first_not_of("0123456789") == dot)
      return "^" + regex_escape(module.substr(0, ex)) + "\\.experts(\\.|$)";
  }
  for (const auto& [group, members] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"(q|k|v|qkv)_proj", {".q_proj", ".k_proj", ".v_proj"}},
           {"(gate|up|gate_up)_proj", {".gate_proj", ".up_proj"}}})
    for (const auto& m : members)
      if (ends_with(module, m)) return "^" + regex_escape(module.substr(0, module.size() - m.size())) + "\\." + group + "$";
  return "^" + regex_escape(module) + "$";
}

nlohmann::ordered_json GPTQConfig::to_json() const {
  nlohmann::ordered_json q;
  q["quant_method"] = "gptq";
  q["bits"] = bits;
  q["group_size"] = group_size;
  q["desc_act"] = desc_act;
  q["sym"] = sym;
  q["damp_percent"] = damp_percent;
  q["true_sequential"] = true_sequential;
  q["static_groups"] = static_groups;
  q["lm_head"] = false;
  q["checkpoint_format"] = checkpoint_format;
  q["pack_dtype"] = "int32";
  // GPTQModel and vLLM match these keys with re.match against the module name ("+:" = override,
  // "-:" = leave unquantized). One anchored entry per module keeps the semantics unambiguous.
  nlohmann::ordered_json dyn = nlohmann::ordered_json::object();
  std::map<std::string, nlohmann::ordered_json> overrides;  // module → {bits, group_size}
  for (const auto& [m, b] : module_bits) overrides[m]["bits"] = b;
  for (const auto& [m, g] : module_group_size) overrides[m]["group_size"] = g;
  for (const auto& [m, o] : overrides) {
    const std::string key = "+:" + (fused_rules ? gptq_fused_rule(m) : "^" + regex_escape(m) + "$");
    if (dyn.contains(key) && dyn[key] != o)
      fail("GPTQ config: modules of the fused group '", key, "' are stored differently (", dyn[key].dump(), " and ",
           o.dump(), " for '", m, "')");
    dyn[key] = o;
  }
  for (const auto& m : unquantized_modules) dyn["-:^" + regex_escape(m) + "$"] = nlohmann::ordered_json::object();
  if (!dyn.empty()) q["dynamic"] = dyn;
  if (!unquantized_modules.empty() && !quantized_modules.empty())
    q["modules_in_block_to_quantize"] = nlohmann::ordered_json::array({quantized_modules});
  if (!quantizer.empty()) q["meta"] = {{"quantizer", nlohmann::ordered_json::array({quantizer})}};
  return q;
}

GPTQConfig GPTQConfig::from_json(const nlohmann::json& q, const std::string& what) {
  if (!q.is_object()) fail(what, ": quantization_config is not an object");
  GPTQConfig c;
  const std::string method = q.value("quant_method", std::string());
  if (method != "gptq") fail(what, ": quantization_config.quant_method is '", method, "', expected 'gptq'");
  try {
    c.bits = q.value("bits", 4);
    c.group_size = q.value("group_size", int64_t{128});
    c.desc_act = q.value("desc_act", false);
    c.sym = q.value("sym", true);
    c.true_sequential = q.value("true_sequential", true);
    c.static_groups = q.value("static_groups", false);
    c.damp_percent = q.value("damp_percent", 0.01);
    c.checkpoint_format = q.value("checkpoint_format", std::string("gptq"));
  } catch (const nlohmann::json::exception& e) {
    fail(what, ": quantization_config: ", e.what());
  }
  if (c.bits < 2 || c.bits > 8) fail(what, ": quantization_config.bits = ", c.bits, ", expected 2..8");
  if (c.checkpoint_format != "gptq")
    fail(what, ": quantization_config.checkpoint_format '", c.checkpoint_format,
         "' is not supported (moetool reads the v1 'gptq' layout)");
  return c;
}

std::optional<GPTQConfig> gptq_config_of(const nlohmann::json& raw, const std::string& what) {
  if (!raw.is_object() || !raw.contains("quantization_config")) return std::nullopt;
  const auto& q = raw["quantization_config"];
  if (q.is_object() && q.value("quant_method", std::string()) != "gptq")
    fail(what, ": quantization method '", q.value("quant_method", std::string("?")),
         "' is not supported (moetool runs GPTQ checkpoints and GGUF files)");
  return GPTQConfig::from_json(q, what);
}

std::optional<std::string> gptq_module_of(const std::string& weight_name) {
  static const std::string suffix = ".weight";
  if (weight_name.size() <= suffix.size() ||
      weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  return weight_name.substr(0, weight_name.size() - suffix.size());
}

std::vector<std::string> gptq_tensor_names(const std::string& module) {
  return {module + ".qweight", module + ".qzeros", module + ".scales", module + ".g_idx"};
}

std::optional<GPTQLinear> find_gptq_linear(const Checkpoint& ck, const std::string& weight_name, int64_t rows,
                                           int64_t cols) {
  const auto module = gptq_module_of(weight_name);
  if (!module) return std::nullopt;
  return find_gptq_module(ck, *module, rows, cols);
}

std::optional<GPTQLinear> find_gptq_module(const Checkpoint& ck, const std::string& name, int64_t rows,
                                           int64_t cols) {
  const std::string* module = &name;
  if (!ck.has(*module + ".qweight")) return std::nullopt;
  const std::string where = str(ck.dir(), ": GPTQ module '", *module, "'");
  for (const auto& n : gptq_tensor_names(*module))
    if (!ck.has(n)) fail(where, ": tensor '", n, "' is missing");
  const TensorInfo& qw = ck.info(*module + ".qweight");
  const TensorInfo& qz = ck.info(*module + ".qzeros");
  const TensorInfo& sc = ck.info(*module + ".scales");
  const TensorInfo& gi = ck.info(*module + ".g_idx");
  if (qw.dtype != DType::I32 || qz.dtype != DType::I32 || gi.dtype != DType::I32 || sc.dtype != DType::F16)
    fail(where, ": expected qweight/qzeros/g_idx I32 and scales F16, got ", dtype_name(qw.dtype), "/",
         dtype_name(qz.dtype), "/", dtype_name(gi.dtype), " and ", dtype_name(sc.dtype));
  if (qw.shape.size() != 2 || qz.shape.size() != 2 || sc.shape.size() != 2 || gi.shape.size() != 1)
    fail(where, ": expected 2-D qweight/qzeros/scales and 1-D g_idx");
  GPTQLinear g;
  g.module = *module;
  g.rows = rows;
  g.cols = cols;
  if (qw.shape[1] != rows || cols <= 0 || (qw.shape[0] * 32) % cols != 0)
    fail(where, ": qweight shape ", shape_str(qw.shape), " fits no bit width for a [", rows, ", ", cols,
         "] weight (expected [", cols, "·bits/32, ", rows, "])");
  g.bits = static_cast<int>(qw.shape[0] * 32 / cols);
  if (g.bits < 2 || g.bits > 8)
    fail(where, ": qweight shape ", shape_str(qw.shape), " implies ", g.bits, " bits, expected 2..8");
  g.ngroups = sc.shape[0];
  if (sc.shape[1] != rows || g.ngroups < 1 || g.ngroups > cols)
    fail(where, ": scales shape ", shape_str(sc.shape), ", expected [ngroups, ", rows, "]");
  if (qz.shape[0] != g.ngroups || qz.shape[1] * 32 != rows * g.bits)
    fail(where, ": qzeros shape ", shape_str(qz.shape), ", expected [", g.ngroups, ", ", rows * g.bits / 32, "]");
  if (gi.shape[0] != cols) fail(where, ": g_idx shape ", shape_str(gi.shape), ", expected [", cols, "]");
  return g;
}

}  // namespace moetool
