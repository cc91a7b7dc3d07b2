// tests/tokenizer_test.cc — the tokenizers against independent references: llama.cpp's tokenizer
// test vectors for GGUF vocabularies (llama-spm, phi-3, gpt-2, deepseek-llm), Hugging Face
// `tokenizers` ids for the TinyStories tokenizer.json (SentencePiece-style BPE) and for the
// synthetic byte-level BPE tokenizer (ByteLevel, and Split with the Llama-3 / Qwen2 regexes, added
// token options), exact decode(encode(s)) round trips, speed, thread safety and error messages.
//
// Expected ids marked "HF tokenizers 0.23.3" were computed with the Python package `tokenizers`
// 0.23.3 (pip install tokenizers==0.23.3): Tokenizer.from_file(<tokenizer.json>).encode(text,
// add_special_tokens=...).ids, with `encode_special_tokens = True` for the parse_special=false
// rows. The synthetic tokenizer files are make_synth_tokenizer(512)'s, and the variants are the
// JSON edits the tests below make (written out and loaded the same way).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf.h"
#include "formats/synth_tokenizer.h"
#include "formats/tokenizer.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using nlohmann::json;
using testing::error_of;
using Ids = std::vector<int32_t>;

struct Case {
  std::string text;
  bool add_special;
  Ids ids;
};

std::string ids_str(const Ids& ids) {
  std::ostringstream os;
  for (size_t i = 0; i < ids.size(); ++i) os << (i ? " " : "") << ids[i];
  return os.str();
}

void expect_cases(const Tokenizer& t, const std::vector<Case>& cases, bool parse_special = true) {
  for (const Case& c : cases) {
    EXPECT_EQ(ids_str(t.encode(c.text, c.add_special, parse_special)), ids_str(c.ids))
        << "text: " << json(c.text).dump() << " add_special=" << c.add_special;
  }
}


// ---- llama.cpp's test vectors (tests/test-tokenizer-0.cpp: inputs separated by
// "\n__ggml_vocab_test__\n", one line of ids per input, add_special = false, parse_special = false).

struct VocabResult {
  size_t total = 0, passed = 0, round_trips = 0;
};

VocabResult run_vocab_vectors(const std::string& name) {
  const std::string base = testing::shared_path("models/llamacpp-vocab/ggml-vocab-" + name + ".gguf");
  const auto f = GGUFFile::open(base);
  const auto tok = Tokenizer::from_gguf(*f);
  const std::string raw = read_file(base + ".inp");
  const std::string outs = read_file(base + ".out");
  std::vector<std::string> inputs;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<std::string> expected;
  std::istringstream is(outs);
  for (std::string line; std::getline(is, line);) {
    const size_t b = line.find_first_not_of(' '), e = line.find_last_not_of(' ');
    expected.push_back(b == std::string::npos ? "" : line.substr(b, e - b + 1));
  }
  EXPECT_EQ(inputs.size(), expected.size()) << name;
  VocabResult r;
  for (size_t i = 0; i < inputs.size() && i < expected.size(); ++i) {
    const Ids ids = tok->encode(inputs[i], /*add_special=*/false, /*parse_special=*/false);
    ++r.total;
    if (ids_str(ids) == expected[i]) {
      ++r.passed;
    } else {
      ADD_FAILURE() << name << ": input " << json(inputs[i]).dump() << "\n  got      " << ids_str(ids)
                    << "\n  expected " << expected[i];
    }
    if (tok->decode(ids) == inputs[i]) ++r.round_trips;
  }
  std::cout << "[ vectors  ] " << name << ": " << r.passed << "/" << r.total << " encode, "
            << r.round_trips << "/" << r.total << " decode(encode(s)) == s\n";
  return r;
}

TEST(TokenizerLlamaCppVectors, LlamaSpm) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const VocabResult r = run_vocab_vectors("llama-spm");
  EXPECT_EQ(r.total, 46u);
  EXPECT_EQ(r.passed, r.total);
  EXPECT_EQ(r.round_trips, r.total);
}

