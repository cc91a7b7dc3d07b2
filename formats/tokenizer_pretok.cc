// formats/tokenizer_pretok.cc — text plumbing for the tokenizers: UTF-8 helpers, GPT-2's
// byte-to-unicode mapping, ICU regex splitting with Hugging Face's Split behaviours, and the
// pre-tokenizer regexes of HF tokenizer.json files and of llama.cpp's tokenizer.ggml.pre types.
#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <array>

#include "core/error.h"
#include "formats/tokenizer_internal.h"

namespace moetool::tok {

// ---- UTF-8 -------------------------------------------------------------------------------------

size_t utf8_lead_len(uint8_t first) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[first >> 4];
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// ---- GPT-2 byte-level --------------------------------------------------------------------------

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order.
std::array<char32_t, 256> make_byte_cps() {
  std::array<char32_t, 256> cps{};
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    cps[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
  }
  return cps;
}

}  // namespace

const std::vector<std::string>& byte_to_unicode() {
  static const std::vector<std::string> table = [] {
    const auto cps = make_byte_cps();
    std::vector<std::string> t(256);
    for (int b = 0; b < 256; ++b) utf8_append(t[b], cps[b]);
    return t;
  }();
  return table;
}

std::optional<uint8_t> unicode_to_byte(char32_t cp) {
  static const std::array<int16_t, 324> inverse = [] {
    std::array<int16_t, 324> inv{};
    inv.fill(-1);
    const auto cps = make_byte_cps();
    for (int b = 0; b < 256; ++b) inv[cps[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  if (cp >= inverse.size() || inverse[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(inverse[cp]);
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& table = byte_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += table[static_cast<uint8_t>(c)];
  return out;
}

// ---- Byte tokens -------------------------------------------------------------------------------

std::optional<uint8_t> byte_token_value(std::string_view t) {
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

// ---- Regex splitting ---------------------------------------------------------------------------

struct RegexSplitter::Impl {
  std::unique_ptr<icu::RegexPattern> pattern;
};

RegexSplitter::RegexSplitter(std::string_view pattern, bool literal, SplitBehavior behavior,
                             bool invert, const std::string& ctx)
    : impl_(std::make_unique<Impl>()), behavior_(behavior), invert_(invert) {
  if (!utf8_valid(pattern)) fail(ctx, ": regex is not valid UTF-8");
  const icu::UnicodeString upat = icu::UnicodeString::fromUTF8(
      icu::StringPiece(pattern.data(), static_cast<int32_t>(pattern.size())));
  UErrorCode status = U_ZERO_ERROR;
  UParseError perr{};
  impl_->pattern.reset(
      icu::RegexPattern::compile(upat, literal ? UREGEX_LITERAL : 0, perr, status));
  if (U_FAILURE(status) || !impl_->pattern) {
    fail(ctx, ": invalid regex '", pattern, "' (ICU: ", u_errorName(status), " at offset ",
         perr.offset, ")");
  }
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;

namespace {

// `text` as UTF-16 with index maps both ways (invalid bytes become U+FFFD).
struct U16Text {
  icu::UnicodeString str;
  std::vector<uint32_t> to_byte;  // UTF-16 index -> byte offset (size length()+1)
  std::vector<int32_t> to_u16;    // byte offset -> UTF-16 index (valid at character starts)

  explicit U16Text(std::string_view text) {
    const auto chars = utf8_chars(text);
    to_u16.assign(text.size() + 1, 0);
    to_byte.reserve(text.size() + 1);
    for (const U8Char& c : chars) {
      to_u16[c.off] = str.length();
      str.append(static_cast<UChar32>(c.cp));
      while (static_cast<int32_t>(to_byte.size()) < str.length()) to_byte.push_back(c.off);
    }
    to_u16[text.size()] = str.length();
    to_byte.push_back(static_cast<uint32_t>(text.size()));
  }
};

using Span = RegexSplitter::Span;

// HF's SplitDelimiterBehavior applied to pieces tagged "is a match".
void apply_behavior(const std::vector<std::pair<Span, bool>>& pieces, SplitBehavior behavior,
                    std::vector<Span>& out) {
  std::vector<std::pair<Span, bool>> acc;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const auto& [sp, m] : pieces)
        if (!m) acc.push_back({sp, false});
      break;
    case SplitBehavior::Isolated:
      acc = pieces;
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const auto& [sp, m] : pieces) {
        if (m && !prev_match && !acc.empty()) {
          acc.back().first.second = sp.second;
        } else {
          acc.push_back({sp, m});
        }
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev_match = false;
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        const auto& [sp, m] = *it;
        if (m && !prev_match && !acc.empty()) {
          acc.back().first.first = sp.first;
        } else {
          acc.push_back({sp, m});
        }
        prev_match = m;
      }
      std::reverse(acc.begin(), acc.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_match = false;
      for (const auto& [sp, m] : pieces) {
        if (m == prev_match && !acc.empty()) {
          acc.back().first.second = sp.second;
        } else {
          acc.push_back({sp, m});
        }
        prev_match = m;
      }
      break;
    }
  }
  for (const auto& [sp, m] : acc)
    if (sp.second > sp.first) out.push_back(sp);
}

}  // namespace

void RegexSplitter::split(std::string_view text, const std::vector<Span>& spans,
                          std::vector<Span>& out) const {
  if (spans.empty()) return;
  const U16Text u(text);
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(impl_->pattern->matcher(u.str, status));
  if (U_FAILURE(status)) fail("regex matcher: ", u_errorName(status));
  std::vector<std::pair<Span, bool>> pieces;
  for (const Span& sp : spans) {
    if (sp.second <= sp.first) continue;
    pieces.clear();
    m->region(u.to_u16[sp.first], u.to_u16[sp.second], status);
    size_t prev = sp.first;
    while (m->find(status) && U_SUCCESS(status)) {
      const size_t s = u.to_byte[m->start(status)], e = u.to_byte[m->end(status)];
      if (e <= s) continue;  // empty matches split nothing (HF drops empty pieces)
      if (s > prev) pieces.push_back({{prev, s}, invert_});
      pieces.push_back({{s, e}, !invert_});
      prev = e;
    }
    if (U_FAILURE(status)) fail("regex matching failed: ", u_errorName(status));
    if (prev < sp.second) pieces.push_back({{prev, sp.second}, invert_});
    apply_behavior(pieces, behavior_, out);
  }
}

void RegexSplitter::matches(std::string_view text, std::vector<Span>& out) const {
  const U16Text u(text);
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(impl_->pattern->matcher(u.str, status));
  if (U_FAILURE(status)) fail("regex matcher: ", u_errorName(status));
  while (m->find(status) && U_SUCCESS(status)) {
    const size_t s = u.to_byte[m->start(status)], e = u.to_byte[m->end(status)];
    if (e > s) out.push_back({s, e});
  }
  if (U_FAILURE(status)) fail("regex matching failed: ", u_errorName(status));
}

// ---- Pre-tokenizer regexes ---------------------------------------------------------------------

const char* const kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

// GPT-2's regex without the final `|\s+` (llama.cpp's lists; unmatched text stays a piece anyway).
constexpr const char* kGpt2NoTail =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kGpt4oRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kTekkenRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// DeepSeek LLM's letter class (the tokenizer.json Split regex, as llama.cpp copies it).
constexpr const char* kDeepseekLetters =
    "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-"
    "\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1"
    "\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD"
    "\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D"
    "\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-"
    "\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4"
    "\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D"
    "\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4"
    "\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E"
    "\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F"
    "\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2"
    "\U000118A0-\U000118DF\U0001E900-\U0001E943]+";
constexpr const char* kDeepseekPunct =
    "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+";
constexpr const char* kCjk = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+";

bool in(std::string_view s, std::initializer_list<std::string_view> names) {
  for (std::string_view n : names)
    if (s == n) return true;
  return false;
}

}  // namespace

bool gguf_pre_regexes(std::string_view pre, std::vector<std::string>& rx, bool& ignore_merges) {
  ignore_merges = false;
  if (pre.empty() || pre == "default") {
    rx = {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2NoTail, R"(\p{N}+)", "[0-9][0-9][0-9]"};
  } else if (in(pre, {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})) {
    rx = {kLlama3Regex};
    ignore_merges = true;
  } else if (in(pre, {"dbrx", "smaug-bpe", "chatglm-bpe", "glm4"})) {
    rx = {kLlama3Regex};
  } else if (pre == "deepseek-llm") {
    rx = {"[\r\n]", kDeepseekLetters, kDeepseekPunct, R"(\s+$)", kCjk, R"(\p{N}+)"};
  } else if (pre == "deepseek-coder") {
    rx = {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kCjk, R"(\p{N})"};
  } else if (pre == "deepseek-v3") {
    rx = {R"(\p{N}{1,3})", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
          "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
          "\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};
  } else if (pre == "falcon") {
    rx = {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2NoTail, "[0-9][0-9][0-9]"};
  } else if (in(pre, {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
                      "minerva-7b"})) {
    rx = {R"(\p{N})", kGpt2NoTail};
  } else if (in(pre, {"gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "jina-v1-en",
                      "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "gigachat",
                      "exaone4", "trillion"})) {
    rx = {kGpt2Regex};
  } else if (in(pre, {"qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan", "megrez"})) {
    rx = {kQwen2Regex};
  } else if (in(pre, {"gpt-4o", "llama4"})) {
    rx = {kGpt4oRegex};
  } else if (pre == "tekken") {
    rx = {kTekkenRegex};
    ignore_merges = true;
  } else {
    return false;
  }
  return true;
}

}  // namespace moetool::tok
