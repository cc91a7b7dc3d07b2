// formats/tokenizer_hf_pipeline.h — the text pipeline of a Hugging Face tokenizer.json, shared by
// tokenizer_hf.cc (the tokenizer) and tokenizer_hf_pipeline.cc (the steps): JSON access whose
// errors name the file and location, and the normalizer, pre-tokenizer and decoder steps, each
// parsed from its JSON object and applied as HF `tokenizers` does. Not part of the API.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/tokenizer_internal.h"

namespace moetool::hf {

using json = nlohmann::json;
using tok::RegexSplitter;
using tok::SplitBehavior;

// ---- JSON helpers (errors name the file and the JSON location) ---------------------------------

struct Where {
  const std::string& path;
  [[noreturn]] void error(const std::string& at, const std::string& what) const {
    fail(path, ": ", at, ": ", what);
  }
  const json& req(const json& obj, const char* key, const std::string& at) const {
    if (!obj.is_object()) error(at, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) error(at, str("missing '", key, "'"));
    return *it;
  }
  std::string str_of(const json& v, const std::string& at) const {
    if (!v.is_string()) error(at, str("expected a string, found ", v.type_name()));
    return v.get<std::string>();
  }
  std::string req_str(const json& obj, const char* key, const std::string& at) const {
    return str_of(req(obj, key, at), at + "." + key);
  }
  bool opt_bool(const json& obj, const char* key, bool def, const std::string& at) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return def;
    if (!it->is_boolean())
      error(at + "." + key, str("expected a boolean, found ", it->type_name()));
    return it->get<bool>();
  }
  const json& req_array(const json& obj, const char* key, const std::string& at) const {
    const json& v = req(obj, key, at);
    if (!v.is_array()) error(at + "." + key, str("expected an array, found ", v.type_name()));
    return v;
  }
  std::string type_of(const json& obj, const std::string& at) const {
    return req_str(obj, "type", at);
  }
  // Calls f(element, its location) for each element of the array obj[key] (a Sequence's steps).
  template <class F>
  void each(const json& obj, const char* key, const std::string& at, const F& f) const {
    const json& list = req_array(obj, key, at);
    for (size_t i = 0; i < list.size(); ++i) f(list[i], str(at, ".", key, "[", i, "]"));
  }
};

// A splitter whose errors name the file and location `at`.
std::shared_ptr<RegexSplitter> make_splitter(const Where& w, const std::string& at,
                                             std::string_view pattern, bool literal,
                                             SplitBehavior b, bool invert = false);

// A Replace normalizer or decoder: every match of a String (`from`) or Regex pattern becomes `to`.
struct ReplacePattern {
  std::string from, to;
  std::shared_ptr<RegexSplitter> regex;  // a Regex pattern
  std::string apply(const std::string& s) const;
};

// Metaspace's prepend_scheme.
enum class Prepend { Always, First, Never };

// ---- Normalizers -------------------------------------------------------------------------------

struct NormOp {
  enum Kind { Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip } kind;
  explicit NormOp(Kind k, std::string a_ = {}) : kind(k), a(std::move(a_)) {}
  std::string a;                 // Prepend
  ReplacePattern replace;        // Replace
  bool left = true, right = true;  // Strip
};

// Appends the steps of normalizer `j` (at JSON location `at`; null: none) to `ops`.
void parse_normalizer(const Where& w, const json& j, const std::string& at,
                      std::vector<NormOp>& ops);
std::string apply_normalizer(const std::vector<NormOp>& ops, std::string s);

// ---- Pre-tokenizers ----------------------------------------------------------------------------

struct PreSplit {
  std::string text;
  bool at_start;  // begins at offset 0 of the original input (Metaspace prepend_scheme "first")
};

struct PreOp {
  enum Kind { Split, ByteLevel, Metaspace } kind;
  explicit PreOp(Kind k) : kind(k) {}
  std::shared_ptr<RegexSplitter> regex;  // Split; ByteLevel with use_regex; Metaspace with split
  bool add_prefix_space = false;         // ByteLevel
  std::string replacement;               // Metaspace
  Prepend prepend = Prepend::Always;     // Metaspace
};

void parse_pretokenizer(const Where& w, const json& j, const std::string& at,
                        std::vector<PreOp>& ops);
// Splits each of `splits` further by one step.
void apply_pretokenizer(const PreOp& op, std::vector<PreSplit>& splits);

// ---- Decoders ----------------------------------------------------------------------------------

struct DecOp {
  enum Kind { Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace } kind;
  explicit DecOp(Kind k, std::string a_ = {}) : kind(k), a(std::move(a_)) {}
  std::string a;                      // Strip: the content character; Metaspace: the replacement
  ReplacePattern replace;             // Replace
  size_t start = 0, stop = 0;         // Strip
  Prepend prepend = Prepend::Always;  // Metaspace
};

void parse_decoder(const Where& w, const json& j, const std::string& at, std::vector<DecOp>& ops);
void apply_decoder(const DecOp& op, std::vector<std::string>& toks);

}  // namespace moetool::hf