TEST(TokenizerLlamaCppVectors, Phi3) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const VocabResult r = run_vocab_vectors("phi-3");
  EXPECT_EQ(r.total, 46u);
  EXPECT_EQ(r.passed, r.total);
  EXPECT_EQ(r.round_trips, r.total);
}

TEST(TokenizerLlamaCppVectors, Gpt2) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const VocabResult r = run_vocab_vectors("gpt-2");
  EXPECT_EQ(r.total, 46u);
  EXPECT_EQ(r.passed, r.total);
  EXPECT_EQ(r.round_trips, r.total);
}

TEST(TokenizerLlamaCppVectors, DeepseekLlm) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const VocabResult r = run_vocab_vectors("deepseek-llm");
  EXPECT_EQ(r.total, 46u);
  EXPECT_EQ(r.passed, r.total);
  EXPECT_EQ(r.round_trips, r.total);
}

TEST(TokenizerGguf, SpmSpecialsAndBos) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto f = GGUFFile::open(testing::shared_path("models/llamacpp-vocab/ggml-vocab-llama-spm.gguf"));
  const auto t = Tokenizer::from_gguf(*f);
  EXPECT_EQ(t->kind(), "gguf-spm");
  EXPECT_EQ(t->vocab_size(), 32000);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->token_text(1), "<s>");
  EXPECT_TRUE(t->is_special(1));
  EXPECT_FALSE(t->is_special(15043));
  // BOS by default (llama.cpp: SPM add_bos); "Hello world" -> ▁Hello ▁world.
  EXPECT_EQ(t->encode("Hello world"), (Ids{1, 15043, 3186}));
  EXPECT_EQ(t->encode("Hello world", false), (Ids{15043, 3186}));
  // Control tokens are recognised only with parse_special; the text after one gets the space prefix.
  EXPECT_EQ(t->encode("<s>Hello", false, true), (Ids{1, 15043}));
  EXPECT_NE(t->encode("<s>Hello", false, false), (Ids{1, 15043}));
  EXPECT_EQ(t->decode({1, 15043, 3186}), "<s> Hello world");
  EXPECT_EQ(t->decode({1, 15043, 3186}, /*skip_special=*/true), "Hello world");
  EXPECT_EQ(t->decode({15043, 3186, 2}, true), "Hello world");
  // Byte fallback: characters outside the vocab (here a llama emoji and U+200B) become <0xNN>
  // tokens and decode back.
  const std::string odd = "\xF0\x9F\xA6\x99 \xE2\x80\x8B";
  EXPECT_EQ(t->decode(t->encode(odd, false)), odd);
}

TEST(TokenizerGguf, TinyStoriesGgufRoundTrip) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto f = GGUFFile::open(testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf"));
  const auto t = Tokenizer::from_gguf(*f);
  EXPECT_EQ(t->vocab_size(), 2048);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  const std::string calib = read_file(testing::shared_path("data/tinystories-calib.txt"));
  std::istringstream is(calib);
  size_t lines = 0;
  for (std::string line; std::getline(is, line); ++lines) {
    const Ids ids = t->encode(line, false, /*parse_special=*/false);
    ASSERT_EQ(t->decode(ids), line) << "line " << lines;
  }
  EXPECT_GT(lines, 64u);
  // With parse_special the marker is the control token and, as in llama.cpp, the text after a
  // special token gets the SentencePiece space prefix (so it decodes with a space).
  const Ids marked = t->encode("<|start_story|>Once upon", false, true);
  ASSERT_FALSE(marked.empty());
  EXPECT_EQ(marked[0], 1);
  EXPECT_EQ(t->decode(marked), "<|start_story|> Once upon");
  EXPECT_EQ(t->decode(marked, /*skip_special=*/true), "Once upon");
  const Ids ids = t->encode("Once upon a time");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(t->decode(ids, true), "Once upon a time");
}

