// formats/tokenizer_hf.cc — Hugging Face tokenizer.json (model type BPE) with the pipeline of HF
// `tokenizers`: added tokens split out first (leftmost-longest; non-normalized ones on the raw
// text, normalized ones on the normalized text, with lstrip/rstrip/single_word), normalizer,
// pre-tokenizer (ByteLevel, Split, Metaspace, Digits, Whitespace...), BPE, post-processor
// (TemplateProcessing...), and decoding through the decoder chain (ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace). tokenizer_config.json may override add_bos_token /
// add_eos_token and names the bos/eos tokens.
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/tokenizer.h"
#include "formats/tokenizer_internal.h"

namespace moetool {

namespace {

using json = nlohmann::json;
using tok::RegexSplitter;
using tok::SplitBehavior;
using tok::StrMap;

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
};

// A {"String": s} or {"Regex": r} pattern object.
struct Pattern {
  std::string text;
  bool literal = true;
};
Pattern parse_pattern(const Where& w, const json& j, const std::string& at) {
  if (j.is_object() && j.contains("String")) return {w.str_of(j["String"], at + ".String"), true};
  if (j.is_object() && j.contains("Regex")) return {w.str_of(j["Regex"], at + ".Regex"), false};
  w.error(at, "expected a pattern {\"String\": ...} or {\"Regex\": ...}");
}

SplitBehavior parse_behavior(const Where& w, const std::string& s, const std::string& at) {
  if (s == "Removed") return SplitBehavior::Removed;
  if (s == "Isolated") return SplitBehavior::Isolated;
  if (s == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (s == "Contiguous") return SplitBehavior::Contiguous;
  w.error(at, str("unknown split behavior '", s, "'"));
}

std::string icu_to_utf8(const icu::UnicodeString& u) {
  std::string out;
  u.toUTF8String(out);
  return out;
}
icu::UnicodeString utf8_to_icu(std::string_view s) {
  return icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
}

// ---- Normalizers -------------------------------------------------------------------------------

struct NormOp {
  enum Kind { Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip } kind;
  explicit NormOp(Kind k, std::string a_ = {}, std::string b_ = {})
      : kind(k), a(std::move(a_)), b(std::move(b_)) {}
  std::string a, b;                      // Prepend: a; Replace: a -> b
  std::shared_ptr<RegexSplitter> regex;  // Replace with a Regex pattern
  bool left = true, right = true;        // Strip
};

void parse_normalizer(const Where& w, const json& j, const std::string& at,
                      std::vector<NormOp>& ops) {
  if (j.is_null()) return;
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    const json& list = w.req_array(j, "normalizers", at);
    for (size_t i = 0; i < list.size(); ++i)
      parse_normalizer(w, list[i], str(at, ".normalizers[", i, "]"), ops);
  } else if (type == "Prepend") {
    ops.push_back(NormOp(NormOp::Prepend, w.req_str(j, "prepend", at)));
  } else if (type == "Replace") {
    const Pattern p = parse_pattern(w, w.req(j, "pattern", at), at + ".pattern");
    NormOp op{NormOp::Replace, p.text, w.req_str(j, "content", at)};
    if (!p.literal) {
      op.regex = std::make_shared<RegexSplitter>(p.text, false, SplitBehavior::Isolated, false,
                                                 str(w.path, ": ", at));
    } else if (p.text.empty()) {
      w.error(at, "Replace with an empty pattern");
    }
    ops.push_back(std::move(op));
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    ops.push_back(NormOp(type == "NFC"    ? NormOp::NFC
                         : type == "NFD"  ? NormOp::NFD
                         : type == "NFKC" ? NormOp::NFKC
                                          : NormOp::NFKD));
  } else if (type == "Lowercase") {
    ops.push_back(NormOp(NormOp::Lowercase));
  } else if (type == "StripAccents") {
    ops.push_back(NormOp(NormOp::StripAccents));
  } else if (type == "Strip") {
    NormOp op(NormOp::Strip);
    op.left = w.opt_bool(j, "left", true, at);
    op.right = w.opt_bool(j, "right", true, at);
    ops.push_back(op);
  } else {
    w.error(at, str("unsupported normalizer type '", type,
                    "' (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, "
                    "StripAccents, Strip)"));
  }
}

std::string unicode_normalize(const std::string& s, NormOp::Kind kind) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = kind == NormOp::NFC    ? icu::Normalizer2::getNFCInstance(status)
                              : kind == NormOp::NFD  ? icu::Normalizer2::getNFDInstance(status)
                              : kind == NormOp::NFKC ? icu::Normalizer2::getNFKCInstance(status)
                                                     : icu::Normalizer2::getNFKDInstance(status);
  if (U_FAILURE(status)) fail("ICU normalizer unavailable: ", u_errorName(status));
  const icu::UnicodeString out = n->normalize(utf8_to_icu(s), status);
  if (U_FAILURE(status)) fail("ICU normalization failed: ", u_errorName(status));
  return icu_to_utf8(out);
}

