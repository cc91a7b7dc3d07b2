// formats/lowrank.cc — the "moetool.lowrank/1" config block and factored-linear lookup (see lowrank.h).
#include "formats/lowrank.h"

#include <algorithm>

#include "core/error.h"

namespace moetool {

namespace {

const char* const kSuffixes[] = {".weight_u", ".weight_v", ".weight_base"};

// The module of a factor name "<M>.weight_{u,v,base}", or "" when the name is none.
std::string module_of_factor(const std::string& name) {
  for (const char* s : kSuffixes) {
    const std::string suf(s);
    if (name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0)
      return name.substr(0, name.size() - suf.size());
  }
  return "";
}

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    const size_t e = s.find('.', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

}  // namespace

nlohmann::ordered_json LowRankLayout::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = format;
  j["method"] = method;
  j["ranks"] = nlohmann::ordered_json::object();
  for (const auto& [m, r] : ranks) j["ranks"][m] = r;
  j["aliases"] = nlohmann::ordered_json::object();
  for (const auto& [a, t] : aliases) j["aliases"][a] = t;
  return j;
}

LowRankLayout LowRankLayout::from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) fail(what, ": lowrank is not an object");
  LowRankLayout l;
  if (!j.contains("format") || !j["format"].is_string())
    fail(what, ": lowrank.format is missing (expected \"", kLowRankFormat, "\")");
  l.format = j["format"].get<std::string>();
  if (l.format != kLowRankFormat)
    fail(what, ": lowrank.format is '", l.format, "', expected '", kLowRankFormat, "' (a newer moetool wrote it?)");
  if (j.contains("method")) {
    if (!j["method"].is_string()) fail(what, ": lowrank.method is not a string");
    l.method = j["method"].get<std::string>();
  }
  if (!j.contains("ranks") || !j["ranks"].is_object()) fail(what, ": lowrank.ranks is missing or not an object");
  for (const auto& [m, r] : j["ranks"].items()) {
    if (!r.is_number_integer() || r.get<int64_t>() < 1)
      fail(what, ": lowrank.ranks['", m, "'] is ", r.dump(), ", expected a positive integer");
    l.ranks[m] = r.get<int64_t>();
  }
  if (j.contains("aliases")) {
    if (!j["aliases"].is_object()) fail(what, ": lowrank.aliases is not an object");
    for (const auto& [a, t] : j["aliases"].items()) {
      if (!t.is_string() || t.get<std::string>().empty())
        fail(what, ": lowrank.aliases['", a, "'] is ", t.dump(), ", expected a tensor name");
      const std::string m = module_of_factor(a);
      if (m.empty() || !l.ranks.count(m))
        fail(what, ": lowrank.aliases key '", a,
             "' is not <module>.weight_u/.weight_v/.weight_base of a module in lowrank.ranks");
      l.aliases[a] = t.get<std::string>();
    }
  }
  return l;
}

std::optional<LowRankLayout> lowrank_layout_of(const nlohmann::json& raw, const std::string& what) {
  if (!raw.is_object() || !raw.contains("lowrank") || raw["lowrank"].is_null()) return std::nullopt;
  return LowRankLayout::from_json(raw["lowrank"], what);
}

std::vector<std::string> lowrank_tensor_names(const std::string& module) {
  return {module + kSuffixes[0], module + kSuffixes[1], module + kSuffixes[2]};
}

std::string shared_module_name(const std::string& a, const std::string& b) {
  const auto pa = split_dots(a), pb = split_dots(b);
  size_t diff = pa.size();
  int ndiff = 0;
  if (pa.size() == pb.size())
    for (size_t i = 0; i < pa.size(); ++i)
      if (pa[i] != pb[i]) ++ndiff, diff = i;
  if (pa.size() != pb.size() || ndiff != 1)
    fail("low-rank shared factor: module names '", a, "' and '", b,
         "' must differ in exactly one dot-separated component (the expert index)");
  std::string out;
  for (size_t i = 0; i < pa.size(); ++i) out += (i ? "." : "") + (i == diff ? std::string("shared") : pa[i]);
  return out;
}

