// formats/gguf_export_tokenizer.cc — tokenizer.ggml.* metadata from a Hugging Face tokenizer.json,
// as llama.cpp's convert_hf_to_gguf.py writes it (see gguf_export.h): LlamaHfVocab for
// SentencePiece-style BPE with byte fallback (model "llama": every score −1000, token types
// CONTROL / BYTE / NORMAL / USER_DEFINED), get_vocab_base + merges for byte-level BPE (model
// "gpt2"), gguf-py's SpecialVocab for the special token ids and add_bos / add_eos.
#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf_export.h"

namespace moetool {
namespace {

using nlohmann::json;

// llama.cpp's llama_token_type.
enum TokType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Pre-tokenizer regexes of the byte-level tokenizers llama.cpp knows, with its tokenizer.ggml.pre.
const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json read_json(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

// The string of a token entry: "…" or {"content": "…"}.
std::optional<std::string> token_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

// The tokenizer.ggml.pre name of a byte-level pre-tokenizer, or "" when llama.cpp has none for it.
std::string byte_level_pre(const json& pt, const std::string& path) {
  auto is_byte_level = [](const json& p) { return p.is_object() && p.value("type", "") == "ByteLevel"; };
  if (is_byte_level(pt)) {
    if (pt.value("use_regex", true)) return "gpt-2";
    fail(path, ": ByteLevel pre-tokenizer without its regex has no llama.cpp equivalent");
  }
  if (pt.is_object() && pt.value("type", "") == "Sequence" && pt.contains("pretokenizers")) {
    const json& seq = pt["pretokenizers"];
    std::string regex;
    bool byte_level = false;
    for (const json& p : seq) {
      const std::string type = p.value("type", "");
      if (type == "Split" && p.contains("pattern") && p["pattern"].contains("Regex"))
        regex = p["pattern"]["Regex"].get<std::string>();
      else if (type == "ByteLevel") byte_level = !p.value("use_regex", true) || byte_level;
      else if (type == "Digits" || type == "Split") return "";
    }
    if (!byte_level) return "";
    if (regex == kLlama3Regex) return "llama-bpe";
    if (regex == kQwen2Regex) return "qwen2";
    if (regex == kGpt2Regex) return "gpt-2";
  }
  return "";
}

}  // namespace

std::vector<GGUFKV> gguf_tokenizer_metadata(const std::string& model_dir, int64_t vocab_size) {
  const std::string tj_path = path_join(model_dir, "tokenizer.json");
  if (!file_exists(tj_path)) fail(model_dir, ": no tokenizer.json (needed for the GGUF tokenizer metadata)");
  const json tj = read_json(tj_path);
  const std::string tc_path = path_join(model_dir, "tokenizer_config.json");
  const std::string sm_path = path_join(model_dir, "special_tokens_map.json");
  const std::string cfg_path = path_join(model_dir, "config.json");
  const json tc = file_exists(tc_path) ? read_json(tc_path) : json::object();
  const json sm = file_exists(sm_path) ? read_json(sm_path) : json::object();
  const json cfg = file_exists(cfg_path) ? read_json(cfg_path) : json::object();

  if (!tj.contains("model") || !tj["model"].is_object()) fail(tj_path, ": missing \"model\"");
  const json& model = tj["model"];
  if (model.value("type", "") != "BPE")
    fail(tj_path, ": tokenizer model '", model.value("type", "?"), "' is not exported to GGUF yet (only BPE)");
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail(tj_path, ": model.vocab is not an object");

  // id → text over the model vocabulary and the added tokens.
  std::map<int64_t, std::string> by_id;
  std::set<int64_t> base_ids;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) fail(tj_path, ": vocab entry '", text, "' has a bad id");
    by_id[id.get<int64_t>()] = text;
    base_ids.insert(id.get<int64_t>());
  }
  std::map<int64_t, bool> added;  // id → special
  std::map<std::string, int64_t> text_to_id;
  for (const auto& [id, text] : by_id) text_to_id[text] = id;
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array())
    for (const json& a : tj["added_tokens"]) {
      if (!a.contains("id") || !a.contains("content")) continue;
      const int64_t id = a["id"].get<int64_t>();
      by_id[id] = a["content"].get<std::string>();
      text_to_id[by_id[id]] = id;
      added[id] = a.value("special", false);
    }
  const int64_t n_tok = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  if (n_tok > vocab_size)
    fail(tj_path, ": ", n_tok, " tokens but the model's vocab_size is ", vocab_size);

  // Special tokens (gguf-py SpecialVocab): tokenizer_config.json, then special_tokens_map.json,
  // then config.json's *_token_id.
  auto special_id = [&](const std::string& kind) -> std::optional<int64_t> {
    for (const json* src : {&tc, &sm}) {
      if (src->contains(kind + "_token")) {
        if (auto s = token_string((*src)[kind + "_token"])) {
          auto it = text_to_id.find(*s);
          if (it != text_to_id.end()) return it->second;
        }
      }
    }
    if (cfg.contains(kind + "_token_id") && cfg[kind + "_token_id"].is_number_integer())
      return cfg[kind + "_token_id"].get<int64_t>();
    return std::nullopt;
  };
  const auto bos = special_id("bos"), eos = special_id("eos"), unk = special_id("unk"), pad = special_id("pad");
  std::set<int64_t> specials;
  for (auto id : {bos, eos, unk, pad})
    if (id) specials.insert(*id);
  for (const auto& [id, sp] : added)
    if (sp) specials.insert(id);

  // add_bos / add_eos: tokenizer_config.json, else the post-processor's template.
  std::optional<bool> add_bos, add_eos;
  if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) add_bos = tc["add_bos_token"].get<bool>();
  if (tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean()) add_eos = tc["add_eos_token"].get<bool>();
  if (tj.contains("post_processor") && tj["post_processor"].is_object() &&
      tj["post_processor"].value("type", "") == "TemplateProcessing" && tj["post_processor"].contains("single")) {
    const json& single = tj["post_processor"]["single"];
    if (single.is_array() && !single.empty()) {
      auto special_at = [&](const json& e) -> std::optional<int64_t> {
        if (!e.contains("SpecialToken")) return std::nullopt;
        auto it = text_to_id.find(e["SpecialToken"].value("id", ""));
        return it == text_to_id.end() ? std::nullopt : std::optional<int64_t>(it->second);
      };
      if (!add_bos) add_bos = bos && special_at(single.front()) == bos;
      if (!add_eos) add_eos = eos && special_at(single.back()) == eos;
    }
  }

  std::vector<GGUFKV> kv;
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  const bool byte_fallback = model.value("byte_fallback", false);
  const std::string decoder = tj.contains("decoder") && tj["decoder"].is_object() ? tj["decoder"].value("type", "") : "";
  if (byte_fallback && decoder == "Sequence") {
    // LlamaHfVocab: the model vocabulary in id order, then added tokens beyond it.
    static const std::regex byte_token("<0x[0-9A-Fa-f]{2}>");
    std::vector<float> scores;
    for (int64_t id = 0; id < vocab_size; ++id) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        tokens.push_back("[PAD" + std::to_string(id) + "]");
        types.push_back(kUserDefined);
      } else {
        tokens.push_back(it->second);
        if (std::regex_match(it->second, byte_token)) types.push_back(kByte);
        else if (specials.count(id)) types.push_back(kControl);
        else if (!base_ids.count(id)) types.push_back(kUserDefined);
        else types.push_back(kNormal);
      }
      scores.push_back(-1000.0f);
    }
    kv.push_back({"tokenizer.ggml.model", GGUFValue::string("llama")});
    kv.push_back({"tokenizer.ggml.pre", GGUFValue::string("default")});
    kv.push_back({"tokenizer.ggml.tokens", GGUFValue::string_array(tokens)});
    kv.push_back({"tokenizer.ggml.scores", GGUFValue::array(scores)});
    kv.push_back({"tokenizer.ggml.token_type", GGUFValue::array(types)});
  } else {
    const json pt = tj.contains("pre_tokenizer") ? tj["pre_tokenizer"] : json();
    const std::string pre = byte_level_pre(pt, tj_path);
    if (pre.empty())
      fail(tj_path, ": pre-tokenizer ", pt.dump().substr(0, 120),
           " has no llama.cpp equivalent known to moetool (byte-level GPT-2, Llama-3 and Qwen2 are)");
    for (int64_t id = 0; id < vocab_size; ++id) {
      auto it = by_id.find(id);
      if (it == by_id.end()) {
        tokens.push_back("[PAD" + std::to_string(id) + "]");
        types.push_back(kUnused);
      } else {
        tokens.push_back(it->second);
        if (added.count(id)) types.push_back(added[id] || specials.count(id) ? kControl : kUserDefined);
        else types.push_back(kNormal);
      }
    }
    std::vector<std::string> merges;
    if (model.contains("merges") && model["merges"].is_array())
      for (const json& mg : model["merges"]) {
        if (mg.is_string()) merges.push_back(mg.get<std::string>());
        else if (mg.is_array() && mg.size() == 2) merges.push_back(mg[0].get<std::string>() + " " + mg[1].get<std::string>());
        else fail(tj_path, ": unexpected merge entry ", mg.dump());
      }
    kv.push_back({"tokenizer.ggml.model", GGUFValue::string("gpt2")});
    kv.push_back({"tokenizer.ggml.pre", GGUFValue::string(pre)});
    kv.push_back({"tokenizer.ggml.tokens", GGUFValue::string_array(tokens)});
    kv.push_back({"tokenizer.ggml.token_type", GGUFValue::array(types)});
    kv.push_back({"tokenizer.ggml.merges", GGUFValue::string_array(merges)});
  }
  auto id_key = [&](const char* key, std::optional<int64_t> id) {
    if (id && *id >= 0 && *id < vocab_size) kv.push_back({key, GGUFValue::u32(static_cast<uint32_t>(*id))});
  };
  id_key("tokenizer.ggml.bos_token_id", bos);
  id_key("tokenizer.ggml.eos_token_id", eos);
  id_key("tokenizer.ggml.unknown_token_id", unk);
  id_key("tokenizer.ggml.padding_token_id", pad);
  if (add_bos) kv.push_back({"tokenizer.ggml.add_bos_token", GGUFValue::boolean(*add_bos)});
  if (add_eos) kv.push_back({"tokenizer.ggml.add_eos_token", GGUFValue::boolean(*add_eos)});
  return kv;
}

}  // namespace moetool
