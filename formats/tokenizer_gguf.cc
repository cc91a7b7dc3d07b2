// formats/tokenizer_gguf.cc — tokenizers from GGUF metadata, encoding as llama.cpp's
// llama_tokenize does: special tokens partitioned out first (longest token text first; control and
// unknown tokens only when parse_special, user-defined ones always), then "llama" vocabularies go
// through the SPM algorithm with the "▁" space prefix, and "gpt2" vocabularies through the
// pre-tokenizer regexes of tokenizer.ggml.pre, GPT-2 byte-level encoding and BPE merges.
#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/tokenizer.h"
#include "formats/tokenizer_internal.h"

namespace moetool {

namespace {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct Frag {
  int32_t id;  // >= 0: a special token
  size_t off, len;
};

class GgufTokenizer final : public Tokenizer {
 public:
  explicit GgufTokenizer(const GGUFFile& f);

 protected:
  void encode_impl(std::string_view text, bool add_special, bool parse_special,
                   std::vector<int32_t>& out) const override;
  std::string decode_impl(const std::vector<int32_t>& ids, bool skip_special) const override;
  std::optional<int32_t> find_token(std::string_view text) const override {
    auto it = vocab_.find(text);
    return it == vocab_.end() ? std::nullopt : std::optional<int32_t>(it->second);
  }

 private:
  // Construction steps, in order.
  void load_vocab(const GGUFFile& f);  // tokens, scores, token types, byte tokens
  // bos/eos ids (and the SPM defaults add_bos, add_space_prefix); returns the unk id.
  std::optional<int32_t> load_special_ids(const GGUFFile& f);
  void mark_end_of_generation();  // llama.cpp's end-of-generation markers become control
  void load_bpe(const GGUFFile& f);        // "gpt2": pre-tokenizer regexes and merges
  void load_flags(const GGUFFile& f);      // add_bos/add_eos/add_space_prefix
  void index_specials(const GGUFFile& f);  // special_, special_cache_, lstrip_/rstrip_

  void partition(std::string_view text, bool parse_special, std::vector<Frag>& frags) const;
  bool is_control_or_unknown(int32_t id) const {
    return types_[id] == kControl || types_[id] == kUnknown;
  }

  bool spm_ = true;
  tok::StrMap vocab_;
  std::vector<float> scores_;
  std::vector<int32_t> types_;
  std::vector<uint8_t> lstrip_, rstrip_;
  std::vector<uint8_t> byte_value_;     // kByte tokens: the byte
  std::vector<int32_t> special_cache_;  // control/user-defined/unknown ids, longest text first
  std::unique_ptr<tok::SpmModel> spm_model_;
  std::unique_ptr<tok::BpeModel> bpe_model_;
  std::vector<tok::RegexSplitter> regexes_;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
};

GgufTokenizer::GgufTokenizer(const GGUFFile& f) {
  source_ = f.path();
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    spm_ = true;
    kind_ = "gguf-spm";
  } else if (model == "gpt2") {
    spm_ = false;
    kind_ = "gguf-bpe";
  } else {
    fail(source_, ": unsupported tokenizer.ggml.model '", model,
         "' (moetool supports \"llama\" (SentencePiece) and \"gpt2\" (BPE))");
  }
  load_vocab(f);
  const std::optional<int32_t> unk = load_special_ids(f);
  mark_end_of_generation();
  if (spm_) {
    spm_model_ = std::make_unique<tok::SpmModel>(vocab_, scores_, unk);
  } else {
    load_bpe(f);
  }
  load_flags(f);
  index_specials(f);
}

void GgufTokenizer::load_vocab(const GGUFFile& f) {
  const std::vector<std::string>& tokens = f.get_string_array("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  if (n == 0) fail(source_, ": tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX))
    fail(source_, ": tokenizer.ggml.tokens has too many tokens");
  id_to_text_.resize(n);
  vocab_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    // llama.cpp renames empty tokens so that they can never match.
    id_to_text_[i] = tokens[i].empty() ? str("[EMPTY_", i, "]") : tokens[i];
    if (!vocab_.emplace(id_to_text_[i], static_cast<int32_t>(i)).second) {
      fail(source_, ": duplicate token '", id_to_text_[i], "' in tokenizer.ggml.tokens (ids ",
           vocab_[id_to_text_[i]], " and ", i, ")");
    }
  }

  scores_.assign(n, 0.0f);
  if (const GGUFValue* v = f.find("tokenizer.ggml.scores")) {
    const std::vector<float> s = v->as_f32_array(f.key_context("tokenizer.ggml.scores"));
    if (s.size() < n)
      fail(source_, ": tokenizer.ggml.scores has ", s.size(), " entries for ", n, " tokens");
    std::copy(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n), scores_.begin());
  }
  types_.assign(n, kNormal);
  if (const GGUFValue* v = f.find("tokenizer.ggml.token_type")) {
    const std::vector<int32_t> t = v->as_i32_array(f.key_context("tokenizer.ggml.token_type"));
    if (t.size() < n)
      fail(source_, ": tokenizer.ggml.token_type has ", t.size(), " entries for ", n, " tokens");
    for (size_t i = 0; i < n; ++i)
      types_[i] = (t[i] >= kNormal && t[i] <= kByte) ? t[i] : kUndefined;
  }
  byte_value_.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    if (types_[i] != kByte) continue;
    const std::optional<uint8_t> b = tok::byte_token_value(id_to_text_[i]);
    if (!b) fail(source_, ": byte token ", i, " is '", id_to_text_[i], "', expected <0xHH>");
    byte_value_[i] = *b;
  }
}

