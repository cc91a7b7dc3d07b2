// formats/tokenizer_hf.cc — Hugging Face tokenizer.json (model type BPE) with the pipeline of HF
// `tokenizers`: added tokens split out first (leftmost-longest; non-normalized ones on the raw
// text, normalized ones on the normalized text, with lstrip/rstrip/single_word), normalizer,
// pre-tokenizer, BPE, post-processor (TemplateProcessing...), and decoding through the decoder
// chain (the pipeline's steps: tokenizer_hf_pipeline.cc). tokenizer_config.json may override
// add_bos_token / add_eos_token and names the bos/eos tokens.
#include <unicode/uchar.h>

#include "core/error.h"
#include "formats/tokenizer.h"
#include "formats/tokenizer_hf_pipeline.h"
#include "formats/tokenizer_internal.h"

namespace moetool {

namespace {

using hf::DecOp;
using hf::json;
using hf::NormOp;
using hf::PreOp;
using hf::PreSplit;
using hf::Where;
using tok::StrMap;

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
    w.each(j, "processors", at,
           [&](const json& e, const std::string& e_at) { load_post_processor(w, e, e_at); });
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
    if (root.contains("normalizer"))
      hf::parse_normalizer(w, root["normalizer"], "normalizer", norm_);
    if (root.contains("pre_tokenizer"))
      hf::parse_pretokenizer(w, root["pre_tokenizer"], "pre_tokenizer", pre_);
    if (root.contains("decoder") && !root["decoder"].is_null()) {
      hf::parse_decoder(w, root["decoder"], "decoder", dec_);
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
    t.match = t.normalized ? hf::apply_normalizer(norm_, t.content) : t.content;
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
    const std::string normalized = hf::apply_normalizer(norm_, std::move(p.text));
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
    for (const PreOp& op : pre_) hf::apply_pretokenizer(op, splits);
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
  for (const DecOp& op : dec_) hf::apply_decoder(op, toks);
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