std::string apply_normalizer(const std::vector<NormOp>& ops, std::string s) {
  for (const NormOp& op : ops) {
    switch (op.kind) {
      case NormOp::Prepend:
        if (!s.empty()) s = op.a + s;
        break;
      case NormOp::Replace:
        if (op.regex) {
          std::vector<RegexSplitter::Span> m;
          op.regex->matches(s, m);
          std::string out;
          size_t prev = 0;
          for (const auto& [b, e] : m) {
            out.append(s, prev, b - prev);
            out += op.b;
            prev = e;
          }
          out.append(s, prev, std::string::npos);
          s = std::move(out);
        } else {
          s = tok::replace_all(s, op.a, op.b);
        }
        break;
      case NormOp::NFC:
      case NormOp::NFD:
      case NormOp::NFKC:
      case NormOp::NFKD:
        s = unicode_normalize(s, op.kind);
        break;
      case NormOp::Lowercase: {
        // Per character, like Rust's char::to_lowercase (no final-sigma context).
        std::string out;
        out.reserve(s.size());
        for (const U8Char& c : utf8_chars(s)) {
          if (c.cp < 0x80) {
            out += static_cast<char>(c.cp >= 'A' && c.cp <= 'Z' ? c.cp + 32 : c.cp);
            continue;
          }
          icu::UnicodeString u(static_cast<UChar32>(c.cp));
          u.toLower(icu::Locale::getRoot());
          u.toUTF8String(out);
        }
        s = std::move(out);
        break;
      }
      case NormOp::StripAccents: {
        std::string out;
        for (const U8Char& c : utf8_chars(s))
          if (u_charType(static_cast<UChar32>(c.cp)) != U_NON_SPACING_MARK)
            out.append(s, c.off, c.len);
        s = std::move(out);
        break;
      }
      case NormOp::Strip: {
        const auto chars = utf8_chars(s);
        size_t b = 0, e = chars.size();
        if (op.left)
          while (b < e && u_isUWhiteSpace(static_cast<UChar32>(chars[b].cp))) ++b;
        if (op.right)
          while (e > b && u_isUWhiteSpace(static_cast<UChar32>(chars[e - 1].cp))) --e;
        s = b == e ? std::string()
                   : s.substr(chars[b].off, chars[e - 1].off + chars[e - 1].len - chars[b].off);
        break;
      }
    }
  }
  return s;
}

// ---- Pre-tokenizers ----------------------------------------------------------------------------

struct PreSplit {
  std::string text;
  bool at_start;  // begins at offset 0 of the original input (Metaspace prepend_scheme "first")
};

enum class Prepend { Always, First, Never };

struct PreOp {
  enum Kind { Split, ByteLevel, Metaspace } kind;
  explicit PreOp(Kind k) : kind(k) {}
  std::shared_ptr<RegexSplitter> regex;  // Split; ByteLevel with use_regex; Metaspace with split
  bool add_prefix_space = false;         // ByteLevel
  std::string replacement;               // Metaspace
  Prepend prepend = Prepend::Always;     // Metaspace
};

Prepend parse_prepend_scheme(const Where& w, const json& j, const std::string& at) {
  if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
    const std::string s = w.str_of(*it, at + ".prepend_scheme");
    if (s == "always") return Prepend::Always;
    if (s == "first") return Prepend::First;
    if (s == "never") return Prepend::Never;
    w.error(at + ".prepend_scheme", str("unknown value '", s, "'"));
  }
  return w.opt_bool(j, "add_prefix_space", true, at) ? Prepend::Always : Prepend::Never;
}

std::shared_ptr<RegexSplitter> make_splitter(const Where& w, const std::string& at,
                                             std::string_view pattern, bool literal,
                                             SplitBehavior b, bool invert = false) {
  return std::make_shared<RegexSplitter>(pattern, literal, b, invert, str(w.path, ": ", at));
}

