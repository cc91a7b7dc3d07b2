// tests/synth_tokenizer_test.cc — the synthetic byte-level BPE tokenizer: determinism, a contiguous
// vocab without duplicates, merges whose parts and results are in the vocab, special tokens at
// the end, the GPT-2 pre-tokenizer split, the JSON layout, the size cap, speed, and the error for
// too small a vocab.
//
// GPT-2 pre-tokenizer cases below were checked against tokenizers' ByteLevel pre_tokenize_str.
//
// Oracle (manual, optional): with MOETOOL_SYNTH_TOKENIZER_DIR=<dir> the SynthTokenizer.WritesFiles
// test also writes the three files for max_vocab = $MOETOOL_SYNTH_TOKENIZER_VOCAB (default 512) to
// <dir>; then `python3 tests/tools/check_synth_tokenizer.py <dir>/tokenizer.json --expect-512`
// loads them with Hugging Face tokenizers (pip install tokenizers==0.20.3), checks that
// decode(encode(s)) == s on ASCII, unicode, numbers and whitespace runs, and prints the ids.
// Hugging Face tokenizers 0.20.3 gave, at max_vocab = 512 (size 512, bos 510, eos 511):
//   "The river town of Aldermere."    -> [510, 299, 316, 314, 274, 489, 13]
//   "héllo wörld — 日本"              -> [510, 71, 127, 102, 277, 78, 260, 127, 114, 81, 289, 220, 158,
//                                         222, 242, 220, 162, 245, 98, 162, 250, 105]
//   "In 1624, 38 families\n\n  left." -> [510, 40, 77, 329, 21, 429, 11, 220, 18, 23, 271, 64, 76,
//                                         335, 72, 291, 198, 198, 220, 460, 499, 13]
// and its BpeTrainer (min_frequency 2, ByteLevel alphabet, vocab_size max_vocab-2) learned the same
// merges and vocab as this trainer at max_vocab 260, 300, 400, 512 and 32000 (the script's
// --expect-512 asserts these ids; --compare-trainer repeats the trainer comparison).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "formats/synth_tokenizer.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using nlohmann::json;

TEST(SynthTokenizer, Deterministic) {
  for (int64_t v : {260, 512, 32000}) {
    const SynthTokenizer a = make_synth_tokenizer(v), b = make_synth_tokenizer(v);
    EXPECT_EQ(a.tokenizer_json, b.tokenizer_json) << v;
    EXPECT_EQ(a.tokenizer_config_json, b.tokenizer_config_json) << v;
    EXPECT_EQ(a.special_tokens_map_json, b.special_tokens_map_json) << v;
    EXPECT_EQ(a.size, b.size);
  }
}

TEST(SynthTokenizer, RejectsTooSmallVocab) {
  EXPECT_THROW(make_synth_tokenizer(259), Error);
  EXPECT_THROW(make_synth_tokenizer(0), Error);
  EXPECT_THROW(make_synth_tokenizer(-5), Error);
  const SynthTokenizer t = make_synth_tokenizer(260);
  EXPECT_EQ(t.size, 260);
  EXPECT_EQ(t.bos_id, 258);
  EXPECT_EQ(t.eos_id, 259);
}

