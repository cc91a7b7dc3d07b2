// formats/tokenizer_internal.h — pieces shared by the tokenizer implementation files (not part of
// the public API): UTF-8 helpers, GPT-2's byte-to-unicode mapping, ICU regex splitting with Hugging
// Face's split behaviours, the pre-tokenizer regexes, the BPE merge engine and llama.cpp's SPM
// engine.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/utf8.h"

namespace moetool::tok {

// Hash for unordered maps keyed by std::string that accept std::string_view lookups.
struct StrHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StrMap = std::unordered_map<std::string, int32_t, StrHash, std::equal_to<>>;

inline constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // "▁" U+2581

// ---- UTF-8 -------------------------------------------------------------------------------------

// (Decoding and encoding: core/utf8.h.)
// llama.cpp's unicode_len_utf8: the length implied by a lead byte (1 for continuation bytes).
size_t utf8_lead_len(uint8_t first);
// Replaces every occurrence of `from` (non-empty) by `to`.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

// ---- GPT-2 byte-level --------------------------------------------------------------------------

// Byte -> the UTF-8 text of its printable stand-in ('A' -> "A", ' ' -> "Ġ", '\n' -> "Ċ").
const std::vector<std::string>& byte_to_unicode();
std::string byte_level_encode(std::string_view bytes);
// The byte a stand-in character represents, if it is one.
std::optional<uint8_t> unicode_to_byte(char32_t cp);

// ---- Byte tokens -------------------------------------------------------------------------------

// The byte of a byte token "<0xNN>" (hex digits in either case), if `t` is one.
std::optional<uint8_t> byte_token_value(std::string_view t);

// ---- Regex splitting (ICU) ---------------------------------------------------------------------

// Hugging Face tokenizers' SplitDelimiterBehavior.
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// A compiled pattern (ICU regex, or a literal string) that splits text like HF's Split
// pre-tokenizer. Immutable and thread-safe (each call makes its own matcher).
class RegexSplitter {
 public:
  // Throws moetool::Error "<ctx>: invalid regex ..." when ICU rejects the pattern.
  RegexSplitter(std::string_view pattern, bool literal, SplitBehavior behavior, bool invert,
                const std::string& ctx);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  using Span = std::pair<size_t, size_t>;  // [begin, end) byte offsets into a text
  // Splits each of `spans` (character-aligned ranges of `text`, each matched on its own as HF does
  // per piece) and appends the non-empty pieces to `out`.
  void split(std::string_view text, const std::vector<Span>& spans, std::vector<Span>& out) const;
  // The non-empty matches in the whole of `text`, in order.
  void matches(std::string_view text, std::vector<Span>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  SplitBehavior behavior_;
  bool invert_;
};

// Pre-tokenizer regexes as written in the reference tokenizer.json files.
extern const char* const kGpt2Regex;    // GPT-2 ByteLevel
extern const char* const kLlama3Regex;  // Llama-3 Split
extern const char* const kQwen2Regex;   // Qwen2 Split

// llama.cpp's regex list for a GGUF tokenizer.ggml.pre value (each applied in turn, Isolated), and
// whether the pre-type sets ignore_merges. Returns false for an unsupported value.
bool gguf_pre_regexes(std::string_view pre, std::vector<std::string>& regexes, bool& ignore_merges);

// ---- BPE merge engine --------------------------------------------------------------------------

struct BpeOptions {
  bool byte_fallback = false;     // HF: characters not in the vocab -> <0xNN> tokens when all exist
  std::optional<int32_t> unk_id;  // HF: otherwise -> unk (fused when fuse_unk)
  bool fuse_unk = false;
  bool ignore_merges = false;  // a word that is itself in the vocab is one token
  std::string continuing_subword_prefix, end_of_word_suffix;
  bool single_byte_fallback = false;  // llama.cpp: unknown characters -> their single-byte tokens
  bool later_merge_wins = true;  // duplicate merges: HF keeps the last rank, llama.cpp the first
  size_t cache_words = 50000;    // per-word result cache (0: none)
};

// Byte-pair encoding of one pre-tokenized word: start from its characters, repeatedly apply the
// lowest-ranked merge of adjacent symbols (ties: leftmost), as HF tokenizers' Word::merge_all and
// llama.cpp's llm_tokenizer_bpe_session do.
class BpeModel {
 public:
  BpeModel(const StrMap& vocab, BpeOptions opts);
  // Adds the next merge (rank = number of merges added before). Returns false, adding nothing,
  // when `a`, `b` or their concatenation is not in the vocab.
  bool add_merge(std::string_view a, std::string_view b);
  size_t num_merges() const { return n_merges_; }
  void reserve_merges(size_t n) { merges_.reserve(n); }
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

 private:
  void encode_uncached(std::string_view word, std::vector<int32_t>& out) const;
  const StrMap& vocab_;
  BpeOptions opts_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a << 32 | b) -> (rank, id)
  size_t n_merges_ = 0;
  std::vector<int32_t> byte_tokens_;         // byte -> "<0xNN>" id or -1
  std::vector<int32_t> single_byte_tokens_;  // byte -> id of the 1-byte string or -1
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// ---- llama.cpp SPM engine ----------------------------------------------------------------------

// llama.cpp's llm_tokenizer_spm: symbols are UTF-8 characters; repeatedly merge the adjacent pair
// whose concatenation is a vocabulary token with the highest score (ties: leftmost); symbols that
// are not tokens become byte tokens (<0xNN>, else the 1-byte string, else unk).
class SpmModel {
 public:
  SpmModel(const StrMap& vocab, const std::vector<float>& scores, std::optional<int32_t> unk_id);
  // `text` already has spaces escaped to "▁".
  void encode(std::string_view text, std::vector<int32_t>& out) const;

 private:
  const StrMap& vocab_;
  const std::vector<float>& scores_;
  std::vector<int32_t> byte_tokens_;  // byte -> token id or -1
  std::optional<int32_t> unk_id_;
};

}  // namespace moetool::tok