void parse_pretokenizer(const Where& w, const json& j, const std::string& at,
                        std::vector<PreOp>& ops) {
  if (j.is_null()) return;
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    const json& list = w.req_array(j, "pretokenizers", at);
    for (size_t i = 0; i < list.size(); ++i)
      parse_pretokenizer(w, list[i], str(at, ".pretokenizers[", i, "]"), ops);
  } else if (type == "ByteLevel") {
    PreOp op{PreOp::ByteLevel};
    op.add_prefix_space = w.opt_bool(j, "add_prefix_space", true, at);
    if (w.opt_bool(j, "use_regex", true, at))
      op.regex = make_splitter(w, at, tok::kGpt2Regex, false, SplitBehavior::Isolated);
    ops.push_back(op);
  } else if (type == "Split") {
    const Pattern p = parse_pattern(w, w.req(j, "pattern", at), at + ".pattern");
    const SplitBehavior b = parse_behavior(w, w.req_str(j, "behavior", at), at + ".behavior");
    PreOp op{PreOp::Split};
    op.regex = make_splitter(w, at, p.text, p.literal, b, w.opt_bool(j, "invert", false, at));
    ops.push_back(op);
  } else if (type == "Metaspace") {
    PreOp op{PreOp::Metaspace};
    op.replacement =
        j.contains("replacement") ? w.req_str(j, "replacement", at) : std::string(tok::kSpmSpace);
    if (op.replacement.empty()) w.error(at, "Metaspace with an empty replacement");
    op.prepend = parse_prepend_scheme(w, j, at);
    if (w.opt_bool(j, "split", true, at))
      op.regex = make_splitter(w, at, op.replacement, true, SplitBehavior::MergedWithNext);
    ops.push_back(op);
  } else if (type == "Digits") {
    const bool individual = w.opt_bool(j, "individual_digits", false, at);
    PreOp op{PreOp::Split};
    op.regex =
        make_splitter(w, at, individual ? R"(\p{N})" : R"(\p{N}+)", false, SplitBehavior::Isolated);
    ops.push_back(op);
  } else if (type == "Whitespace") {
    PreOp op{PreOp::Split};
    op.regex = make_splitter(w, at, R"(\w+|[^\w\s]+)", false, SplitBehavior::Removed, true);
    ops.push_back(op);
  } else if (type == "WhitespaceSplit" || type == "BertPreTokenizer") {
    PreOp op{PreOp::Split};
    op.regex = make_splitter(w, at, R"(\s+)", false, SplitBehavior::Removed);
    ops.push_back(op);
    if (type == "BertPreTokenizer") {
      PreOp punct{PreOp::Split};
      punct.regex = make_splitter(w, at, R"([\p{P}!-/:-@\[-`{-~])", false, SplitBehavior::Isolated);
      ops.push_back(punct);
    }
  } else if (type == "Punctuation") {
    const SplitBehavior b = j.contains("behavior")
                                ? parse_behavior(w, w.req_str(j, "behavior", at), at + ".behavior")
                                : SplitBehavior::Isolated;
    PreOp op{PreOp::Split};
    op.regex = make_splitter(w, at, R"([\p{P}!-/:-@\[-`{-~])", false, b);
    ops.push_back(op);
  } else {
    w.error(at, str("unsupported pre_tokenizer type '", type,
                    "' (supported: Sequence, ByteLevel, Split, Metaspace, Digits, Whitespace, "
                    "WhitespaceSplit, Punctuation, BertPreTokenizer)"));
  }
}

void apply_pretokenizer(const PreOp& op, std::vector<PreSplit>& splits) {
  std::vector<PreSplit> out;
  out.reserve(splits.size());
  std::vector<RegexSplitter::Span> spans;
  for (PreSplit& sp : splits) {
    std::string text = std::move(sp.text);
    if (op.kind == PreOp::ByteLevel && op.add_prefix_space && text[0] != ' ') text = " " + text;
    if (op.kind == PreOp::Metaspace) {
      text = tok::replace_all(text, " ", op.replacement);
      const bool want =
          op.prepend == Prepend::Always || (op.prepend == Prepend::First && sp.at_start);
      if (want && text.compare(0, op.replacement.size(), op.replacement) != 0)
        text = op.replacement + text;
    }
    spans.clear();
    if (op.regex) {
      op.regex->split(text, {{0, text.size()}}, spans);
    } else {
      spans.push_back({0, text.size()});
    }
    for (const auto& [b, e] : spans) {
      std::string piece = text.substr(b, e - b);
      if (op.kind == PreOp::ByteLevel) piece = tok::byte_level_encode(piece);
      out.push_back({std::move(piece), sp.at_start && b == 0});
    }
  }
  splits = std::move(out);
}

// ---- Decoders ----------------------------------------------------------------------------------

struct DecOp {
  enum Kind { Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace } kind;
  explicit DecOp(Kind k, std::string a_ = {}, std::string b_ = {})
      : kind(k), a(std::move(a_)), b(std::move(b_)) {}
  std::string a, b;                      // Replace: a -> b; Strip: a = content char; Metaspace: a
  std::shared_ptr<RegexSplitter> regex;  // Replace with a Regex pattern
  size_t start = 0, stop = 0;            // Strip
  Prepend prepend = Prepend::Always;     // Metaspace
};