std::optional<LowRankLinear> find_lowrank_linear(const Checkpoint& ck, const LowRankLayout& layout,
                                                 const std::string& weight_name, int64_t rows, int64_t cols) {
  static const std::string kWeight = ".weight";
  if (weight_name.size() <= kWeight.size() ||
      weight_name.compare(weight_name.size() - kWeight.size(), kWeight.size(), kWeight) != 0)
    return std::nullopt;
  const std::string module = weight_name.substr(0, weight_name.size() - kWeight.size());
  const auto rit = layout.ranks.find(module);
  if (rit == layout.ranks.end()) return std::nullopt;
  const std::string where = str(ck.dir(), ": low-rank module '", module, "'");
  if (ck.has(weight_name))
    fail(where, ": tensor '", weight_name, "' is stored although config.json lowrank.ranks factors the module",
         " (store either it or ", module, ".weight_u/.weight_v)");
  // The stored tensor a factor name resolves to ("" when neither stored nor aliased).
  auto stored = [&](const std::string& n) { return ck.has(n) || ck.has(n + ".qweight"); };
  auto resolve = [&](const std::string& n) -> std::string {
    if (stored(n)) return n;
    const auto a = layout.aliases.find(n);
    if (a == layout.aliases.end()) return "";
    if (!stored(a->second)) fail(where, ": tensor '", n, "' is aliased to '", a->second, "', which is missing");
    return a->second;
  };
  const auto names = lowrank_tensor_names(module);
  LowRankLinear lr;
  lr.module = module;
  lr.rows = rows;
  lr.cols = cols;
  lr.rank = rit->second;
  lr.u = resolve(names[0]);
  lr.v = resolve(names[1]);
  lr.base = resolve(names[2]);
  if (lr.u.empty()) fail(where, ": tensor '", names[0], "' is missing (neither stored nor in lowrank.aliases)");
  if (lr.v.empty()) fail(where, ": tensor '", names[1], "' is missing (neither stored nor in lowrank.aliases)");
  if (lr.rank > std::min(rows, cols))
    fail(where, ": rank ", lr.rank, " exceeds min(out, in) = ", std::min(rows, cols), " of its [", rows, ", ", cols,
         "] weight");
  // A float factor's dtype and shape, or a quantized one's GPTQ tensors.
  auto check_tensor = [&](const std::string& name, const std::string& as, const Shape& want) -> std::optional<GPTQLinear> {
    const std::string label = name == as ? str("tensor '", name, "'") : str("tensor '", name, "' (as '", as, "')");
    if (!ck.has(name)) {
      const TensorInfo& qw = ck.info(name + ".qweight");
      if (qw.shape.size() != 2 || qw.shape[1] != want[0])
        fail(where, ": ", label, ": stored GPTQ-quantized with qweight ", shape_str(qw.shape), ", expected [in·bits/32, ",
             want[0], "] for shape ", shape_str(want), " (rank ", lr.rank, ")");
      return find_gptq_module(ck, name, want[0], want[1]);
    }
    const TensorInfo& i = ck.info(name);
    if (!is_float(i.dtype)) fail(where, ": ", label, ": expected a float dtype, got ", dtype_name(i.dtype));
    if (i.shape != want)
      fail(where, ": ", label, ": expected shape ", shape_str(want), " (rank ", lr.rank, "), got ", shape_str(i.shape));
    return std::nullopt;
  };
  lr.uq = check_tensor(lr.u, names[0], {rows, lr.rank});
  lr.vq = check_tensor(lr.v, names[1], {lr.rank, cols});
  if (!lr.base.empty()) lr.baseq = check_tensor(lr.base, names[2], {rows, cols});
  return lr;
}

std::vector<std::string> LowRankLinear::stored_tensors() const {
  std::vector<std::string> out;
  const std::pair<const std::string*, const std::optional<GPTQLinear>*> fs[] = {{&u, &uq}, {&v, &vq}, {&base, &baseq}};
  for (const auto& [n, q] : fs) {
    if (n->empty()) continue;
    if (!q->has_value()) out.push_back(*n);
    else for (const auto& t : gptq_tensor_names(*n)) out.push_back(t);
  }
  return out;
}

}  // namespace moetool
