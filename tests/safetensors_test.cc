// tests/safetensors_test.cc — safetensors reading, writing, sharding and validation: round trips
// of every dtype on seeded random data, byte-identical rewrites, atomic output, and malformed
// headers that must each raise one moetool::Error naming the file (and tensor).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "core/fs.h"
#include "formats/checkpoint.h"
#include "formats/checkpoint_files.h"
#include "formats/synth.h"
#include "formats/safetensors.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Writes a raw safetensors file from a header JSON string and a data buffer.
std::string make_file(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s + header + data;
}

TEST(Safetensors, RoundTripEveryDType) {
  TempDir d;
  std::vector<TensorSpec> specs;
  std::map<std::string, std::vector<uint8_t>> data;
  for (int i = 0; i < kNumDTypes; ++i) {
    DType t = static_cast<DType>(i);
    Shape shape = (i % 3 == 0) ? Shape{3, 5} : (i % 3 == 1) ? Shape{7} : Shape{2, 3, 4};
    std::string name = std::string("t.") + dtype_name(t);
    specs.push_back({name, t, shape});
    data[name] = random_bytes(static_cast<size_t>(numel(shape)) * dtype_size(t), 100 + i);
  }
  specs.push_back({"scalar", DType::F32, {}});
  data["scalar"] = random_bytes(4, 1);
  specs.push_back({"empty", DType::F16, {0, 4}});
  data["empty"] = {};
  {
    SafetensorsWriter w(d.path(), specs, {{"note", "hello"}});
    // Write in reverse order: positional writes accept any order.
    for (auto it = specs.rbegin(); it != specs.rend(); ++it) w.write(it->name, data[it->name].data(), data[it->name].size());
    auto files = w.finish();
    ASSERT_EQ(files.size(), 1u);
    EXPECT_EQ(files[0], "model.safetensors");
  }
  auto f = SafetensorsFile::open(d.file("model.safetensors"));
  EXPECT_EQ(f->tensors().size(), specs.size());
  EXPECT_EQ(f->metadata().at("note"), "hello");
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (const auto& s : specs) {
    Tensor t = f->get(s.name);
    EXPECT_EQ(t.dtype, s.dtype) << s.name;
    EXPECT_EQ(t.shape, s.shape) << s.name;
    ASSERT_EQ(t.nbytes(), data[s.name].size());
    if (t.nbytes()) EXPECT_EQ(std::memcmp(t.data, data[s.name].data(), t.nbytes()), 0) << s.name;
  }
  // Layout follows the reference writer: 8-byte-aligned data start; descending dtype size.
  const auto& ts = f->tensors();
  for (size_t i = 1; i < ts.size(); ++i)
    EXPECT_GE(dtype_size(ts[i - 1].dtype), dtype_size(ts[i].dtype));
  EXPECT_EQ((f->file_size() - (ts.back().end)) % 8, 0u);
}

TEST(Safetensors, RewriteIsByteIdentical) {
  TempDir d;
  std::filesystem::create_directory(d.file("a"));
  std::filesystem::create_directory(d.file("b"));
  std::vector<TensorSpec> specs = {{"w", DType::BF16, {16, 8}}, {"b", DType::F32, {8}}, {"i", DType::I64, {3}}};
  {
    SafetensorsWriter w(d.file("a"), specs, {{"k", "v"}});
    for (const auto& s : specs) {
      auto bytes = random_bytes(static_cast<size_t>(numel(s.shape)) * dtype_size(s.dtype), s.name[0]);
      w.write(s.name, bytes.data(), bytes.size());
    }
    w.finish();
  }
  auto f = SafetensorsFile::open(d.file("a/model.safetensors"));
  std::vector<TensorSpec> specs2;
  for (const auto& t : f->tensors()) specs2.push_back({t.name, t.dtype, t.shape});
  std::map<std::string, std::string> md = f->metadata();
  {
    SafetensorsWriter w(d.file("b"), specs2, md);
    for (const auto& t : f->tensors()) w.write(t.name, f->get(t));
    w.finish();
  }
  EXPECT_EQ(read_file(d.file("a/model.safetensors")), read_file(d.file("b/model.safetensors")));
}

TEST(Safetensors, ShardedWriteReadsBackIdentically) {
  TempDir d;
  std::vector<TensorSpec> specs;
  for (int l = 0; l < 6; ++l) specs.push_back({"layers." + std::to_string(l) + ".w", DType::F32, {64, 32}});
  std::map<std::string, std::vector<float>> data;
  {
    SafetensorsWriter w(d.path(), specs, {}, /*max_shard_bytes=*/3 * 64 * 32 * 4);
    EXPECT_EQ(w.num_shards(), 2u);
    for (size_t i = 0; i < specs.size(); ++i) {
      data[specs[i].name] = testing::random_normal(64 * 32, i + 1);
      // Stream in two chunks.
      const auto& v = data[specs[i].name];
      w.write_chunk(specs[i].name, 0, v.data(), v.size() * 2);
      w.write_chunk(specs[i].name, v.size() * 2, v.data() + v.size() / 2, v.size() * 2);
    }
    auto files = w.finish();
    ASSERT_EQ(files.size(), 3u);
    EXPECT_EQ(files[0], "model-00001-of-00002.safetensors");
    EXPECT_EQ(files[2], "model.safetensors.index.json");
  }
  Checkpoint c = Checkpoint::open(d.path());
  EXPECT_EQ(c.files().size(), 2u);
  EXPECT_EQ(c.names().size(), specs.size());
  for (const auto& [name, v] : data) {
    Tensor t = c.get(name);
    EXPECT_EQ(t.to_f32(), v) << name;
  }
  EXPECT_NE(c.file_of("layers.0.w"), c.file_of("layers.5.w"));
}

