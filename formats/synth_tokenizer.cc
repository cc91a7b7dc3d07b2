// formats/synth_tokenizer.cc — the synthetic byte-level BPE tokenizer (see synth_tokenizer.h): a
// built-in English text, GPT-2's pre-tokenizer and byte-to-unicode mapping, a small deterministic
// BPE trainer (incremental pair counts; the winner is chosen by a total order, so hash-map
// iteration order never matters), and the Hugging Face JSON files.
#include "formats/synth_tokenizer.h"

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/error.h"

namespace moetool {

namespace {

using ojson = nlohmann::ordered_json;

// The training text: plain ASCII prose, with numbers, contractions and punctuation so that every
// pre-tokenizer branch is exercised. Changing it changes every synthetic tokenizer.
constexpr std::string_view kTrainingText =
    "The river town of Aldermere sits where two valleys meet, and for most of its history it has "
    "lived by the water. In the early morning the fishermen walk down to the harbour before the "
    "sun is up, carrying their nets and talking quietly about the weather. They know the river "
    "better than anyone: where the current runs fast, where the old stones hide under the surface, "
    "and where the fish gather when the water turns cold in the autumn. When the boats come back "
    "in the afternoon, the market fills with people who want to buy the morning's catch, and the "
    "whole town smells of salt, smoke and fresh bread.\n"
    "\n"
    "The town was founded in 1624 by a small group of farmers and builders. The records say that "
    "there were 38 families in the first winter, and that 12 of them left before the spring. Those "
    "who stayed built a stone bridge across the river, a mill with a wheel of 7 metres, and a "
    "school with 2 rooms. By 1850 the population had grown to 4,200 people, and by 1900 it was "
    "close to 9,500. Today about 16,000 people live in Aldermere, and the old bridge is still "
    "standing, although it's now closed to cars and open only to people on foot.\n"
    "\n"
    "Every year, in the first week of September, the town holds a festival to remember the day "
    "the bridge was finished. There is music in the square, there are long tables in the streets, "
    "and children race small wooden boats down the river from the mill to the harbour. The winner "
    "gets a cake and a place in the town's book of records. \"We don't do it for the prize,\" one "
    "of the older builders likes to say. \"We do it because it's the one day when everyone in the "
    "town sits at the same table.\" Visitors who've come once usually come back, and many of them "
    "say they'll never forget the sound of the bells at the end of the night.\n"
    "\n"
    "Life in the town is not always easy. The winters are long and dark, and in some years the "
    "river rises high enough to flood the lower streets. In 1953 the water reached the steps of "
    "the church, and the people of the town spent three weeks cleaning mud from their houses. "
    "After that flood they built a new wall along the river, 3.5 kilometres long and 2 metres "
    "high, and since then the water has never come over it. I'm told that the engineers who "
    "designed the wall were surprised by how quickly the work was done; the people of Aldermere "
    "had learned that they would rather work together than wait for help.\n"
    "\n"
    "In the evening, when the market is closed and the boats are tied up for the night, the old "
    "people sit on the benches by the water and watch the light change over the hills. They talk "
    "about the past and about the future, about children who have moved to the city and about "
    "the ones who have come home again. Some of them say that the town is smaller than it used to "
    "be; others say it has simply become quieter. Either way, they agree that there is no better "
    "place to watch the river, and that the river, in its own slow way, is still the heart of the "
    "town.\n"
    "\n"
    "The baker on the corner opens her shop at six. She makes the dough the night before: flour, "
    "water, salt and a little yeast, mixed by hand and left to rise slowly in a cool room. In the "
    "morning she shapes the loaves, cuts a line across the top of each one, and bakes them in a "
    "hot oven for about forty minutes, until the crust is dark and the bread sounds hollow when "
    "she knocks on the bottom. People say her bread is the best in the valley, and she only "
    "smiles and says that the secret is time, not skill.\n"
    "\n"
    "At the small school by the bridge, the teacher asks the children to measure the river every "
    "week. They write down the height of the water, the temperature of the air and the colour of "
    "the sky, and at the end of the year they draw the numbers as a long line across the wall of "
    "the classroom. The line goes up in the spring, when the snow melts in the mountains, and down "
    "in the late summer, when the weather is dry. The children have learned that a river is never "
    "the same from one day to the next, even when it looks exactly the same from the bridge.\n"
    "\n"
    "A short list of things to remember: open the window in the morning; close the door at night; "
    "keep the lamp full of oil; write the date at the top of every letter (for example, 14 May "
    "2024 or 2024-05-14); and never, ever, leave the boat untied. If you'd like to learn more, "
    "ask at the library, which is open from 9 to 5 on weekdays and from 10 to 2 on Saturdays.\n";

// GPT-2's bytes_to_unicode: the printable bytes map to themselves, the other 68 to U+0100.. in
// byte order. `order` lists bytes in the order of their code points (ids 0..255).
struct ByteMap {
  std::array<uint32_t, 256> code{};   // byte -> code point
  std::array<int32_t, 256> id{};      // byte -> token id
  std::array<std::string, 256> utf8;  // token id -> UTF-8 of its code point
};

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {  // only U+0080..U+07FF occur here
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

ByteMap make_byte_map() {
  ByteMap m;
  uint32_t extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    m.code[static_cast<size_t>(b)] = printable ? static_cast<uint32_t>(b) : 256 + extra++;
  }
  std::array<int, 256> order{};
  for (int b = 0; b < 256; ++b) order[static_cast<size_t>(b)] = b;
  std::sort(order.begin(), order.end(),
            [&](int x, int y) { return m.code[static_cast<size_t>(x)] < m.code[static_cast<size_t>(y)]; });
  for (int i = 0; i < 256; ++i) {
    const auto b = static_cast<size_t>(order[static_cast<size_t>(i)]);
    m.id[b] = i;
    append_utf8(m.utf8[static_cast<size_t>(i)], m.code[b]);
  }
  return m;
}

bool is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
bool is_other(unsigned char c) { return !is_letter(c) && !is_digit(c) && !is_space(c); }

struct Word {
  std::vector<int32_t> syms;
  int64_t count = 0;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// The trainer's result: token strings by id (byte-level UTF-8) and the merges in rank order.
struct Trained {
  std::vector<std::string> tokens;
  std::vector<std::pair<int32_t, int32_t>> merges;
};

Trained train_bpe(int64_t max_tokens) {
  const ByteMap bm = make_byte_map();
  Trained t;
  t.tokens.assign(bm.utf8.begin(), bm.utf8.end());
  std::unordered_map<std::string, int32_t> token_id;  // lookups only, never iterated
  for (int32_t i = 0; i < 256; ++i) token_id.emplace(t.tokens[static_cast<size_t>(i)], i);

  // Words: distinct pre-tokens (sorted, std::map-like order via sort) with their counts.
  std::vector<std::string> pieces = synth_pretokenize_ascii(kTrainingText);
  std::sort(pieces.begin(), pieces.end());
  std::vector<Word> words;
  for (size_t i = 0; i < pieces.size();) {
    size_t j = i;
    while (j < pieces.size() && pieces[j] == pieces[i]) ++j;
    Word w;
    w.count = static_cast<int64_t>(j - i);
    for (unsigned char c : pieces[i]) w.syms.push_back(bm.id[c]);
    words.push_back(std::move(w));
    i = j;
  }

  // Pair counts and, per pair, the words that may contain it (stale entries are re-checked).
  std::unordered_map<uint64_t, int64_t> counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  auto add_pairs = [&](int32_t wi, int64_t sign) {
    const Word& w = words[static_cast<size_t>(wi)];
    for (size_t k = 0; k + 1 < w.syms.size(); ++k) {
      const uint64_t key = pair_key(w.syms[k], w.syms[k + 1]);
      int64_t& c = counts[key];
      c += sign * w.count;
      if (c == 0) counts.erase(key);
      if (sign > 0) where[key].push_back(wi);
    }
  };
  for (int32_t wi = 0; wi < static_cast<int32_t>(words.size()); ++wi) add_pairs(wi, +1);

  std::unordered_set<uint64_t> merged;  // pairs that already have a merge rule
  while (static_cast<int64_t>(t.tokens.size()) < max_tokens && !counts.empty()) {
    // Most frequent pair; ties go to the smallest (left, right) ids: a total order, so the
    // unordered map's iteration order cannot change the answer.
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [key, c] : counts)
      if (c > best_count || (c == best_count && key < best)) best = key, best_count = c;
    if (best_count < 2) break;
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFFu);