std::optional<int32_t> GgufTokenizer::load_special_ids(const GGUFFile& f) {
  const size_t n = id_to_text_.size();
  auto id_key = [&](const char* key, std::optional<int32_t> def) -> std::optional<int32_t> {
    if (def && static_cast<size_t>(*def) >= n) def.reset();
    if (const GGUFValue* v = f.find(key)) {
      const std::string ctx = f.key_context(key);
      const int64_t id = v->type() == GGUFType::U64
                             ? (v->as_u64(ctx) < n ? static_cast<int64_t>(v->as_u64(ctx)) : -1)
                             : v->as_i64(ctx);
      if (id >= 0 && static_cast<uint64_t>(id) < n) return static_cast<int32_t>(id);
      // llama.cpp: an out-of-range id falls back to the default
    }
    return def;
  };
  std::optional<int32_t> unk;
  if (spm_) {
    bos_ = id_key("tokenizer.ggml.bos_token_id", 1);
    eos_ = id_key("tokenizer.ggml.eos_token_id", 2);
    unk = id_key("tokenizer.ggml.unknown_token_id", 0);
    add_bos_ = true;
    add_space_prefix_ = true;
  } else {
    bos_ = id_key("tokenizer.ggml.bos_token_id", std::nullopt);
    eos_ = id_key("tokenizer.ggml.eos_token_id", std::nullopt);
    unk = id_key("tokenizer.ggml.unknown_token_id", std::nullopt);
  }
  return unk;
}

void GgufTokenizer::mark_end_of_generation() {
  // Tokens llama.cpp treats as control (end-of-generation markers) whatever their stored type.
  for (const char* t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                        "<|end_of_text|>", "<EOT>", "_<EOT>", "<|eom_id|>",
                        "<\xEF\xBD\x9C"
                        "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"}) {
    if (auto it = vocab_.find(std::string_view(t)); it != vocab_.end()) {
      if (types_[it->second] != kControl && types_[it->second] != kUnknown &&
          types_[it->second] != kUserDefined) {
        types_[it->second] = kControl;
      }
    }
  }
}