void parse_decoder(const Where& w, const json& j, const std::string& at, std::vector<DecOp>& ops) {
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    const json& list = w.req_array(j, "decoders", at);
    for (size_t i = 0; i < list.size(); ++i)
      parse_decoder(w, list[i], str(at, ".decoders[", i, "]"), ops);
  } else if (type == "Replace") {
    const Pattern p = parse_pattern(w, w.req(j, "pattern", at), at + ".pattern");
    DecOp op{DecOp::Replace, p.text, w.req_str(j, "content", at)};
    if (!p.literal) {
      op.regex = make_splitter(w, at, p.text, false, SplitBehavior::Isolated);
    } else if (p.text.empty()) {
      w.error(at, "Replace with an empty pattern");
    }
    ops.push_back(std::move(op));
  } else if (type == "ByteFallback") {
    ops.push_back(DecOp(DecOp::ByteFallback));
  } else if (type == "Fuse") {
    ops.push_back(DecOp(DecOp::Fuse));
  } else if (type == "Strip") {
    DecOp op{DecOp::Strip, w.req_str(j, "content", at)};
    if (utf8_chars(op.a).size() != 1) w.error(at + ".content", "expected one character");
    const json& s = w.req(j, "start", at);
    const json& e = w.req(j, "stop", at);
    if (!s.is_number_unsigned() || !e.is_number_unsigned())
      w.error(at, "start/stop must be unsigned integers");
    op.start = s.get<size_t>();
    op.stop = e.get<size_t>();
    ops.push_back(op);
  } else if (type == "ByteLevel") {
    ops.push_back(DecOp(DecOp::ByteLevel));
  } else if (type == "Metaspace") {
    DecOp op{DecOp::Metaspace};
    op.a =
        j.contains("replacement") ? w.req_str(j, "replacement", at) : std::string(tok::kSpmSpace);
    if (utf8_chars(op.a).size() != 1) w.error(at + ".replacement", "expected one character");
    op.prepend = parse_prepend_scheme(w, j, at);
    ops.push_back(op);
  } else {
    w.error(at, str("unsupported decoder type '", type,
                    "' (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, "
                    "Metaspace)"));
  }
}

std::optional<uint8_t> byte_token_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return std::nullopt;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = t[k];
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
    if (d < 0) return std::nullopt;
    v = v * 16 + d;
  }
  return static_cast<uint8_t>(v);
}