    // A pair can reappear after a merge whose result was an existing token: apply the existing
    // rule again without recording a duplicate.
    int32_t c_id;
    if (merged.insert(best).second) {
      const std::string s = t.tokens[static_cast<size_t>(a)] + t.tokens[static_cast<size_t>(b)];
      auto it = token_id.find(s);
      if (it == token_id.end()) {
        c_id = static_cast<int32_t>(t.tokens.size());
        t.tokens.push_back(s);
        token_id.emplace(s, c_id);
      } else {
        c_id = it->second;  // same string reached through a different pair
      }
      t.merges.emplace_back(a, b);
    } else {
      c_id = token_id.at(t.tokens[static_cast<size_t>(a)] + t.tokens[static_cast<size_t>(b)]);
    }

    std::vector<int32_t> ws = std::move(where[best]);
    where.erase(best);
    std::sort(ws.begin(), ws.end());
    ws.erase(std::unique(ws.begin(), ws.end()), ws.end());
    for (int32_t wi : ws) {
      Word& w = words[static_cast<size_t>(wi)];
      bool has = false;
      for (size_t k = 0; k + 1 < w.syms.size() && !has; ++k) has = w.syms[k] == a && w.syms[k + 1] == b;
      if (!has) continue;
      add_pairs(wi, -1);
      std::vector<int32_t> out;
      out.reserve(w.syms.size());
      for (size_t k = 0; k < w.syms.size(); ++k) {
        if (k + 1 < w.syms.size() && w.syms[k] == a && w.syms[k + 1] == b) {
          out.push_back(c_id);
          ++k;
        } else {
          out.push_back(w.syms[k]);
        }
      }
      w.syms = std::move(out);
      add_pairs(wi, +1);
    }
  }
  return t;
}

ojson special_token_entry(const char* content) {
  ojson e;
  e["content"] = content;
  e["lstrip"] = false;
  e["normalized"] = false;
  e["rstrip"] = false;
  e["single_word"] = false;
  return e;
}

ojson added_token(int64_t id, const char* content) {
  ojson e;
  e["id"] = id;
  e["content"] = content;
  e["single_word"] = false;
  e["lstrip"] = false;
  e["rstrip"] = false;
  e["normalized"] = false;
  e["special"] = true;
  return e;
}

ojson byte_level(bool add_prefix_space) {
  ojson j;
  j["type"] = "ByteLevel";
  j["add_prefix_space"] = add_prefix_space;
  j["trim_offsets"] = true;
  j["use_regex"] = true;
  return j;
}

}  // namespace

