// formats/tokenizer.h — text <-> token ids for the inference checker: Hugging Face tokenizer.json
// BPE tokenizers (SentencePiece-style with byte fallback, and GPT-2 byte-level with the GPT-2,
// Llama-3 and Qwen2 pre-tokenizer regexes) and GGUF vocabularies ("llama" = llama.cpp's
// score-based SentencePiece algorithm, "gpt2" = byte-level BPE with the pre-tokenizer chosen by
// tokenizer.ggml.pre).
//
// Semantics follow the reference implementations: a tokenizer.json encodes like Hugging Face
// `tokenizers` (added tokens split out first, normalizer, pre-tokenizer, BPE, post-processor); a
// GGUF vocabulary encodes like llama.cpp's llama_tokenize (special tokens partitioned first, SPM
// space prefix, pre-tokenizer regexes). Loaders throw moetool::Error naming the file and what was
// expected; nothing here prints or exits. A Tokenizer is immutable after loading and safe to use
// from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moetool {

class GGUFFile;

class Tokenizer {
 public:
  // From a Hugging Face model directory: tokenizer.json (required) and tokenizer_config.json
  // (optional: add_bos_token / add_eos_token, bos_token / eos_token).
  static std::unique_ptr<Tokenizer> from_hf_dir(const std::string& dir);
  // Same from the file contents; `tokenizer_config_json_text` may be empty. `path_for_errors`
  // names the source in error messages.
  static std::unique_ptr<Tokenizer> from_hf_json(const std::string& tokenizer_json_text,
                                                 const std::string& tokenizer_config_json_text,
                                                 const std::string& path_for_errors);
  // From GGUF tokenizer metadata: tokenizer.ggml.model "llama" (SentencePiece scores) or "gpt2"
  // (BPE merges); tokens, scores, token_type, merges, pre, bos/eos/unk ids, add_bos_token,
  // add_eos_token, add_space_prefix.
  static std::unique_ptr<Tokenizer> from_gguf(const GGUFFile& f);

  virtual ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. add_special: add BOS/EOS as the tokenizer's configuration says (HF: the
  // post-processor template, overridden by tokenizer_config.json's add_bos_token/add_eos_token;
  // GGUF: tokenizer.ggml.add_bos_token/add_eos_token). parse_special: recognise special tokens
  // written in the text (non-special added / user-defined tokens are always recognised, as in HF
  // tokenizers and llama.cpp).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                              bool parse_special = true) const;
  // Text of `ids` (the inverse of encode for text the vocabulary covers). skip_special drops
  // special tokens (HF: special added tokens; GGUF: control and unknown tokens). Throws
  // moetool::Error for an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The vocabulary string of `id` (e.g. "▁the", "Ġthe", "<0x0A>", "<|start_story|>"); throws for an
  // id outside [0, vocab_size()).
  std::string token_text(int32_t id) const;
  // The id of a vocabulary string, if any.
  std::optional<int32_t> token_id(std::string_view text) const;
  int64_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // Whether `id` is a special token (HF: special added token; GGUF: control or unknown type).
  bool is_special(int32_t id) const;
  // "hf-bpe", "hf-bpe-byte-level", "gguf-spm" or "gguf-bpe" — for messages.
  const std::string& kind() const { return kind_; }

 protected:
  Tokenizer() = default;
  virtual void encode_impl(std::string_view text, bool add_special, bool parse_special,
                           std::vector<int32_t>& out) const = 0;
  virtual std::string decode_impl(const std::vector<int32_t>& ids, bool skip_special) const = 0;
  virtual std::optional<int32_t> find_token(std::string_view text) const = 0;
  void check_id(int32_t id) const;  // throws unless 0 <= id < vocab_size()

  std::string source_;  // file named in errors
  std::string kind_;
  std::vector<std::string> id_to_text_;  // vocabulary strings, indexed by id ("" for holes)
  std::vector<uint8_t> special_;         // is_special per id
  std::optional<int32_t> bos_, eos_;
};

}  // namespace moetool