void apply_decoder(const DecOp& op, std::vector<std::string>& toks) {
  switch (op.kind) {
    case DecOp::Replace:
      for (std::string& t : toks) {
        if (op.regex) {
          std::vector<RegexSplitter::Span> m;
          op.regex->matches(t, m);
          std::string out;
          size_t prev = 0;
          for (const auto& [b, e] : m) {
            out.append(t, prev, b - prev);
            out += op.b;
            prev = e;
          }
          out.append(t, prev, std::string::npos);
          t = std::move(out);
        } else {
          t = tok::replace_all(t, op.a, op.b);
        }
      }
      break;
    case DecOp::ByteFallback: {
      std::vector<std::string> out;
      std::string bytes;
      auto flush = [&] {
        if (bytes.empty()) return;
        if (utf8_valid(bytes)) {
          out.push_back(bytes);
        } else {
          for (size_t i = 0; i < bytes.size(); ++i) out.push_back("\xEF\xBF\xBD");
        }
        bytes.clear();
      };
      for (std::string& t : toks) {
        if (auto b = byte_token_value(t)) {
          bytes += static_cast<char>(*b);
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      toks = std::move(out);
      break;
    }
    case DecOp::Fuse: {
      std::string all;
      for (const std::string& t : toks) all += t;
      toks.assign(1, std::move(all));
      break;
    }
    case DecOp::Strip:
      for (std::string& t : toks) {
        size_t b = 0, e = t.size();
        for (size_t k = 0; k < op.start && t.compare(b, op.a.size(), op.a) == 0 && b < e; ++k)
          b += op.a.size();
        for (size_t k = 0; k < op.stop && e >= b + op.a.size() &&
                           t.compare(e - op.a.size(), op.a.size(), op.a) == 0;
             ++k)
          e -= op.a.size();
        t = t.substr(b, e - b);
      }
      break;
    case DecOp::ByteLevel: {
      std::string bytes;
      for (const std::string& t : toks) {
        std::string mine;
        bool ok = true;
        for (const U8Char& c : utf8_chars(t)) {
          const auto b = tok::unicode_to_byte(c.cp);
          if (!b) {
            ok = false;
            break;
          }
          mine += static_cast<char>(*b);
        }
        bytes += ok ? mine : t;  // HF: a token with a non-byte character is taken as it is
      }
      toks.assign(1, utf8_lossy(bytes));
      break;
    }
    case DecOp::Metaspace:
      for (size_t i = 0; i < toks.size(); ++i) {
        // HF: in the first token every replacement character is dropped (when prepending).
        toks[i] =
            tok::replace_all(toks[i], op.a, i == 0 && op.prepend != Prepend::Never ? "" : " ");
      }
      break;
  }
}

// ---- Added tokens ------------------------------------------------------------------------------

struct AddedToken {
  std::string content;  // as written in tokenizer.json
  std::string match;    // what is matched (content, normalized when `normalized`)
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

// Leftmost-longest matching of a set of strings (HF's aho-corasick MatchKind::LeftmostLongest).
class AddedMatcher {
 public:
  void add(std::string_view key, int32_t index) {
    if (key.empty()) return;
    int32_t node = 0;
    for (char c : key) {
      const auto b = static_cast<uint8_t>(c);
      int32_t next = -1;
      for (const auto& [k, v] : nodes_[node].kids)
        if (k == b) next = v;
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].kids.push_back({b, next});
        nodes_.emplace_back();
      }
      node = next;
    }
    nodes_[node].index = index;
    first_[static_cast<uint8_t>(key[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // The leftmost match at or after `from`, longest among those: (begin, end, index).
  bool find(std::string_view text, size_t from, size_t& begin, size_t& end, int32_t& index) const {
    if (empty_) return false;
    for (size_t s = from; s < text.size(); ++s) {
      if (!first_[static_cast<uint8_t>(text[s])]) continue;
      int32_t node = 0, best = -1;
      size_t best_end = 0;
      for (size_t i = s; i < text.size(); ++i) {
        const auto b = static_cast<uint8_t>(text[i]);
        int32_t next = -1;
        for (const auto& [k, v] : nodes_[node].kids)
          if (k == b) next = v;
        if (next < 0) break;
        node = next;
        if (nodes_[node].index >= 0) best = nodes_[node].index, best_end = i + 1;
      }
      if (best >= 0) {
        begin = s, end = best_end, index = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> kids;
    int32_t index = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool first_[256] = {};
  bool empty_ = true;
};

bool is_word_char(char32_t c) { return c == U'_' || u_isalnum(static_cast<UChar32>(c)); }

// The code point ending just before byte `pos`.
char32_t char_before(std::string_view s, size_t pos, size_t& start) {
  size_t b = pos - 1;
  while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80 && pos - b < 4) --b;
  const auto chars = utf8_chars(s.substr(b, pos - b));
  if (chars.empty()) return start = pos - 1, 0xFFFD;
  start = b + chars.back().off;
  return chars.back().cp;
}
char32_t char_at(std::string_view s, size_t pos, size_t& len) {
  const auto chars = utf8_chars(s.substr(pos, std::min<size_t>(4, s.size() - pos)));
  len = chars[0].len;
  return chars[0].cp;
}

struct Piece {
  std::string text;
  int32_t id = -1;  // >= 0: an added token
  bool at_start = false;
};

// ---- The tokenizer -----------------------------------------------------------------------------

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const std::string& json_text, const std::string& config_text,
              const std::string& path);

 protected:
  void encode_impl(std::string_view text, bool add_special, bool parse_special,
                   std::vector<int32_t>& out) const override;
  std::string decode_impl(const std::vector<int32_t>& ids, bool skip_special) const override;
  std::optional<int32_t> find_token(std::string_view text) const override { return lookup(text); }

 private:
  void split_added(std::string_view text, const AddedMatcher& m, bool parse_special, bool at_start,
                   std::vector<Piece>& out) const;
  void load_model(const Where& w, const json& model);
  void load_added_tokens(const Where& w, const json& list);
  void load_post_processor(const Where& w, const json& j, const std::string& at);
  std::optional<int32_t> lookup(std::string_view text) const;

  StrMap vocab_;  // model vocabulary
  std::unique_ptr<tok::BpeModel> bpe_;
  std::vector<NormOp> norm_;
  std::vector<PreOp> pre_;
  std::vector<DecOp> dec_;
  bool has_decoder_ = false;
  std::vector<AddedToken> added_;
  AddedMatcher raw_matcher_, norm_matcher_;
  std::vector<int32_t> prefix_, suffix_;  // post-processor tokens around the sequence
  std::vector<std::string> decode_text_;  // per id: the string handed to the decoder
};

std::optional<int32_t> HfTokenizer::lookup(std::string_view text) const {
  for (const AddedToken& t : added_)
    if (t.content == text) return t.id;
  if (auto it = vocab_.find(text); it != vocab_.end()) return it->second;
  return std::nullopt;
}

void HfTokenizer::load_model(const Where& w, const json& model) {
  if (!model.is_object()) w.error("model", "expected an object");
  std::string type;
  if (model.contains("type")) {
    type = w.req_str(model, "type", "model");
  } else if (model.contains("merges")) {
    type = "BPE";  // older files omit the type
  } else {
    w.error("model", "missing 'type'");
  }
  if (type != "BPE") {
    fail(w.path, ": unsupported tokenizer model type '", type,
         "' (moetool supports BPE tokenizers: byte-level and SentencePiece-style)");
  }
  const json& vocab = w.req(model, "vocab", "model");
  if (!vocab.is_object())
    w.error("model.vocab", str("expected an object token -> id, found ", vocab.type_name()));
  int64_t max_id = -1;
  vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      w.error("model.vocab", str("token '", it.key(), "': expected a non-negative integer id"));
    }
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    vocab_[it.key()] = id;
    max_id = std::max<int64_t>(max_id, id);
  }
  id_to_text_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [t, id] : vocab_) id_to_text_[id] = t;

  tok::BpeOptions opts;
  opts.byte_fallback = w.opt_bool(model, "byte_fallback", false, "model");
  opts.fuse_unk = w.opt_bool(model, "fuse_unk", false, "model");
  opts.ignore_merges = w.opt_bool(model, "ignore_merges", false, "model");
  auto opt_str = [&](const char* key) -> std::string {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) return {};
    return w.str_of(*it, str("model.", key));
  };
  opts.continuing_subword_prefix = opt_str("continuing_subword_prefix");
  opts.end_of_word_suffix = opt_str("end_of_word_suffix");
  if (const std::string unk = opt_str("unk_token"); !unk.empty()) {
    auto it = vocab_.find(unk);
    if (it == vocab_.end()) w.error("model.unk_token", str("'", unk, "' is not in the vocab"));
    opts.unk_id = it->second;
  }
  bpe_ = std::make_unique<tok::BpeModel>(vocab_, opts);

  const json& merges = w.req_array(model, "merges", "model");
  bpe_->reserve_merges(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        w.error(str("model.merges[", i, "]"),
                str("expected \"<left> <right>\" (one space), found \"", s, "\""));
      }
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    } else {
      w.error(str("model.merges[", i, "]"),
              "expected a string \"<left> <right>\" or a pair [left, right]");
    }
    if (!bpe_->add_merge(a, b)) {
      w.error(str("model.merges[", i, "]"),
              str("merge (\"", a, "\", \"", b,
                  "\"): the parts and their concatenation must be in the vocab"));
    }
  }
}