std::vector<std::string> synth_pretokenize_ascii(std::string_view text) {
  std::vector<std::string> out;
  const size_t n = text.size();
  auto at = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  auto run = [&](size_t j, bool (*cls)(unsigned char)) {
    while (j < n && cls(at(j))) ++j;
    return j;
  };
  size_t i = 0;
  while (i < n) {
    size_t end = i;
    const unsigned char c = at(i);
    if (c == '\'' && i + 1 < n) {  // 's 't 're 've 'm 'll 'd
      const char x = text[i + 1], y = i + 2 < n ? text[i + 2] : '\0';
      if (x == 's' || x == 't' || x == 'm' || x == 'd') end = i + 2;
      else if ((x == 'r' && y == 'e') || (x == 'v' && y == 'e') || (x == 'l' && y == 'l')) end = i + 3;
    }
    if (end == i) {
      // " ?X+" for letters, digits and other characters.
      const size_t j = (c == ' ' && i + 1 < n && !is_space(at(i + 1))) ? i + 1 : i;
      const unsigned char d = at(j);
      if (is_letter(d)) end = run(j, is_letter);
      else if (is_digit(d)) end = run(j, is_digit);
      else if (is_other(d)) end = run(j, is_other);
      else {
        // Whitespace: "\s+(?!\S)" leaves the last space of a run for the next word; "\s+" else.
        const size_t k = run(i, is_space);
        end = (k == n || k - i == 1) ? k : k - 1;
      }
    }
    out.emplace_back(text.substr(i, end - i));
    i = end;
  }
  return out;
}