// Random text: ASCII (controls and spaces included), Latin-1, Greek, Devanagari, CJK, emoji.
std::string random_text(std::mt19937& rng, size_t max_chars) {
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x01, 0x7F}, {0x20, 0x7E}, {0x20, 0x20}, {0xA0, 0xFF}, {0x391, 0x3C9}, {0x900, 0x97F},
      {0x4E00, 0x4FFF}, {0x1F600, 0x1F64F}, {0x300, 0x36F}};
  std::string s;
  const size_t n = rng() % (max_chars + 1);
  for (size_t i = 0; i < n; ++i) {
    const auto& [lo, hi] = ranges[rng() % ranges.size()];
    const char32_t cp = lo + rng() % (hi - lo + 1);
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12)), s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18)), s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return s;
}

TEST(TokenizerGguf, RandomTextRoundTrip) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  // Byte-level BPE and SPM with byte fallback cover all text: decode(encode(s)) == s.
  std::mt19937 rng(7);
  for (const char* name : {"llama-spm", "phi-3", "gpt-2", "deepseek-llm"}) {
    const auto f = GGUFFile::open(testing::shared_path(std::string("models/llamacpp-vocab/ggml-vocab-") + name + ".gguf"));
    const auto t = Tokenizer::from_gguf(*f);
    for (int i = 0; i < 300; ++i) {
      const std::string s = random_text(rng, 30);
      EXPECT_EQ(t->decode(t->encode(s, false, false)), s) << name << " " << json(s).dump();
    }
  }
  // GPT-2 byte-level BPE even round-trips bytes that are not UTF-8.
  const auto f = GGUFFile::open(testing::shared_path("models/llamacpp-vocab/ggml-vocab-gpt-2.gguf"));
  const auto t = Tokenizer::from_gguf(*f);
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 24, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 3 == 0 ? 0x80 + rng() % 0x80 : rng() % 0x80);
    EXPECT_EQ(t->decode(t->encode(s, false, false)), s) << i;
  }
}

// ---- TinyStories tokenizer.json (SentencePiece-style BPE: Prepend/Replace normalizer, byte
// fallback enabled but no <0xNN> tokens in its 2048-token vocab, so unknown characters are <unk>).

std::unique_ptr<Tokenizer> tinystories() {
  return Tokenizer::from_hf_dir(testing::shared_path("models/tinystories-656k"));
}

TEST(TokenizerTinyStories, MatchesHfTokenizers) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto t = tinystories();
  EXPECT_EQ(t->kind(), "hf-bpe");
  EXPECT_EQ(t->vocab_size(), 2048);
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_id(), 2);
  EXPECT_EQ(t->token_text(1), "<|start_story|>");
  EXPECT_EQ(t->token_text(80), "\xE2\x96\x81");
  EXPECT_EQ(t->token_id("<|end_story|>"), 2);
  // HF tokenizers 0.23.3. Note HF's matching of the normalized special tokens: the normalizer
  // prepends "▁" to the token too, so "<|start_story|>" is found only at the start or after a space.
  expect_cases(*t, {
      {"Once upon a time, there was a little girl named Lily.", true, {1, 80, 147, 201, 282, 215, 286, 598, 629, 10}},
      {"<|start_story|>Once upon a time", true, {1, 1, 147, 201, 282, 57}},
      {"Hello  world   three spaces", true, {1, 80, 1288, 139, 80, 410, 180, 80, 80, 1161, 81, 415, 53, 1499}},
      {" leading space and trailing  ", true, {1, 80, 80, 656, 56, 149, 415, 53, 1735, 925, 129, 149, 80}},
      {"Tom said, \"I'm happy!\" and ran.", true, {1, 80, 388, 204, 1109, 405, 4, 5, 100, 494, 10}},
      {"a <|end_story|> b", true, {1, 85, 2, 80, 54}},
      {"\u20ac \U0001F600 \u00fc \u00fcn\u00efc\u00f6d\u00e9", true, {1, 80, 0, 80, 0, 80, 0, 80, 0, 66, 0, 55, 0, 56, 0}},
      {"line one\nline two\n\nend", true, {1, 80, 64, 1780, 719, 3, 64, 1780, 865, 67, 3, 3, 183}},
      {"<|start_story|>", true, {1, 1}},
      {"numbers 123 and 4.5", true, {1, 80, 66, 359, 934, 89, 12, 13, 14, 100, 15, 10, 16}},
      {"<|end_story|> <|start_story|>The end.", true, {1, 2, 1, 247, 183, 10}},
      {"", true, {1}},
      {"Once upon a time", false, {80, 147, 201, 282, 57}},
      {"a <|end_story|> b", false, {85, 2, 80, 54}},
      {"", false, {}},
  });
  // parse_special = false (HF encode_special_tokens = True): the markers are plain text.
  expect_cases(*t, {
      {"<|start_story|>Once upon a time", false, {283, 57}},
      {"a <|end_story|> b", false, {104, 208, 183, 209, 210, 80, 54}},
  }, /*parse_special=*/false);
  // Decoding (HF: Replace ▁, ByteFallback, Fuse, Strip one leading space).
  EXPECT_EQ(t->decode({1, 1, 147, 201, 282, 57}), "<|start_story|> <|start_story|>Once upon a time");
  EXPECT_EQ(t->decode({1, 1, 147, 201, 282, 57}, /*skip_special=*/true), "Once upon a time");
  EXPECT_EQ(t->decode({85, 2, 80, 54}), "a <|end_story|> b");
  EXPECT_EQ(t->decode({54, 0, 54}), "b <unk>b");
  EXPECT_THROW(t->decode({2048}), Error);
  EXPECT_THROW(t->decode({-1}), Error);
  EXPECT_THROW(t->token_text(5000), Error);
}