// Checks one tokenizer's JSON thoroughly; returns the number of merges.
size_t check_tokenizer(const SynthTokenizer& t, int64_t max_vocab) {
  SCOPED_TRACE(max_vocab);
  EXPECT_LE(t.size, max_vocab);
  EXPECT_GE(t.size, 258);
  EXPECT_EQ(t.bos_id, t.size - 2);
  EXPECT_EQ(t.eos_id, t.size - 1);
  const json j = json::parse(t.tokenizer_json);
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_TRUE(j["truncation"].is_null());
  EXPECT_TRUE(j["padding"].is_null());
  EXPECT_TRUE(j["normalizer"].is_null());
  EXPECT_EQ(j["pre_tokenizer"]["type"], "ByteLevel");
  EXPECT_EQ(j["pre_tokenizer"]["add_prefix_space"], false);
  EXPECT_EQ(j["pre_tokenizer"]["use_regex"], true);
  EXPECT_EQ(j["decoder"]["type"], "ByteLevel");
  EXPECT_EQ(j["post_processor"]["type"], "TemplateProcessing");
  EXPECT_EQ(j["post_processor"]["single"][0]["SpecialToken"]["id"], kSynthBosToken);
  EXPECT_EQ(j["post_processor"]["special_tokens"][kSynthBosToken]["ids"][0], t.bos_id);

  // added_tokens: bos and eos, special, at the end.
  const json& added = j["added_tokens"];
  EXPECT_EQ(added.size(), 2u);
  EXPECT_EQ(added[0]["id"], t.bos_id);
  EXPECT_EQ(added[0]["content"], kSynthBosToken);
  EXPECT_EQ(added[1]["id"], t.eos_id);
  EXPECT_EQ(added[1]["content"], kSynthEosToken);
  for (const auto& a : added) EXPECT_EQ(a["special"], true);

  const json& m = j["model"];
  EXPECT_EQ(m["type"], "BPE");
  EXPECT_TRUE(m["dropout"].is_null());
  EXPECT_TRUE(m["unk_token"].is_null());
  EXPECT_EQ(m["byte_fallback"], false);
  EXPECT_EQ(m["ignore_merges"], false);

  // Vocab: ids exactly 0..size-1, distinct strings (a JSON object cannot hold a key twice, but the
  // writer appends without checking, so count the raw text's entries too).
  const json& vocab = m["vocab"];
  EXPECT_EQ(static_cast<int64_t>(vocab.size()), t.size);
  std::vector<std::string> by_id(static_cast<size_t>(t.size));
  for (const auto& [tok, id] : vocab.items()) {
    const int64_t i = id.get<int64_t>();
    EXPECT_TRUE(i >= 0 && i < t.size) << tok;
    if (i < 0 || i >= t.size) continue;
    EXPECT_TRUE(by_id[static_cast<size_t>(i)].empty()) << "id " << i << " used twice";
    by_id[static_cast<size_t>(i)] = tok;
  }
  EXPECT_EQ(by_id[static_cast<size_t>(t.bos_id)], kSynthBosToken);
  EXPECT_EQ(by_id[static_cast<size_t>(t.eos_id)], kSynthEosToken);
  const nlohmann::ordered_json oj = nlohmann::ordered_json::parse(t.tokenizer_json);
  EXPECT_EQ(static_cast<int64_t>(oj["model"]["vocab"].size()), t.size);
  int64_t expect_id = 0;  // written in id order
  for (const auto& [tok, id] : oj["model"]["vocab"].items()) EXPECT_EQ(id.get<int64_t>(), expect_id++) << tok;
  // GPT-2's byte order: '!' first, 'Ġ' (the space byte) at 220, 'Ā' (byte 0) at 188.
  EXPECT_EQ(by_id[0], "!");
  EXPECT_EQ(by_id[188], "\xC4\x80");
  EXPECT_EQ(by_id[220], "\xC4\xA0");
  EXPECT_EQ(by_id[255], "\xC5\x83");

  // Merges: "a b" with both parts and the result in the vocab, no pair twice.
  std::set<std::string> merges;
  for (const auto& mj : m["merges"]) {
    const std::string s = mj.get<std::string>();
    const size_t sp = s.find(' ');
    EXPECT_NE(sp, std::string::npos) << s;
    if (sp == std::string::npos) continue;
    EXPECT_EQ(s.find(' ', sp + 1), std::string::npos) << s;
    const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
    EXPECT_TRUE(vocab.contains(a)) << s;
    EXPECT_TRUE(vocab.contains(b)) << s;
    EXPECT_TRUE(vocab.contains(a + b)) << s;
    EXPECT_TRUE(merges.insert(s).second) << "duplicate merge " << s;
  }
  // Every token past the bytes is some merge's result.
  std::set<std::string> results;
  for (const auto& s : merges) {
    const size_t sp = s.find(' ');
    results.insert(s.substr(0, sp) + s.substr(sp + 1));
  }
  for (int64_t i = 256; i < t.bos_id; ++i) EXPECT_TRUE(results.count(by_id[static_cast<size_t>(i)])) << i;

  // tokenizer_config.json and special_tokens_map.json.
  const json c = json::parse(t.tokenizer_config_json);
  EXPECT_EQ(c["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(c["bos_token"], kSynthBosToken);
  EXPECT_EQ(c["eos_token"], kSynthEosToken);
  EXPECT_EQ(c["add_bos_token"], true);
  EXPECT_EQ(c["model_max_length"], kSynthModelMaxLength);
  EXPECT_EQ(c["added_tokens_decoder"][std::to_string(t.bos_id)]["content"], kSynthBosToken);
  EXPECT_EQ(c["added_tokens_decoder"][std::to_string(t.eos_id)]["content"], kSynthEosToken);
  const json s = json::parse(t.special_tokens_map_json);
  EXPECT_EQ(s["bos_token"]["content"], kSynthBosToken);
  EXPECT_EQ(s["eos_token"]["content"], kSynthEosToken);
  return merges.size();
}

TEST(SynthTokenizer, ValidVocabAndMerges) {
  size_t prev_merges = 0;
  int64_t prev_size = 0;
  for (int64_t v : {260, 300, 512, 2048, 32000}) {
    const SynthTokenizer t = make_synth_tokenizer(v);
    const size_t merges = check_tokenizer(t, v);
    // Larger caps only extend the merge list (the trainer is greedy and the cap only stops it).
    EXPECT_GE(merges, prev_merges);
    EXPECT_GE(t.size, prev_size);
    prev_merges = merges, prev_size = t.size;
  }
  EXPECT_EQ(make_synth_tokenizer(512).size, 512);  // the built-in text has enough for the tiny preset
  EXPECT_LT(make_synth_tokenizer(32000).size, 32000);  // the trainer stops when no pair repeats
}

TEST(SynthTokenizer, SmallerCapIsAPrefix) {
  const json small = json::parse(make_synth_tokenizer(400).tokenizer_json);
  const json big = json::parse(make_synth_tokenizer(2048).tokenizer_json);
  const json& ms = small["model"]["merges"];
  const json& mb = big["model"]["merges"];
  ASSERT_LE(ms.size(), mb.size());
  for (size_t i = 0; i < ms.size(); ++i) EXPECT_EQ(ms[i], mb[i]) << i;
  for (const auto& [tok, id] : small["model"]["vocab"].items())
    if (id.get<int64_t>() < 398) EXPECT_EQ(big["model"]["vocab"][tok], id) << tok;
}

TEST(SynthTokenizer, Fast) {
  const auto t0 = std::chrono::steady_clock::now();
  const SynthTokenizer t = make_synth_tokenizer(32000);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(t.size, 512);
  // Well under 100 ms in a release build; the bound leaves room for sanitizer / debug builds.
  EXPECT_LT(ms, 2000.0);
  std::cout << "[ info ] make_synth_tokenizer(32000): " << t.size << " tokens in " << ms << " ms\n";
}

TEST(SynthTokenizer, Gpt2PreTokenizer) {
  using V = std::vector<std::string>;
  EXPECT_EQ(synth_pretokenize_ascii("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(synth_pretokenize_ascii("it's we'll they're I'm you've she'd don't"),
            (V{"it", "'s", " we", "'ll", " they", "'re", " I", "'m", " you", "'ve", " she", "'d", " don", "'t"}));
  EXPECT_EQ(synth_pretokenize_ascii("In 1624, 38 families"), (V{"In", " 1624", ",", " 38", " families"}));
  EXPECT_EQ(synth_pretokenize_ascii("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(synth_pretokenize_ascii("end.\n\nNext"), (V{"end", ".", "\n", "\n", "Next"}));
  EXPECT_EQ(synth_pretokenize_ascii("a.\n\n\n"), (V{"a", ".", "\n\n\n"}));
  EXPECT_EQ(synth_pretokenize_ascii("x \n y"), (V{"x", " \n", " y"}));
  EXPECT_EQ(synth_pretokenize_ascii("trailing  "), (V{"trailing", "  "}));
  EXPECT_EQ(synth_pretokenize_ascii(" ...!? (a)"), (V{" ...!?", " (", "a", ")"}));
  EXPECT_EQ(synth_pretokenize_ascii("'x 'S"), (V{"'", "x", " '", "S"}));
  EXPECT_EQ(synth_pretokenize_ascii("\tTab"), (V{"\t", "Tab"}));
  EXPECT_EQ(synth_pretokenize_ascii(""), V{});
  std::string joined;
  for (const auto& p : synth_pretokenize_ascii("  mixed 12ab  ,, \t\n x'll  ")) joined += p;
  EXPECT_EQ(joined, "  mixed 12ab  ,, \t\n x'll  ");
}

TEST(SynthTokenizer, WritesFiles) {
  // Writes the files (to $MOETOOL_SYNTH_TOKENIZER_DIR for the Python oracle, else a temp dir) and
  // reads them back.
  testing::TempDir tmp;
  const char* env_dir = std::getenv("MOETOOL_SYNTH_TOKENIZER_DIR");
  const char* env_vocab = std::getenv("MOETOOL_SYNTH_TOKENIZER_VOCAB");
  const std::string dir = env_dir && *env_dir ? env_dir : tmp.path();
  const int64_t v = env_vocab && *env_vocab ? std::atoll(env_vocab) : 512;
  const SynthTokenizer t = make_synth_tokenizer(v);
  write_file_atomic(path_join(dir, "tokenizer.json"), t.tokenizer_json);
  write_file_atomic(path_join(dir, "tokenizer_config.json"), t.tokenizer_config_json);
  write_file_atomic(path_join(dir, "special_tokens_map.json"), t.special_tokens_map_json);
  EXPECT_EQ(read_file(path_join(dir, "tokenizer.json")), t.tokenizer_json);
  check_tokenizer(t, v);
}

}  // namespace
}  // namespace moetool