TEST(Safetensors, UnfinishedWriterLeavesNothing) {
  TempDir d;
  {
    SafetensorsWriter w(d.path(), {{"a", DType::F32, {4}}, {"b", DType::F32, {4}}}, {}, 16);
    float x[4] = {1, 2, 3, 4};
    w.write("a", x, sizeof x);
    // destroyed without finish (as on an exception mid-run)
  }
  EXPECT_TRUE(std::filesystem::is_empty(d.path()));
  // finish() refuses when a tensor is missing, naming it.
  SafetensorsWriter w(d.path(), {{"a", DType::F32, {4}}, {"b", DType::F32, {4}}}, {});
  float x[4] = {1, 2, 3, 4};
  w.write("a", x, sizeof x);
  try {
    w.finish();
    FAIL() << "finish() accepted an unwritten tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'b'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(w.write("a", x, sizeof x), Error);       // twice
  EXPECT_THROW(w.write("zzz", x, sizeof x), Error);     // unplanned
  EXPECT_THROW(w.write("b", x, sizeof x - 4), Error);   // wrong size
}

TEST(Safetensors, WriterConvertsFloatDTypes) {
  TempDir d;
  auto v = testing::random_normal(300, 9);
  Tensor t = Tensor::zeros(DType::F32, {3, 100});
  std::memcpy(t.data, v.data(), v.size() * 4);
  {
    SafetensorsWriter w(d.path(), {{"x", DType::BF16, {3, 100}}}, {});
    w.write("x", t);
    w.finish();
  }
  auto f = SafetensorsFile::open(d.file("model.safetensors"));
  auto back = f->get("x").to_f32();
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(back[i], bf16_to_f32(f32_to_bf16(v[i])));
}

struct BadCase {
  const char* what;
  std::string bytes;
  const char* expect;  // substring the message must contain (besides the file name)
};

std::vector<BadCase> bad_cases() {
  const std::string ok_hdr = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string d8(8, '\x01');
  std::vector<BadCase> v;
  v.push_back({"empty file", "", "truncated"});
  v.push_back({"5 bytes", std::string(5, 'x'), "truncated"});
  v.push_back({"header length past EOF", make_file(ok_hdr, d8).substr(0, 20), "past the end"});
  {
    std::string s = make_file(ok_hdr, d8);
    s[7] = '\x7f';  // absurd header length
    v.push_back({"header length over 100MB", s, "100 MB"});
  }
  v.push_back({"invalid JSON", make_file(R"({"a":{"dtype":"F32",)", ""), "JSON"});
  v.push_back({"invalid UTF-8", make_file("{\"a\xff\":{}}", ""), "JSON"});
  v.push_back({"not an object", make_file("[1,2,3]", ""), "object"});
  v.push_back({"unknown dtype", make_file(R"({"a":{"dtype":"F4","shape":[2],"data_offsets":[0,8]}})", d8), "unknown dtype"});
  v.push_back({"size mismatch", make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", d8), "needs 12 bytes"});
  v.push_back({"gap", make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8), "gap"});
  v.push_back({"overlap",
               make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8),
               "overlaps"});
  v.push_back({"offsets out of range", make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8), "truncated"});
  v.push_back({"trailing bytes", make_file(ok_hdr, d8 + "xxxx"), "trailing"});
  v.push_back({"duplicate names",
               make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", d8),
               "duplicate"});
  v.push_back({"negative dim", make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8), "non-negative"});
  v.push_back({"end before begin", make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8), "end before begin"});
  v.push_back({"bad metadata", make_file(R"({"__metadata__":{"x":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8), "__metadata__"});
  v.push_back({"overflowing shape",
               make_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})", d8),
               "overflow"});
  v.push_back({"deep nesting", make_file(R"({"a":{"dtype":"F32","shape":[[[[[2]]]]],"data_offsets":[0,8]}})", d8), "nested"});
  return v;
}

TEST(Safetensors, MalformedInputsGiveOneClearError) {
  TempDir d;
  int n = 0;
  for (const auto& c : bad_cases()) {
    const std::string p = d.file("bad" + std::to_string(n++) + ".safetensors");
    testing::write_bytes(p, c.bytes);
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << c.what << ": accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(p), std::string::npos) << c.what << ": message does not name the file: " << m;
      EXPECT_NE(m.find(c.expect), std::string::npos) << c.what << ": message lacks '" << c.expect << "': " << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << c.what << ": message is not one line: " << m;
    }
  }
  EXPECT_GE(n, 19);
}