TEST(TokenizerTinyStories, RoundTripCalibration) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto t = tinystories();
  const std::string calib = read_file(testing::shared_path("data/tinystories-calib.txt"));
  // Every line, every story (the text from one <|start_story|> to the next) and the whole file.
  std::istringstream is(calib);
  size_t lines = 0;
  for (std::string line; std::getline(is, line); ++lines) {
    ASSERT_EQ(t->decode(t->encode(line, false)), line) << "line " << lines;
  }
  std::vector<std::string> stories;
  const std::string marker = "<|start_story|>";
  for (size_t pos = calib.find(marker); pos != std::string::npos;) {
    const size_t next = calib.find(marker, pos + marker.size());
    stories.push_back(calib.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    pos = next;
  }
  EXPECT_EQ(stories.size(), 64u);
  for (size_t i = 0; i < stories.size(); ++i) {
    const Ids ids = t->encode(stories[i], false);
    ASSERT_EQ(t->decode(ids), stories[i]) << "story " << i;
    ASSERT_EQ(ids[0], 1) << "story " << i;  // the marker at the start is the special token
  }
  EXPECT_EQ(t->decode(t->encode(calib, false)), calib);
}

TEST(TokenizerTinyStories, RoundTripGpl) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto t = tinystories();
  const std::string gpl = read_file(testing::shared_path("data/gpl-3.0.txt"));
  // The vocabulary lacks a few characters the GPL uses ("(", ")", "/", "`") and has no byte tokens,
  // so those become <unk> (runs fused); HF decodes each run as " <unk>" (its token text is
  // normalized to "▁<unk>"). Everything else must come back exactly.
  auto expected = [&](const std::string& s) {
    std::string out;
    bool in_unk = false;
    for (size_t i = 0; i < s.size();) {
      size_t n = 1;
      const auto c = static_cast<unsigned char>(s[i]);
      if (c >= 0xF0) n = 4; else if (c >= 0xE0) n = 3; else if (c >= 0xC0) n = 2;
      const std::string ch = s.substr(i, n);
      const bool known = ch == " " || t->token_id(ch).has_value();
      if (!known && !in_unk) out += " <unk>";
      if (known) out += ch;
      in_unk = !known;
      i += n;
    }
    return out;
  };
  std::istringstream is(gpl);
  size_t lines = 0, exact = 0;
  for (std::string line; std::getline(is, line); ++lines) {
    const std::string want = expected(line);
    exact += want == line;
    ASSERT_EQ(t->decode(t->encode(line, false)), want) << "line " << lines;
  }
  std::cout << "[ gpl      ] " << exact << "/" << lines << " lines without <unk> characters\n";
  EXPECT_GT(exact, lines * 8 / 10);
  EXPECT_EQ(t->decode(t->encode(gpl, false)), expected(gpl));
}

