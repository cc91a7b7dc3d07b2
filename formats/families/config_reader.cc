// formats/families/config_reader.cc — typed config.json readers whose errors name the file and the key
// (see config_reader.h).
#include "formats/families/config_reader.h"

#include <limits>
#include <utility>

#include "core/error.h"

namespace moetool::fam {

using nlohmann::json;

std::string describe(const json& v) {
  if (v.is_null()) return "null";
  std::string d = v.dump();
  if (d.size() > 60) d = d.substr(0, 57) + "...";
  return str(v.type_name(), " ", d);
}

ConfigReader::ConfigReader(const json& j, std::string path, std::string prefix)
    : j_(j), path_(std::move(path)), prefix_(std::move(prefix)) {
  if (!j_.is_object()) fail(path_, ": expected a JSON object", prefix_.empty() ? "" : " for '", prefix_,
                            prefix_.empty() ? "" : "'", ", got ", describe(j_));
}

bool ConfigReader::contains(const char* key) const { return j_.contains(key); }
bool ConfigReader::has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

const char* ConfigReader::pick(std::initializer_list<const char*> keys) const {
  for (const char* k : keys)
    if (has(k)) return k;
  return *keys.begin();
}

const json& ConfigReader::at(const char* key) const {
  if (!has(key)) missing(key);
  return j_.at(key);
}

void ConfigReader::bad(const char* key, const std::string& expected, const json& got) const {
  fail(path_, ": key '", prefix_, key, "': expected ", expected, ", got ", describe(got));
}
void ConfigReader::missing(const char* key) const { fail(path_, ": missing required key '", prefix_, key, "'"); }
void ConfigReader::invalid(const char* key, const std::string& why) const {
  fail(path_, ": key '", prefix_, key, "': ", why);
}

int64_t ConfigReader::integer(const char* key, const json& v, int64_t min, const char* what) const {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) bad(key, what, v);
    if (static_cast<int64_t>(u) < min) bad(key, what, v);
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < min) bad(key, what, v);
    return i;
  }
  bad(key, what, v);
}

int64_t ConfigReader::positive(const char* key) const { return integer(key, at(key), 1, "a positive integer"); }
int64_t ConfigReader::positive_or(const char* key, int64_t def) const {
  return has(key) ? integer(key, j_.at(key), 1, "a positive integer") : def;
}
int64_t ConfigReader::nonneg_or(const char* key, int64_t def) const {
  return has(key) ? integer(key, j_.at(key), 0, "a non-negative integer") : def;
}
std::optional<int64_t> ConfigReader::opt_positive(const char* key) const {
  if (!has(key)) return std::nullopt;
  return integer(key, j_.at(key), 1, "a positive integer or null");
}

double ConfigReader::number(const char* key) const {
  const json& v = at(key);
  if (!v.is_number()) bad(key, "a number", v);
  return v.get<double>();
}
double ConfigReader::number_or(const char* key, double def) const { return has(key) ? number(key) : def; }
std::optional<double> ConfigReader::opt_number(const char* key) const {
  if (!has(key)) return std::nullopt;
  return number(key);
}
double ConfigReader::positive_number_or(const char* key, double def) const {
  if (!has(key)) return def;
  const double d = number(key);
  if (!(d > 0)) bad(key, "a positive number", j_.at(key));
  return d;
}

bool ConfigReader::bool_or(const char* key, bool def) const {
  if (!has(key)) return def;
  const json& v = j_.at(key);
  if (!v.is_boolean()) bad(key, "a boolean", v);
  return v.get<bool>();
}

std::string ConfigReader::string_or(const char* key, const std::string& def) const {
  if (!has(key)) return def;
  const json& v = j_.at(key);
  if (!v.is_string()) bad(key, "a string", v);
  return v.get<std::string>();
}

std::vector<int64_t> ConfigReader::nonneg_list_or_empty(const char* key) const {
  std::vector<int64_t> out;
  if (!has(key)) return out;
  const json& v = j_.at(key);
  if (!v.is_array()) bad(key, "a list of non-negative integers", v);
  for (const json& e : v) out.push_back(integer(key, e, 0, "a list of non-negative integers"));
  return out;
}

std::optional<int64_t> ConfigReader::token_id(const char* key, std::optional<int64_t> def) const {
  if (!contains(key)) return def;
  const json& v = j_.at(key);
  if (v.is_null()) return std::nullopt;
  if (v.is_array()) {
    if (v.empty()) return std::nullopt;
    return integer(key, v.front(), 0, "a token id (integer >= 0), a list of them, or null");
  }
  return integer(key, v, 0, "a token id (integer >= 0), a list of them, or null");
}

}  // namespace moetool::fam
