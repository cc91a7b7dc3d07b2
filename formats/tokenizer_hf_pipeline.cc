// formats/tokenizer_hf_pipeline.cc — the steps of a Hugging Face tokenizer.json pipeline, parsed
// from JSON and applied as HF `tokenizers` does: normalizers (Sequence, Prepend, Replace, NFC/NFD/
// NFKC/NFKD, Lowercase, StripAccents, Strip), pre-tokenizers (ByteLevel, Split, Metaspace, Digits,
// Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer) and decoders (ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace).
#include "formats/tokenizer_hf_pipeline.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

namespace moetool::hf {

namespace {

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

}  // namespace

std::shared_ptr<RegexSplitter> make_splitter(const Where& w, const std::string& at,
                                             std::string_view pattern, bool literal,
                                             SplitBehavior b, bool invert) {
  return std::make_shared<RegexSplitter>(pattern, literal, b, invert, str(w.path, ": ", at));
}

namespace {

ReplacePattern parse_replace(const Where& w, const json& j, const std::string& at) {
  const Pattern p = parse_pattern(w, w.req(j, "pattern", at), at + ".pattern");
  ReplacePattern r{p.text, w.req_str(j, "content", at), nullptr};
  if (!p.literal) {
    r.regex = make_splitter(w, at, p.text, false, SplitBehavior::Isolated);
  } else if (p.text.empty()) {
    w.error(at, "Replace with an empty pattern");
  }
  return r;
}

}  // namespace

std::string ReplacePattern::apply(const std::string& s) const {
  if (!regex) return tok::replace_all(s, from, to);
  std::vector<RegexSplitter::Span> m;
  regex->matches(s, m);
  std::string out;
  size_t prev = 0;
  for (const auto& [b, e] : m) {
    out.append(s, prev, b - prev);
    out += to;
    prev = e;
  }
  out.append(s, prev, std::string::npos);
  return out;
}

// ---- Normalizers -------------------------------------------------------------------------------

void parse_normalizer(const Where& w, const json& j, const std::string& at,
                      std::vector<NormOp>& ops) {
  if (j.is_null()) return;
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    w.each(j, "normalizers", at,
           [&](const json& e, const std::string& e_at) { parse_normalizer(w, e, e_at, ops); });
  } else if (type == "Prepend") {
    ops.push_back(NormOp(NormOp::Prepend, w.req_str(j, "prepend", at)));
  } else if (type == "Replace") {
    NormOp op(NormOp::Replace);
    op.replace = parse_replace(w, j, at);
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


std::string apply_normalizer(const std::vector<NormOp>& ops, std::string s) {
  for (const NormOp& op : ops) {
    switch (op.kind) {
      case NormOp::Prepend:
        if (!s.empty()) s = op.a + s;
        break;
      case NormOp::Replace:
        s = op.replace.apply(s);
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

void parse_pretokenizer(const Where& w, const json& j, const std::string& at,
                        std::vector<PreOp>& ops) {
  if (j.is_null()) return;
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    w.each(j, "pretokenizers", at,
           [&](const json& e, const std::string& e_at) { parse_pretokenizer(w, e, e_at, ops); });
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

void parse_decoder(const Where& w, const json& j, const std::string& at, std::vector<DecOp>& ops) {
  const std::string type = w.type_of(j, at);
  if (type == "Sequence") {
    w.each(j, "decoders", at,
           [&](const json& e, const std::string& e_at) { parse_decoder(w, e, e_at, ops); });
  } else if (type == "Replace") {
    DecOp op(DecOp::Replace);
    op.replace = parse_replace(w, j, at);
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


void apply_decoder(const DecOp& op, std::vector<std::string>& toks) {
  switch (op.kind) {
    case DecOp::Replace:
      for (std::string& t : toks) t = op.replace.apply(t);
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
        if (auto b = tok::byte_token_value(t)) {
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

}  // namespace moetool::hf