SynthTokenizer make_synth_tokenizer(int64_t max_vocab) {
  check(max_vocab >= kSynthTokenizerMinVocab, "synth tokenizer: max_vocab ", max_vocab, " is below the minimum of ",
        kSynthTokenizerMinVocab, " (256 byte tokens, merges and 2 special tokens)");
  const Trained t = train_bpe(max_vocab - 2);
  SynthTokenizer out;
  const auto n = static_cast<int64_t>(t.tokens.size());
  out.bos_id = n;
  out.eos_id = n + 1;
  out.size = n + 2;

  // tokenizer.json, in the layout Hugging Face tokenizers writes.
  ojson tj;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  tj["added_tokens"] = ojson::array({added_token(out.bos_id, kSynthBosToken), added_token(out.eos_id, kSynthEosToken)});
  tj["normalizer"] = nullptr;
  tj["pre_tokenizer"] = byte_level(false);

  ojson bos_piece, seq_a, seq_b, bos_piece1;
  bos_piece["SpecialToken"] = {{"id", kSynthBosToken}, {"type_id", 0}};
  seq_a["Sequence"] = {{"id", "A"}, {"type_id", 0}};
  bos_piece1["SpecialToken"] = {{"id", kSynthBosToken}, {"type_id", 1}};
  seq_b["Sequence"] = {{"id", "B"}, {"type_id", 1}};
  ojson pp;
  pp["type"] = "TemplateProcessing";
  pp["single"] = ojson::array({bos_piece, seq_a});
  pp["pair"] = ojson::array({bos_piece, seq_a, bos_piece1, seq_b});
  ojson bos_special;
  bos_special["id"] = kSynthBosToken;
  bos_special["ids"] = ojson::array({out.bos_id});
  bos_special["tokens"] = ojson::array({kSynthBosToken});
  pp["special_tokens"] = ojson::object();
  pp["special_tokens"][kSynthBosToken] = bos_special;
  tj["post_processor"] = pp;
  tj["decoder"] = byte_level(false);

  ojson model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  // The vocab by id; ordered_json's keyed insert is a linear search, so append directly (the
  // trainer guarantees distinct strings, and the specials cannot occur in byte-level tokens).
  ojson vocab = ojson::object();
  auto& vobj = vocab.get_ref<ojson::object_t&>();
  vobj.reserve(static_cast<size_t>(out.size));
  for (int64_t i = 0; i < n; ++i) vobj.emplace_back(t.tokens[static_cast<size_t>(i)], ojson(i));
  vobj.emplace_back(kSynthBosToken, ojson(out.bos_id));
  vobj.emplace_back(kSynthEosToken, ojson(out.eos_id));
  model["vocab"] = std::move(vocab);
  ojson merges = ojson::array();
  for (const auto& [a, b] : t.merges)
    merges.push_back(t.tokens[static_cast<size_t>(a)] + " " + t.tokens[static_cast<size_t>(b)]);
  model["merges"] = std::move(merges);
  tj["model"] = std::move(model);
  out.tokenizer_json = tj.dump(2) + "\n";

  // tokenizer_config.json.
  ojson cj;
  cj["add_bos_token"] = true;
  cj["add_eos_token"] = false;
  ojson decoder = ojson::object();
  decoder[std::to_string(out.bos_id)] = special_token_entry(kSynthBosToken);
  decoder[std::to_string(out.bos_id)]["special"] = true;
  decoder[std::to_string(out.eos_id)] = special_token_entry(kSynthEosToken);
  decoder[std::to_string(out.eos_id)]["special"] = true;
  cj["added_tokens_decoder"] = std::move(decoder);
  cj["bos_token"] = kSynthBosToken;
  cj["clean_up_tokenization_spaces"] = false;
  cj["eos_token"] = kSynthEosToken;
  cj["model_input_names"] = ojson::array({"input_ids", "attention_mask"});
  cj["model_max_length"] = kSynthModelMaxLength;
  cj["tokenizer_class"] = "PreTrainedTokenizerFast";
  out.tokenizer_config_json = cj.dump(2) + "\n";

  // special_tokens_map.json.
  ojson sj;
  sj["bos_token"] = special_token_entry(kSynthBosToken);
  sj["eos_token"] = special_token_entry(kSynthEosToken);
  out.special_tokens_map_json = sj.dump(2) + "\n";
  return out;
}

}  // namespace moetool