TEST(TokenizerTinyStories, Speed) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto t = tinystories();
  const std::string calib = read_file(testing::shared_path("data/tinystories-calib.txt"));
  std::vector<std::string> stories;
  const std::string marker = "<|start_story|>";
  for (size_t pos = calib.find(marker); pos != std::string::npos;) {
    const size_t next = calib.find(marker, pos + marker.size());
    stories.push_back(calib.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    pos = next;
  }
  const auto t0 = std::chrono::steady_clock::now();
  size_t n = 0;
  for (const std::string& s : stories) n += t->encode(s).size();
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ speed    ] " << stories.size() << " stories, " << calib.size() << " bytes -> " << n
            << " tokens in " << sec * 1e3 << " ms\n";
  EXPECT_LT(sec, 0.5);
}

TEST(TokenizerTinyStories, ThreadSafe) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const auto t = tinystories();
  const std::string calib = read_file(testing::shared_path("data/tinystories-calib.txt"));
  const Ids want = t->encode(calib);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) threads.emplace_back([&, i] { got[i] = t->encode(calib); });
  for (auto& th : threads) th.join();
  for (const Ids& g : got) EXPECT_EQ(g, want);
}

// ---- Byte-level BPE: the synthetic tokenizer and variants of it ---------------------------------

// The synthetic tokenizer.json after `edit`, with its tokenizer_config.json unless `no_config`.
std::unique_ptr<Tokenizer> synth_with(const std::function<void(json&)>& edit, bool no_config = false) {
  const SynthTokenizer s = make_synth_tokenizer(512);
  json j = json::parse(s.tokenizer_json);
  edit(j);
  return Tokenizer::from_hf_json(j.dump(), no_config ? "" : s.tokenizer_config_json, "synth/tokenizer.json");
}

TEST(TokenizerByteLevel, SynthMatchesHfTokenizers) {
  const SynthTokenizer s = make_synth_tokenizer(512);
  const auto t = Tokenizer::from_hf_json(s.tokenizer_json, s.tokenizer_config_json, "synth/tokenizer.json");
  EXPECT_EQ(t->kind(), "hf-bpe-byte-level");
  EXPECT_EQ(t->vocab_size(), 512);
  EXPECT_EQ(t->bos_id(), 510);
  EXPECT_EQ(t->eos_id(), 511);
  EXPECT_EQ(t->token_text(220), "\xC4\xA0");  // "Ġ"
  // HF tokenizers 0.23.3.
  expect_cases(*t, {
      {"The river town of Aldermere.", true, {510, 299, 316, 314, 274, 489, 13}},
      {"h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c", true, {510, 71, 127, 102, 277, 78, 260, 127, 114, 81, 289, 220, 158, 222, 242, 220, 162, 245, 98, 162, 250, 105}},
      {"In 1624, 38 families\n\n  left.", true, {510, 40, 77, 329, 21, 429, 11, 220, 18, 23, 271, 64, 76, 335, 72, 291, 198, 198, 220, 460, 499, 13}},
      {"I'm told they'll never forget; it's 2024-05-14!", true, {510, 40, 6, 76, 269, 289, 380, 6, 277, 421, 345, 501, 26, 303, 389, 372, 490, 12, 15, 20, 12, 16, 19, 0}},
      {"  multiple   spaces\t\ttabs\r\nwindows", true, {510, 220, 288, 84, 505, 72, 79, 297, 220, 220, 262, 79, 309, 291, 197, 197, 83, 492, 82, 201, 198, 86, 72, 265, 318, 82}},
      {"emoji \U0001F600\U0001F389 and accents: caf\u00e9, na\u00efve, \u00c5ngstr\u00f6m", true, {510, 68, 76, 78, 73, 72, 220, 172, 253, 246, 222, 172, 253, 236, 231, 268, 259, 66, 495, 369, 82, 25, 272, 64, 69, 127, 102, 11, 320, 64, 127, 107, 319, 11, 220, 127, 227, 355, 398, 81, 127, 114, 76}},
      {"<|begin_of_text|>special inside<|end_of_text|>", true, {510, 510, 82, 300, 66, 72, 350, 284, 82, 72, 67, 68, 511}},
      {"", true, {510}},
      {"\u00a0nbsp and \u2009thin", true, {510, 126, 254, 77, 65, 82, 79, 268, 220, 158, 222, 231, 83, 71, 275}},
  });
  expect_cases(*t, {
      {"<|begin_of_text|>special inside<|end_of_text|>", false, {27, 91, 65, 68, 70, 275, 62, 78, 69, 62, 439, 87, 83, 91, 29, 82, 300, 66, 72, 350, 284, 82, 72, 67, 68, 27, 91, 68, 265, 62, 78, 69, 62, 439, 87, 83, 91, 29}},
  }, /*parse_special=*/false);
  // Round trips, unicode included (byte-level BPE covers every byte).
  for (const std::string s : {"The river town of Aldermere.", "h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c \U0001F600",
                              "  tabs\t\tand\r\nnewlines\n\n", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0645\u0631\u062d\u0628\u0627 \uD55C\uAD6D\uC5B4",
                              ""}) {
    EXPECT_EQ(t->decode(t->encode(s, false)), s) << json(s).dump();
    EXPECT_EQ(t->decode(t->encode(s, true), /*skip_special=*/true), s) << json(s).dump();
  }
  EXPECT_EQ(t->decode(t->encode("x<|end_of_text|>y", false)), "x<|end_of_text|>y");
  EXPECT_EQ(t->decode(t->encode("x<|end_of_text|>y", false), /*skip_special=*/true), "xy");
  EXPECT_EQ(t->decode({510, 299, 316}), "<|begin_of_text|>The river");
  // Invalid UTF-8 from a cut byte sequence decodes lossily, like HF (U+FFFD).
  EXPECT_EQ(t->decode({158}), "\xEF\xBF\xBD");
}

