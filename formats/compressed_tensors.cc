// formats/compressed_tensors.cc — compressed-tensors "pack-quantized" config, packing and reading (see
// compressed_tensors.h).
#include "formats/compressed_tensors.h"

#include <regex>

#include "core/error.h"

namespace moetool {
namespace {

bool name_matches(const std::string& name, const std::string& target) {
  if (target.rfind("re:", 0) == 0) return std::regex_search(name, std::regex(target.substr(3)), std::regex_constants::match_continuous);
  return target == name;
}

}  // namespace

nlohmann::ordered_json CTConfig::to_json() const {
  nlohmann::ordered_json q;
  q["quant_method"] = "compressed-tensors";
  q["format"] = has_fp8() ? "float-quantized" : "pack-quantized";
  q["quantization_status"] = "compressed";
  auto& gs = q["config_groups"] = nlohmann::ordered_json::object();
  for (size_t i = 0; i < groups.size(); ++i) {
    const CTGroup& g = groups[i];
    nlohmann::ordered_json w;
    w["num_bits"] = g.fp8 ? 8 : g.bits;
    w["type"] = g.fp8 ? "float" : "int";
    w["symmetric"] = true;
    w["strategy"] = g.group_size > 0 && !g.fp8 ? "group" : "channel";
    w["group_size"] = g.group_size > 0 && !g.fp8 ? nlohmann::ordered_json(g.group_size) : nlohmann::ordered_json(nullptr);
    w["dynamic"] = false;
    w["actorder"] = nullptr;
    w["observer"] = "minmax";
    gs["group_" + std::to_string(i)] = {{"targets", g.targets}, {"weights", w}, {"input_activations", nullptr},
                                        {"output_activations", nullptr},
                                        {"format", g.fp8 ? "float-quantized" : "pack-quantized"}};
  }
  q["ignore"] = ignore;
  q["kv_cache_scheme"] = nullptr;
  q["sparsity_config"] = nlohmann::ordered_json::object();
  if (!quantizer.empty()) q["quantizer"] = quantizer;
  return q;
}

CTConfig CTConfig::from_json(const nlohmann::json& q, const std::string& what) {
  if (!q.is_object() || q.value("quant_method", std::string()) != "compressed-tensors")
    fail(what, ": quantization_config.quant_method is not 'compressed-tensors'");
  CTConfig c;
  try {
    const std::string fmt = q.value("format", std::string());
    const std::string status = q.value("quantization_status", std::string("compressed"));
    if (status != "compressed")
      fail(what, ": quantization_config.quantization_status is '", status, "', expected 'compressed'");
    if (!q.contains("config_groups") || !q["config_groups"].is_object() || q["config_groups"].empty())
      fail(what, ": quantization_config.config_groups is missing or empty");
    for (const auto& [name, g] : q["config_groups"].items()) {
      const std::string gf = g.value("format", fmt);
      if (gf != "pack-quantized" && gf != "float-quantized")
        fail(what, ": quantization_config group '", name, "' has format '", gf,
             "'; moetool reads compressed-tensors 'pack-quantized' (int weight-only) and 'float-quantized' (FP8 "
             "weight-only per channel)");
      const auto& w = g.at("weights");
      if (!g.value("input_activations", nlohmann::json()).is_null())
        fail(what, ": quantization_config group '", name, "' quantizes activations; moetool reads weight-only");
      CTGroup cg;
      if (gf == "float-quantized") {
        if (w.value("type", std::string()) != "float" || w.value("num_bits", 0) != 8 ||
            w.value("strategy", std::string()) != "channel")
          fail(what, ": quantization_config group '", name,
               "': expected 8-bit float weights with strategy channel (float-quantized), got ", w.dump());
        cg.fp8 = true, cg.bits = 8, cg.group_size = -1;
        cg.targets = g.at("targets").get<std::vector<std::string>>();
        c.groups.push_back(std::move(cg));
        continue;
      }
      if (w.value("type", std::string()) != "int" || !w.value("symmetric", true))
        fail(what, ": quantization_config group '", name, "': expected symmetric int weights, got ", w.dump());
      cg.bits = w.at("num_bits").get<int>();
      const std::string strat = w.value("strategy", std::string());
      if (strat == "group") cg.group_size = w.at("group_size").get<int64_t>();
      else if (strat == "channel") cg.group_size = -1;
      else fail(what, ": quantization_config group '", name, "': strategy '", strat, "', expected group or channel");
      if (cg.bits < 2 || cg.bits > 8 || (cg.group_size != -1 && cg.group_size < 1))
        fail(what, ": quantization_config group '", name, "': num_bits ", cg.bits, ", group_size ", cg.group_size);
      cg.targets = g.at("targets").get<std::vector<std::string>>();
      c.groups.push_back(std::move(cg));
    }
    if (q.contains("ignore") && q["ignore"].is_array()) c.ignore = q["ignore"].get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail(what, ": quantization_config: ", e.what());
  } catch (const std::regex_error& e) {
    fail(what, ": quantization_config: a 're:' target is not a regular expression (", e.what(), ")");
  }
  return c;
}

bool CTConfig::has_fp8() const {
  for (const auto& g : groups)
    if (g.fp8) return true;
  return false;
}

const CTGroup* CTConfig::group_of(const std::string& module) const {
  for (const auto& i : ignore)
    if (name_matches(module, i)) return nullptr;
  for (const auto& g : groups)  // exact names, then regexes, then the Linear class
    for (const auto& t : g.targets)
      if (t == module) return &g;
  for (const auto& g : groups)
    for (const auto& t : g.targets)
      if (t.rfind("re:", 0) == 0 && name_matches(module, t)) return &g;
  for (const auto& g : groups)
    for (const auto& t : g.targets)
      if (t == "Linear") return &g;
  return nullptr;
}

std::optional<CTConfig> ct_config_of(const nlohmann::json& raw, const std::string& what) {
  if (!raw.is_object() || !raw.contains("quantization_config")) return std::nullopt;
  const auto& q = raw["quantization_config"];
  if (!q.is_object() || q.value("quant_method", std::string()) != "compressed-tensors") return std::nullopt;
  return CTConfig::from_json(q, what);
}

std::vector<std::string> ct_tensor_names(const std::string& m) {
  return {m + ".weight_packed", m + ".weight_scale", m + ".weight_shape"};
}

int64_t ct_packed_cols(int64_t cols, int bits) { return (cols * bits + 31) / 32; }

std::vector<int32_t> ct_pack(const int8_t* q, int64_t rows, int64_t cols, int bits) {
  const int64_t pc = ct_packed_cols(cols, bits);
  std::vector<int32_t> out(static_cast<size_t>(rows * pc), 0);
  const int32_t off = 1 << (bits - 1);
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t* w = reinterpret_cast<uint32_t*>(out.data() + r * pc);
    for (int64_t j = 0; j < cols; ++j) {
      const uint32_t v = static_cast<uint32_t>(q[r * cols + j] + off);
      const int64_t bit = j * bits, word = bit / 32, sh = bit % 32;
      w[word] |= v << sh;
      if (sh + bits > 32) w[word + 1] |= v >> (32 - sh);
    }
  }
  return out;
}

