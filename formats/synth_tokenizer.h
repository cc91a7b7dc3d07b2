// formats/synth_tokenizer.h — a small, deterministic byte-level BPE tokenizer (Hugging Face
// tokenizer.json, tokenizer_config.json, special_tokens_map.json) for the checkpoints `moetool synth`
// writes: 256 GPT-2 byte tokens, merges learned by a tiny BPE trainer over built-in English prose,
// and "<|begin_of_text|>" / "<|end_of_text|>" as the last two ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moetool {

inline constexpr int64_t kSynthTokenizerMinVocab = 260;  // 256 bytes + room for merges + 2 specials
inline constexpr const char* kSynthBosToken = "<|begin_of_text|>";
inline constexpr const char* kSynthEosToken = "<|end_of_text|>";
inline constexpr int64_t kSynthModelMaxLength = 4096;  // tokenizer_config.json "model_max_length"

struct SynthTokenizer {
  std::string tokenizer_json;           // Hugging Face tokenizers' tokenizer.json
  std::string tokenizer_config_json;    // tokenizer_config.json (PreTrainedTokenizerFast)
  std::string special_tokens_map_json;  // special_tokens_map.json
  int64_t size = 0;                     // number of tokens (ids 0..size-1), <= max_vocab
  int64_t bos_id = 0, eos_id = 0;       // size-2, size-1
};

// A byte-level BPE tokenizer with at most `max_vocab` tokens: ids 0..255 are the bytes in GPT-2's
// byte-to-unicode order, then merges learned greedily (most frequent pair, ties to the smallest
// pair of ids) over a built-in text, stopping at max_vocab-2 tokens or when no pair occurs twice,
// then bos and eos (ids size-2 and size-1, in the model vocab and as special added_tokens). The
// post-processor prepends bos. Output is byte-identical for the same max_vocab. Throws
// moetool::Error if max_vocab < kSynthTokenizerMinVocab.
SynthTokenizer make_synth_tokenizer(int64_t max_vocab);

// Exposed for tests: GPT-2's pre-tokenizer regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// applied to ASCII text (bytes >= 0x80 count as "other", which is exact only for ASCII input).
// The pieces concatenate back to `text`.
std::vector<std::string> synth_pretokenize_ascii(std::string_view text);

}  // namespace moetool