void HfTokenizer::load_added_tokens(const Where& w, const json& list) {
  if (list.is_null()) return;
  if (!list.is_array()) w.error("added_tokens", "expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = str("added_tokens[", i, "]");
    const json& j = list[i];
    AddedToken t;
    const json& id = w.req(j, "id", at);
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      w.error(at + ".id", "expected a non-negative integer");
    t.id = static_cast<int32_t>(id.get<int64_t>());
    t.content = w.req_str(j, "content", at);
    if (t.content.empty()) w.error(at + ".content", "empty token");
    t.special = w.opt_bool(j, "special", false, at);
    t.lstrip = w.opt_bool(j, "lstrip", false, at);
    t.rstrip = w.opt_bool(j, "rstrip", false, at);
    t.single_word = w.opt_bool(j, "single_word", false, at);
    t.normalized = w.opt_bool(j, "normalized", !t.special, at);
    // HF tokenizers ignores the stored id: a token of the model vocab keeps its id, others get the
    // next free id after the model vocab (AddedVocabulary::add_tokens).
    if (auto it = vocab_.find(t.content); it != vocab_.end()) {
      t.id = it->second;
    } else {
      const auto model_size = static_cast<int64_t>(vocab_.size());
      int64_t max_added = -1;
      for (const AddedToken& o : added_) max_added = std::max<int64_t>(max_added, o.id);
      const int64_t id = max_added >= model_size ? max_added + 1 : model_size;
      if (id > INT32_MAX) w.error(at, "too many tokens");
      t.id = static_cast<int32_t>(id);
    }
    bool dup = false;
    for (const AddedToken& o : added_) dup = dup || o.content == t.content;
    if (!dup) added_.push_back(std::move(t));
  }
}