TEST(Safetensors, TruncationAtEveryLengthIsRejected) {
  TempDir d;
  {
    SafetensorsWriter w(d.path(), {{"a", DType::F32, {5}}, {"b", DType::F16, {3}}}, {});
    auto x = testing::random_normal(5, 1);
    w.write("a", x.data(), 20);
    uint16_t h[3] = {1, 2, 3};
    w.write("b", h, 6);
    w.finish();
  }
  const std::string full = read_file(d.file("model.safetensors"));
  for (size_t len = 0; len < full.size(); ++len) {
    testing::write_bytes(d.file("t.safetensors"), full.substr(0, len));
    EXPECT_THROW(SafetensorsFile::open(d.file("t.safetensors")), Error) << len;
  }
}

TEST(Checkpoint, IndexProblemsAreReported) {
  TempDir d;
  {
    SafetensorsWriter w(d.path(), {{"a", DType::F32, {4}}, {"b", DType::F32, {4}}}, {}, 16);
    float x[4] = {1, 2, 3, 4};
    w.write("a", x, 16);
    w.write("b", x, 16);
    w.finish();
  }
  Checkpoint ok = Checkpoint::open(d.path());
  EXPECT_EQ(ok.names().size(), 2u);
  auto expect_error = [&](const std::string& index, const std::string& needle) {
    testing::write_bytes(d.file("model.safetensors.index.json"), index);
    try {
      Checkpoint::open(d.path());
      ADD_FAILURE() << "accepted index " << index;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("model.safetensors.index.json"), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"missing.safetensors"}})",
               "tensor 'b' maps to missing file 'missing.safetensors'");
  expect_error(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})",
               "tensor 'c' listed in weight_map but absent");
  expect_error(R"({"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})",
               "tensor 'a'");
  expect_error(R"({"weight_map": 3})", "weight_map");
  expect_error(R"({"weight_map":{"a":"../x.safetensors"}})", "same directory");
  expect_error("{not json", "invalid JSON");
}

TEST(Checkpoint, TinyStoriesWithTiedAlias) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  Checkpoint c = Checkpoint::open(testing::shared_path("models/tinystories-656k"));
  EXPECT_EQ(c.names().size(), 20u);
  EXPECT_TRUE(c.has_config());
  EXPECT_EQ(c.config_json().at("model_type"), "llama");
  EXPECT_TRUE(c.is_alias("model.embed_tokens.weight"));
  Tensor e = c.get("model.embed_tokens.weight");
  Tensor h = c.get("lm_head.weight");
  EXPECT_EQ(e.data, h.data);
  EXPECT_EQ(e.shape, (Shape{2048, 128}));
  int64_t params = 0;
  for (const auto& n : c.names()) params += numel(c.info(n).shape);
  EXPECT_EQ(params, 656000);
}

}  // namespace
}  // namespace moetool

namespace moetool {
namespace {

// read_view (formats/checkpoint_files.h): the bytes of any view into a sharded checkpoint's files —
// whole tensors and row slices — come back by pread equal to the mapping's; an owned tensor is not
// read (false, dst untouched).
TEST(Checkpoint, ReadViewEqualsTheMapping) {
  testing::TempDir d;
  SynthOptions so;
  so.family = "mixtral";
  so.seed = 21;
  so.max_shard_bytes = 200000;
  synth_model(d.file("m"), so);
  const Checkpoint ck = Checkpoint::open(d.file("m"));
  ASSERT_GT(ck.files().size(), 2u);
  int64_t sliced = 0;
  for (const std::string& name : ck.names()) {
    SCOPED_TRACE(name);
    const Tensor t = ck.get(name);
    std::vector<uint8_t> got(t.nbytes(), 0xAB);
    ASSERT_TRUE(read_view(ck, t, got.data()));
    EXPECT_EQ(std::memcmp(got.data(), t.data, t.nbytes()), 0);
    if (t.shape.size() == 2 && t.shape[0] > 3) {
      const Tensor s = t.slice0(1, t.shape[0] - 1);
      std::vector<uint8_t> part(s.nbytes(), 0xCD);
      ASSERT_TRUE(read_view(ck, s, part.data()));
      EXPECT_EQ(std::memcmp(part.data(), s.data, s.nbytes()), 0);
      ++sliced;
    }
  }
  EXPECT_GT(sliced, 5);
  std::vector<float> own = testing::random_normal(16, 3);
  Tensor o;
  o.dtype = DType::F32;
  o.shape = {4, 4};
  o.data = reinterpret_cast<uint8_t*>(own.data());
  float dst[16] = {};
  EXPECT_FALSE(read_view(ck, o, dst));
  EXPECT_EQ(dst[0], 0.0f);
}

}  // namespace
}  // namespace moetool
