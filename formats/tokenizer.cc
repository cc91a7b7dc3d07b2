// formats/tokenizer.cc — the Tokenizer base: loading a Hugging Face model directory, id checks,
// vocabulary queries, and the encode/decode entry points that dispatch to the HF
// (tokenizer_hf.cc) and GGUF (tokenizer_gguf.cc) implementations.
#include "formats/tokenizer.h"

#include "core/error.h"
#include "core/fs.h"

namespace moetool {

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  const std::string json_path = path_join(dir, "tokenizer.json");
  if (!file_exists(json_path)) {
    fail(dir,
         ": no tokenizer.json (moetool reads Hugging Face fast-tokenizer files; a "
         "SentencePiece tokenizer.model alone is not supported)");
  }
  const std::string config_path = path_join(dir, "tokenizer_config.json");
  const std::string config = file_exists(config_path) ? read_file(config_path) : std::string();
  return from_hf_json(read_file(json_path), config, json_path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_impl(text, add_special, parse_special, out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  for (int32_t id : ids) check_id(id);
  return decode_impl(ids, skip_special);
}

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_text_.size()) {
    fail(source_, ": token id ", id, " is outside the vocabulary [0, ", id_to_text_.size(), ")");
  }
}

std::string Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return id_to_text_[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view text) const { return find_token(text); }

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(id_to_text_.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return bos_; }
std::optional<int32_t> Tokenizer::eos_id() const { return eos_; }

bool Tokenizer::is_special(int32_t id) const {
  check_id(id);
  return special_[id] != 0;
}

}  // namespace moetool