void HfTokenizer::load_post_processor(const Where& w, const json& j, const std::string& at) {
  if (j.is_null()) return;
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    const json& list = w.req_array(j, "processors", at);
    for (size_t i = 0; i < list.size(); ++i)
      load_post_processor(w, list[i], str(at, ".processors[", i, "]"));
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "TemplateProcessing") {
    const json& single = w.req_array(j, "single", at);
    const json* specials = j.contains("special_tokens") ? &j["special_tokens"] : nullptr;
    bool seen_a = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string iat = str(at, ".single[", i, "]");
      const json& item = single[i];
      if (item.is_object() && item.contains("Sequence")) {
        seen_a = true;
        continue;
      }
      if (!item.is_object() || !item.contains("SpecialToken"))
        w.error(iat, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      const std::string name = w.req_str(item["SpecialToken"], "id", iat + ".SpecialToken");
      std::vector<int32_t> ids;
      if (specials && specials->is_object() && specials->contains(name)) {
        const json& ids_j =
            w.req_array((*specials)[name], "ids", str(at, ".special_tokens.", name));
        for (const json& v : ids_j) {
          if (!v.is_number_integer())
            w.error(str(at, ".special_tokens.", name), "ids must be integers");
          ids.push_back(v.get<int32_t>());
        }
      } else if (auto id = lookup(name)) {
        ids.push_back(*id);
      } else {
        w.error(iat, str("special token '", name, "' is not defined"));
      }
      auto& dst = seen_a ? suffix_ : prefix_;
      dst.insert(dst.end(), ids.begin(), ids.end());
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto token_of = [&](const char* key) {
      const json& v = w.req(j, key, at);
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
        w.error(str(at, ".", key), "expected [token, id]");
      return v[1].get<int32_t>();
    };
    prefix_.push_back(token_of("cls"));
    suffix_.insert(suffix_.begin(), token_of("sep"));
  } else {
    w.error(at, str("unsupported post_processor type '", type,
                    "' (supported: TemplateProcessing, ByteLevel, RobertaProcessing, "
                    "BertProcessing, Sequence)"));
  }
}

HfTokenizer::HfTokenizer(const std::string& json_text, const std::string& config_text,
                         const std::string& path) {
  source_ = path;
  const Where w{source_};
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
  if (!root.is_object()) fail(path, ": expected a JSON object (a Hugging Face tokenizer.json)");
  if (!root.contains("model")) fail(path, ": missing 'model' (not a Hugging Face tokenizer.json?)");

  try {
    load_model(w, root["model"]);
    if (root.contains("normalizer")) parse_normalizer(w, root["normalizer"], "normalizer", norm_);
    if (root.contains("pre_tokenizer"))
      parse_pretokenizer(w, root["pre_tokenizer"], "pre_tokenizer", pre_);
    if (root.contains("decoder") && !root["decoder"].is_null()) {
      parse_decoder(w, root["decoder"], "decoder", dec_);
      has_decoder_ = true;
    }
    if (root.contains("added_tokens")) load_added_tokens(w, root["added_tokens"]);
    if (root.contains("post_processor"))
      load_post_processor(w, root["post_processor"], "post_processor");
  } catch (const json::exception& e) {
    fail(path, ": malformed tokenizer.json: ", e.what());
  }

  const bool byte_level = std::any_of(pre_.begin(), pre_.end(),
                                      [](const PreOp& p) { return p.kind == PreOp::ByteLevel; });
  kind_ = byte_level ? "hf-bpe-byte-level" : "hf-bpe";

  // Vocabulary: the model's plus the added tokens (which may extend it).
  for (const AddedToken& t : added_) {
    if (static_cast<size_t>(t.id) >= id_to_text_.size())
      id_to_text_.resize(static_cast<size_t>(t.id) + 1);
    if (id_to_text_[t.id].empty()) id_to_text_[t.id] = t.content;
  }
  special_.assign(id_to_text_.size(), 0);
  decode_text_ = id_to_text_;
  for (size_t i = 0; i < added_.size(); ++i) {
    AddedToken& t = added_[i];
    t.match = t.normalized ? apply_normalizer(norm_, t.content) : t.content;
    if (t.special) special_[t.id] = 1;
    decode_text_[t.id] = t.match;  // HF tokenizers decodes an added token as it matched it
    (t.normalized ? norm_matcher_ : raw_matcher_).add(t.match, static_cast<int32_t>(i));
  }
  for (int32_t id : prefix_) check_id(id);
  for (int32_t id : suffix_) check_id(id);

  // tokenizer_config.json: bos/eos tokens and add_bos_token/add_eos_token overrides.
  json config;
  if (!config_text.empty()) {
    try {
      config = json::parse(config_text);
    } catch (const json::exception& e) {
      fail(path, ": tokenizer_config.json: invalid JSON: ", e.what());
    }
    if (!config.is_object()) fail(path, ": tokenizer_config.json: expected a JSON object");
  }
  auto special_from_config = [&](const char* key) -> std::optional<int32_t> {
    if (!config.is_object() || !config.contains(key)) return std::nullopt;
    const json& v = config[key];
    std::string name;
    if (v.is_string()) {
      name = v.get<std::string>();
    } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
      name = v["content"].get<std::string>();
    } else {
      return std::nullopt;
    }
    return lookup(name);  // a name the vocabulary lacks leaves the token undefined
  };
  bos_ = special_from_config("bos_token");
  eos_ = special_from_config("eos_token");
  if (!bos_ && !prefix_.empty()) bos_ = prefix_.front();
  if (!eos_ && !suffix_.empty()) eos_ = suffix_.back();
  auto flag = [&](const char* key) -> std::optional<bool> {
    if (!config.is_object() || !config.contains(key) || !config[key].is_boolean())
      return std::nullopt;
    return config[key].get<bool>();
  };
  if (auto add_bos = flag("add_bos_token"); add_bos && bos_) {
    const bool has = !prefix_.empty() && prefix_.front() == *bos_;
    if (*add_bos && !has) prefix_.insert(prefix_.begin(), *bos_);
    if (!*add_bos && has) prefix_.erase(prefix_.begin());
  }
  if (auto add_eos = flag("add_eos_token"); add_eos && eos_) {
    const bool has = !suffix_.empty() && suffix_.back() == *eos_;
    if (*add_eos && !has) suffix_.push_back(*eos_);
    if (!*add_eos && has) suffix_.pop_back();
  }
}