void GgufTokenizer::load_bpe(const GGUFFile& f) {
  const std::string pre = f.get_string_or("tokenizer.ggml.pre", "default");
  std::vector<std::string> rx;
  bool ignore_merges = false;
  if (!tok::gguf_pre_regexes(pre, rx, ignore_merges)) {
    fail(source_, ": unsupported tokenizer.ggml.pre '", pre,
         "' (supported: default, gpt-2, llama-bpe/llama3, qwen2, deepseek-llm, deepseek-coder, "
         "deepseek-v3, falcon, starcoder, gpt-4o, tekken and their aliases)");
  }
  for (const std::string& r : rx) {
    regexes_.emplace_back(r, false, tok::SplitBehavior::Isolated, false,
                          str(source_, ": pre-tokenizer '", pre, "'"));
  }
  tok::BpeOptions opts;
  opts.ignore_merges = ignore_merges;
  opts.single_byte_fallback = true;
  opts.later_merge_wins = false;
  bpe_model_ = std::make_unique<tok::BpeModel>(vocab_, opts);
  const std::vector<std::string>& merges = f.get_string_array("tokenizer.ggml.merges");
  bpe_model_->reserve_merges(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    const size_t sp = m.find(' ', 1);  // llama.cpp: the first space after the first byte
    if (sp == std::string::npos) {
      fail(source_, ": tokenizer.ggml.merges[", i, "] = \"", m,
           "\": expected \"<left> <right>\"");
    }
    // Merges whose parts or result are not tokens can never produce a token; llama.cpp keeps
    // them but they cannot change the output, so they are skipped.
    bpe_model_->add_merge(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1));
  }
}

void GgufTokenizer::load_flags(const GGUFFile& f) {
  if (const GGUFValue* v = f.find("tokenizer.ggml.add_space_prefix"))
    add_space_prefix_ = v->as_bool(f.key_context("tokenizer.ggml.add_space_prefix"));
  if (const GGUFValue* v = f.find("tokenizer.ggml.add_bos_token"))
    add_bos_ = v->as_bool(f.key_context("tokenizer.ggml.add_bos_token"));
  if (const GGUFValue* v = f.find("tokenizer.ggml.add_eos_token"))
    add_eos_ = v->as_bool(f.key_context("tokenizer.ggml.add_eos_token"));
  if (!spm_) {
    const std::string pre = f.get_string_or("tokenizer.ggml.pre", "default");
    if (!f.has("tokenizer.ggml.add_bos_token") &&
        (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" ||
         pre == "pixtral" || pre == "tekken")) {
      add_bos_ = true;
    }
  }
  if (add_bos_ && !bos_)
    fail(source_, ": tokenizer.ggml.add_bos_token is true but there is no bos token");
  if (add_eos_ && !eos_)
    fail(source_, ": tokenizer.ggml.add_eos_token is true but there is no eos token");
}

void GgufTokenizer::index_specials(const GGUFFile& f) {
  const size_t n = id_to_text_.size();
  special_.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    special_[i] = is_control_or_unknown(static_cast<int32_t>(i)) ? 1 : 0;
    if (types_[i] == kControl || types_[i] == kUserDefined || types_[i] == kUnknown)
      special_cache_.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(special_cache_.begin(), special_cache_.end(), [&](int32_t a, int32_t b) {
    return id_to_text_[a].size() > id_to_text_[b].size();
  });

  // llama.cpp's per-model token attributes: Phi-3 strips spaces after its special tokens.
  lstrip_.assign(n, 0);
  rstrip_.assign(n, 0);
  std::string name = f.get_string_or("general.name", "");
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (int32_t id : special_cache_) rstrip_[id] = 1;
    if (auto it = vocab_.find(std::string_view("</s>")); it != vocab_.end())
      rstrip_[it->second] = 1;
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"})
      if (auto it = vocab_.find(std::string_view(t)); it != vocab_.end()) rstrip_[it->second] = 0;
  }
}

