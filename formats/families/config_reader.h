// formats/families/config_reader.h — typed config.json readers for the family files: errors name the
// file and the key ("<path>: key 'rope_scaling.factor': expected a positive number, got string \"2\"").
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moetool::fam {

// Reads typed values from one JSON object of a config file. Errors read
// "<path>: key '<prefix><key>': expected <what>, got <type> <value>" or "<path>: missing required key '...'".
// "Absent" below means the key is missing or null (HF treats both as "use the default").
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string path, std::string prefix = "");

  const nlohmann::json& object() const { return j_; }
  const std::string& path() const { return path_; }
  bool has(const char* key) const;      // present and not null
  bool contains(const char* key) const;  // present, maybe null
  const nlohmann::json& at(const char* key) const;  // must be present
  std::string key_name(const char* key) const { return prefix_ + key; }
  // The first of `keys` that is present (not null), else the first: for keys transformers aliases
  // (attribute_map), e.g. {"num_experts", "num_local_experts"} — v5 saves some under the alias.
  const char* pick(std::initializer_list<const char*> keys) const;

  int64_t positive(const char* key) const;                      // required integer > 0
  int64_t positive_or(const char* key, int64_t def) const;      // absent -> def
  int64_t nonneg_or(const char* key, int64_t def) const;        // integer >= 0; absent -> def
  std::optional<int64_t> opt_positive(const char* key) const;   // absent -> nullopt
  double number(const char* key) const;                         // required number
  double number_or(const char* key, double def) const;
  std::optional<double> opt_number(const char* key) const;
  double positive_number_or(const char* key, double def) const;  // number > 0
  bool bool_or(const char* key, bool def) const;
  std::string string_or(const char* key, const std::string& def) const;
  std::vector<int64_t> nonneg_list_or_empty(const char* key) const;  // list of integers >= 0
  // A token id: an integer, a list of integers (the first is taken), or null (nullopt).
  // Absent (missing) -> def.
  std::optional<int64_t> token_id(const char* key, std::optional<int64_t> def) const;

  [[noreturn]] void bad(const char* key, const std::string& expected, const nlohmann::json& got) const;
  [[noreturn]] void missing(const char* key) const;
  [[noreturn]] void invalid(const char* key, const std::string& why) const;  // "<path>: key 'k': why"

 private:
  int64_t integer(const char* key, const nlohmann::json& v, int64_t min, const char* what) const;
  const nlohmann::json& j_;
  std::string path_, prefix_;
};

// "string \"abc\"", "number 1.5", "null", ... (truncated) — how errors show a JSON value.
std::string describe(const nlohmann::json& v);

}  // namespace moetool::fam