void HfTokenizer::split_added(std::string_view text, const AddedMatcher& m, bool parse_special,
                              bool at_start, std::vector<Piece>& out) const {
  size_t pos = 0, from = 0, b = 0, e = 0;
  int32_t index = -1;
  while (m.find(text, from, b, e, index)) {
    from = e;
    const AddedToken& t = added_[index];
    if (!parse_special && t.special) continue;
    if (t.single_word) {
      size_t cs = 0, cl = 0;
      const bool start_ok = b == 0 || !is_word_char(char_before(text, b, cs));
      const bool stop_ok = e == text.size() || !is_word_char(char_at(text, e, cl));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t nb = b, cs = 0;
      while (nb > 0 && u_isUWhiteSpace(static_cast<UChar32>(char_before(text, nb, cs)))) nb = cs;
      b = std::max(nb, pos);
    }
    if (t.rstrip) {
      size_t cl = 0;
      while (e < text.size() && u_isUWhiteSpace(static_cast<UChar32>(char_at(text, e, cl))))
        e += cl;
    }
    if (b > pos) out.push_back({std::string(text.substr(pos, b - pos)), -1, at_start && pos == 0});
    out.push_back({std::string(), t.id, false});
    pos = e;
  }
  if (pos < text.size()) out.push_back({std::string(text.substr(pos)), -1, at_start && pos == 0});
}

void HfTokenizer::encode_impl(std::string_view text, bool add_special, bool parse_special,
                              std::vector<int32_t>& out) const {
  if (add_special) out.insert(out.end(), prefix_.begin(), prefix_.end());
  std::vector<Piece> raw, pieces;
  split_added(text, raw_matcher_, parse_special, true, raw);
  for (Piece& p : raw) {
    if (p.id >= 0) {
      pieces.push_back(std::move(p));
      continue;
    }
    const std::string normalized = apply_normalizer(norm_, std::move(p.text));
    split_added(normalized, norm_matcher_, parse_special, p.at_start, pieces);
  }
  std::vector<PreSplit> splits;
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(p.id);
      continue;
    }
    if (p.text.empty()) continue;
    splits.clear();
    splits.push_back({std::move(p.text), p.at_start});
    for (const PreOp& op : pre_) apply_pretokenizer(op, splits);
    for (const PreSplit& s : splits) bpe_->encode_word(s.text, out);
  }
  if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
}

std::string HfTokenizer::decode_impl(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special && special_[id]) continue;
    toks.push_back(decode_text_[id]);
  }
  if (!has_decoder_) {  // HF joins the tokens with spaces when there is no decoder
    std::string out;
    for (size_t i = 0; i < toks.size(); ++i) out += (i ? " " : "") + toks[i];
    return out;
  }
  for (const DecOp& op : dec_) apply_decoder(op, toks);
  std::string out;
  for (const std::string& t : toks) out += t;
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_json(const std::string& tokenizer_json_text,
                                                   const std::string& tokenizer_config_json_text,
                                                   const std::string& path_for_errors) {
  return std::make_unique<HfTokenizer>(tokenizer_json_text, tokenizer_config_json_text,
                                       path_for_errors);
}

}  // namespace moetool