const char* const kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

void use_split(json& j, const char* regex, bool ignore_merges) {
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  j["model"]["ignore_merges"] = ignore_merges;
}

TEST(TokenizerByteLevel, Llama3AndQwen2SplitRegexes) {
  // HF tokenizers 0.23.3 on the synthetic tokenizer with the pre_tokenizer replaced by
  // Sequence[Split{<regex>, Isolated}, ByteLevel{use_regex: false}] (Llama-3 also ignore_merges).
  const std::vector<Case> cases = {
      {"I'm told THEY'LL see 12345 numbers\n\n  ok", false, {40, 6, 76, 269, 289, 220, 51, 39, 36, 56, 6, 43, 43, 262, 68, 68, 220, 16, 17, 18, 19, 20, 320, 84, 394, 82, 198, 198, 220, 263, 74}},
      {"h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c \U0001F600", false, {71, 127, 102, 277, 78, 260, 127, 114, 81, 289, 220, 158, 222, 242, 220, 162, 245, 98, 162, 250, 105, 220, 172, 253, 246, 222}},
      {"a\r\n\r\nb  c!!!\n", false, {64, 201, 198, 201, 198, 65, 220, 272, 0, 0, 0, 198}},
      {"The river town's bridge, built in 1624.", false, {299, 316, 314, 389, 388, 11, 383, 335, 83, 284, 220, 16, 21, 17, 19, 13}},
  };
  const auto llama3 = synth_with([](json& j) { use_split(j, kLlama3Split, true); });
  expect_cases(*llama3, cases);
  const auto qwen2 = synth_with([](json& j) { use_split(j, kQwen2Split, false); });
  expect_cases(*qwen2, cases);
  // The splits themselves differ (digits 1-3 vs 1); ids coincide here because the synthetic
  // vocabulary has no multi-digit tokens. Merges given as [a, b] pairs load the same.
  const auto pairs = synth_with([](json& j) {
    json merges = json::array();
    for (const json& m : j["model"]["merges"]) {
      const std::string s = m.get<std::string>();
      merges.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    j["model"]["merges"] = merges;
  });
  EXPECT_EQ(pairs->encode("The river town of Aldermere."), (Ids{510, 299, 316, 314, 274, 489, 13}));
}

TEST(TokenizerByteLevel, AddedTokenOptions) {
  // HF tokenizers 0.23.3 on the synthetic tokenizer with ByteLevel add_prefix_space, an NFKC +
  // Replace(/\d\d+/ -> "#") normalizer, a template adding bos and eos, and added tokens "river"
  // (single_word), " town" (lstrip, rstrip), "<sep>" (special, lstrip, rstrip), "<extra>" (special,
  // normalized).
  const auto edit = [](json& j) {
    j["pre_tokenizer"]["add_prefix_space"] = true;
    auto add = [&](int id, const char* content, bool single_word, bool lstrip, bool rstrip, bool normalized, bool special) {
      j["added_tokens"].push_back({{"id", id}, {"content", content}, {"single_word", single_word}, {"lstrip", lstrip},
                                   {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}});
    };
    add(512, "river", true, false, false, false, false);
    add(513, " town", false, true, true, false, false);
    add(514, "<sep>", false, true, true, false, true);
    add(515, "<extra>", false, false, false, true, true);
    j["normalizer"] = json::parse(R"({"type":"Sequence","normalizers":[{"type":"NFKC"},
        {"type":"Replace","pattern":{"Regex":"\\d\\d+"},"content":"#"}]})");
    j["post_processor"] = json::parse(R"({"type":"TemplateProcessing",
        "single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},
                  {"SpecialToken":{"id":"<|end_of_text|>","type_id":0}}],
        "pair":[], "special_tokens":{"<|begin_of_text|>":{"id":"<|begin_of_text|>","ids":[510],"tokens":["<|begin_of_text|>"]},
                                     "<|end_of_text|>":{"id":"<|end_of_text|>","ids":[511],"tokens":["<|end_of_text|>"]}}})");
  };
  const auto t = synth_with(edit, /*no_config=*/true);
  expect_cases(*t, {
      {"the river town<sep> x", true, {510, 258, 220, 512, 513, 514, 220, 87, 511}},
      {"rivers river_ river.", true, {510, 316, 82, 316, 62, 220, 512, 220, 13, 511}},
      {"a  town  b <sep>  c", true, {510, 259, 513, 267, 514, 272, 511}},
      {"x<extra>y 12 345", true, {510, 220, 87, 515, 377, 220, 2, 220, 2, 511}},
      {"\ufb01ve \u2460", true, {510, 271, 72, 319, 329, 511}},
  });
  // With tokenizer_config.json, its add_eos_token: false overrides the template's eos (as
  // transformers does); add_bos_token: true keeps the bos.
  const auto with_config = synth_with(edit);
  EXPECT_EQ(with_config->encode("the river town<sep> x"), (Ids{510, 258, 220, 512, 513, 514, 220, 87}));
  EXPECT_EQ(t->vocab_size(), 516);
  EXPECT_TRUE(t->is_special(514));
  EXPECT_FALSE(t->is_special(512));
  EXPECT_EQ(t->decode({510, 258, 220, 512, 513, 514, 220, 87}, true), " the river town x");
}