std::vector<int8_t> ct_unpack(const int32_t* packed, int64_t rows, int64_t cols, int bits) {
  const int64_t pc = ct_packed_cols(cols, bits);
  std::vector<int8_t> out(static_cast<size_t>(rows * cols));
  const uint32_t mask = (1u << bits) - 1u;
  const int32_t off = 1 << (bits - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t* w = reinterpret_cast<const uint32_t*>(packed + r * pc);
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t bit = j * bits, word = bit / 32, sh = bit % 32;
      uint32_t v = w[word] >> sh;
      if (sh + bits > 32) v |= w[word + 1] << (32 - sh);
      out[static_cast<size_t>(r * cols + j)] = static_cast<int8_t>(static_cast<int32_t>(v & mask) - off);
    }
  }
  return out;
}

CTTensors ct_from_int(const IntQuantized& q, const std::string& what) {
  const int32_t half = 1 << (q.spec.bits - 1);
  const int64_t gs = q.spec.group_size > 0 ? q.spec.group_size : q.cols;
  for (int64_t j = 0; j < q.cols; ++j)
    if (q.g_idx[static_cast<size_t>(j)] != j / gs)
      fail(what, ": compressed-tensors pack-quantized stores groups in column order (no act-order permutation)");
  for (int32_t z : q.zeros)
    if (z != half) fail(what, ": compressed-tensors pack-quantized is written symmetric (zero ", half, "), got zero ", z);
  std::vector<int8_t> s(q.q.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<int8_t>(static_cast<int32_t>(q.q[i]) - half);
  CTTensors t;
  t.packed = ct_pack(s.data(), q.rows, q.cols, q.spec.bits);
  t.scale.resize(static_cast<size_t>(q.rows * q.ngroups));
  for (int64_t g = 0; g < q.ngroups; ++g)
    for (int64_t r = 0; r < q.rows; ++r) t.scale[static_cast<size_t>(r * q.ngroups + g)] = q.scales[static_cast<size_t>(g * q.rows + r)];
  return t;
}

const CTGroup* ct_linear(const Checkpoint& ck, const CTConfig& c, const std::string& module, int64_t rows,
                         int64_t cols) {
  const auto names = ct_tensor_names(module);
  if (!ck.has(names[0])) return nullptr;
  const std::string what = str(ck.dir(), ": '", module, "'");
  const CTGroup* g = c.group_of(module);
  if (!g) fail(what, " is stored packed but no quantization_config group targets it (or it is ignored)");
  for (const auto& n : names)
    if (!ck.has(n)) fail(what, ": '", n, "' is missing (compressed-tensors pack-quantized)");
  const int64_t ng = g->group_size > 0 ? cols / g->group_size : 1;
  if (g->group_size > 0 && cols % g->group_size)
    fail(what, ": ", cols, " inputs are not a multiple of the group size ", g->group_size);
  const TensorInfo &p = ck.info(names[0]), &s = ck.info(names[1]);
  const Shape want_p{rows, ct_packed_cols(cols, g->bits)}, want_s{rows, ng};
  if (p.dtype != DType::I32 || p.shape != want_p)
    fail(what, ": '", names[0], "' expected I32 ", shape_str(want_p), " (", g->bits, " bits), got ", dtype_name(p.dtype),
         " ", shape_str(p.shape));
  if (!is_float(s.dtype) || s.shape != want_s)
    fail(what, ": '", names[1], "' expected a float ", shape_str(want_s), ", got ", dtype_name(s.dtype), " ",
         shape_str(s.shape));
  const Tensor sh = ck.get(names[2]);
  if (sh.dtype != DType::I64 || sh.numel() != 2 || sh.as<int64_t>()[0] != rows || sh.as<int64_t>()[1] != cols)
    fail(what, ": '", names[2], "' expected I64 [", rows, ", ", cols, "]");
  return g;
}

std::optional<Tensor> ct_dequantize(const Checkpoint& ck, const CTConfig& c, const std::string& module, int64_t rows,
                                    int64_t cols) {
  const CTGroup* g = ct_linear(ck, c, module, rows, cols);
  if (!g) return std::nullopt;
  const auto names = ct_tensor_names(module);
  const Tensor p = ck.get(names[0]), s = ck.get(names[1]);
  const std::vector<int8_t> q = ct_unpack(p.as<const int32_t>(), rows, cols, g->bits);
  const std::vector<float> sc = s.to_f32();
  const int64_t gs = g->group_size > 0 ? g->group_size : cols, ng = s.shape[1];
  Tensor out = Tensor::zeros(DType::F32, {rows, cols});
  float* o = out.as<float>();
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      o[r * cols + j] = static_cast<float>(q[static_cast<size_t>(r * cols + j)]) * sc[static_cast<size_t>(r * ng + j / gs)];
  return out;
}

}  // namespace moetool