// llama.cpp's tokenizer_st_partition: for each special token (longest first), split every
// remaining text fragment at its occurrences.
void GgufTokenizer::partition(std::string_view text, bool parse_special,
                              std::vector<Frag>& frags) const {
  frags.clear();
  if (text.empty()) return;
  frags.push_back({-1, 0, text.size()});
  std::vector<Frag> next;
  auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  for (int32_t id : special_cache_) {
    if (!parse_special && is_control_or_unknown(id)) continue;
    const std::string& tt = id_to_text_[id];
    next.clear();
    bool changed = false;
    for (const Frag& fr : frags) {
      if (fr.id >= 0) {
        next.push_back(fr);
        continue;
      }
      size_t base = fr.off, len = fr.len;
      while (true) {
        const size_t match = text.substr(0, base + len).find(tt, base);
        if (match == std::string_view::npos) {
          next.push_back({-1, base, len});
          break;
        }
        changed = true;
        if (match > base) {
          size_t left = match - base;
          if (lstrip_[id])
            while (left > 0 && is_space(text[base + left - 1])) --left;
          if (left > 0) next.push_back({-1, base, left});
        }
        next.push_back({id, match, tt.size()});
        size_t roff = match + tt.size();
        size_t rlen = base + len - roff;
        if (rstrip_[id])
          while (rlen > 0 && is_space(text[roff])) ++roff, --rlen;
        if (rlen == 0) break;
        base = roff, len = rlen;
      }
    }
    if (changed) frags.swap(next);
  }
}

void GgufTokenizer::encode_impl(std::string_view text, bool add_special, bool parse_special,
                                std::vector<int32_t>& out) const {
  std::vector<Frag> frags;
  partition(text, parse_special, frags);
  if (add_special && add_bos_) out.push_back(*bos_);
  if (spm_) {
    bool prev_special = true;  // the first fragment gets the space prefix too
    std::string buf;
    for (const Frag& fr : frags) {
      if (fr.id >= 0) {
        out.push_back(fr.id);
        prev_special = true;
        continue;
      }
      buf.clear();
      if (add_space_prefix_ && prev_special) buf.push_back(' ');
      buf.append(text.substr(fr.off, fr.len));
      spm_model_->encode(tok::replace_all(buf, " ", tok::kSpmSpace), out);
      prev_special = false;
    }
  } else {
    std::vector<tok::RegexSplitter::Span> spans, next;
    for (const Frag& fr : frags) {
      if (fr.id >= 0) {
        out.push_back(fr.id);
        continue;
      }
      const std::string_view piece = text.substr(fr.off, fr.len);
      spans.assign(1, {0, piece.size()});
      for (const tok::RegexSplitter& r : regexes_) {
        next.clear();
        r.split(piece, spans, next);
        spans.swap(next);
      }
      for (const auto& [b, e] : spans)
        bpe_model_->encode_word(tok::byte_level_encode(piece.substr(b, e - b)), out);
    }
  }
  if (add_special && add_eos_) out.push_back(*eos_);
}

std::string GgufTokenizer::decode_impl(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  bool remove_space = add_space_prefix_;  // llama.cpp strips the first piece's leading space
  for (int32_t id : ids) {
    const std::string& t = id_to_text_[id];
    const int32_t type = types_[id];
    std::string piece;
    if (type == kControl || type == kUnknown) {
      if (skip_special) continue;
      piece = t;
    } else if (type == kUserDefined) {
      piece = t;
    } else if (type == kByte) {
      piece = std::string(1, static_cast<char>(byte_value_[id]));
    } else if (type == kNormal) {
      if (spm_) {
        piece = tok::replace_all(t, tok::kSpmSpace, " ");
      } else {
        for (const U8Char& c : utf8_chars(t)) {
          if (auto b = tok::unicode_to_byte(c.cp)) {
            piece += static_cast<char>(*b);
          } else {
            piece.append(t, c.off, c.len);
          }
        }
      }
    }  // unused / undefined tokens render as nothing (llama.cpp)
    if (remove_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    remove_space = false;
    out += piece;
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GGUFFile& f) {
  return std::make_unique<GgufTokenizer>(f);
}

}  // namespace moetool