TEST(TokenizerHf, MetaspacePreTokenizer) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  // The older SentencePiece layout: no normalizer, Metaspace pre-tokenizer and decoder
  // (prepend_scheme "first", split), non-normalized special tokens. HF tokenizers 0.23.3.
  json j = json::parse(read_file(testing::shared_path("models/tinystories-656k/tokenizer.json")));
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", true}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", true}};
  j["added_tokens"][1]["normalized"] = false;
  j["model"]["byte_fallback"] = false;
  const auto t = Tokenizer::from_hf_json(j.dump(), "", "metaspace/tokenizer.json");
  expect_cases(*t, {
      {"Once upon a time", true, {1, 80, 147, 682, 80, 189, 111, 85, 80, 230, 57}},
      {"<|start_story|>Once upon  a time", true, {1, 1, 147, 682, 80, 189, 111, 80, 85, 80, 230, 57}},
      {" lead", true, {1, 80, 656, 56}},
  });
  EXPECT_EQ(t->decode(t->encode("<|start_story|>Once upon  a time")), "<|start_story|><|start_story|>Once upon  a time");
  EXPECT_EQ(t->decode(t->encode(" lead")), "<|start_story|> lead");
  EXPECT_EQ(t->decode(t->encode("Once upon a time"), true), "Once upon a time");
}

// ---- Errors ----------------------------------------------------------------------------------

std::string tiny_json(const std::string& model) {
  return R"({"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,"model":)" +
         model + "}";
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
  const std::string ok_model = R"({"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]})";
  const auto t = Tokenizer::from_hf_json(tiny_json(ok_model), "", "x/tokenizer.json");
  EXPECT_EQ(t->encode("abab"), (Ids{2, 2}));
  EXPECT_EQ(t->decode({2, 0}), "ab a");  // no decoder: HF joins tokens with spaces

  auto err = [](const std::string& text) {
    return error_of([&] { Tokenizer::from_hf_json(text, "", "x/tokenizer.json"); });
  };
  std::string e = err(R"({"version":"1.0"})");
  EXPECT_NE(e.find("x/tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("missing 'model'"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"Unigram","unk_id":0,"vocab":[["a",0.0]]})"));
  EXPECT_NE(e.find("x/tokenizer.json"), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported tokenizer model type 'Unigram'"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"WordPiece","vocab":{"a":0}})"));
  EXPECT_NE(e.find("unsupported tokenizer model type 'WordPiece'"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b c"]})"));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("expected"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]})"));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
  EXPECT_NE(e.find("must be in the vocab"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"BPE","vocab":{"a":0},"merges":[7]})"));
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"BPE","vocab":["a"],"merges":[]})"));
  EXPECT_NE(e.find("model.vocab"), std::string::npos) << e;
  e = err(tiny_json(R"({"type":"BPE","vocab":{"a":0}})"));
  EXPECT_NE(e.find("missing 'merges'"), std::string::npos) << e;
  e = err("{\"model\": ");
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;
  e = err(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"UnicodeScripts"}})");
  EXPECT_NE(e.find("unsupported pre_tokenizer type 'UnicodeScripts'"), std::string::npos) << e;
  e = err(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(["},"behavior":"Isolated"}})");
  EXPECT_NE(e.find("invalid regex"), std::string::npos) << e;
  e = err(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":{"type":"Precompiled"}})");
  EXPECT_NE(e.find("unsupported normalizer type 'Precompiled'"), std::string::npos) << e;

  testing::TempDir dir;
  e = error_of([&] { Tokenizer::from_hf_dir(dir.path()); });
  EXPECT_NE(e.find("no tokenizer.json"), std::string::npos) << e;
}

TEST(TokenizerErrors, UnsupportedGgufVocab) {
  testing::TempDir dir;
  auto write = [&](const std::string& model, const std::string& pre) {
    const std::string path = dir.file(model + pre + ".gguf");
    GGUFWriter w(path);
    w.add_string("tokenizer.ggml.model", model);
    if (!pre.empty()) w.add_string("tokenizer.ggml.pre", pre);
    w.add_string_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
    w.add_string_array("tokenizer.ggml.merges", {"a b"});
    w.finish();
    return GGUFFile::open(path);
  };
  std::string e = error_of([&] { Tokenizer::from_gguf(*write("bert", "")); });
  EXPECT_NE(e.find("unsupported tokenizer.ggml.model 'bert'"), std::string::npos) << e;
  EXPECT_NE(e.find(".gguf"), std::string::npos) << e;
  e = error_of([&] { Tokenizer::from_gguf(*write("gpt2", "made-up")); });
  EXPECT_NE(e.find("unsupported tokenizer.ggml.pre 'made-up'"), std::string::npos) << e;
  const auto t = Tokenizer::from_gguf(*write("gpt2", "gpt-2"));
  EXPECT_EQ(t->kind(), "gguf-bpe");
  EXPECT_EQ(t->encode("abab"), (Ids{2, 2}));
  EXPECT_EQ(t->decode({2, 0}), "aba");
}

}  // namespace
}  // namespace moetool
