// tests/gguf_test.cc — the GGUF container: ggml type table, metadata values of every type, writer ->
// reader round trips (byte-exact tensor data, byte-identical to a hand-built reference layout),
// the real llama.cpp files in ../shared, and malformed inputs that must each raise one
// moetool::Error naming the file.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/ggml_types.h"
#include "formats/gguf.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::string slurp(const std::string& path) { return read_file(path); }

// Little-endian byte builder for hand-made GGUF files, following the spec directly.
struct Bytes {
  std::string b;
  Bytes& raw(const void* p, size_t n) {
    b.append(static_cast<const char*>(p), n);
    return *this;
  }
  Bytes& u8(uint8_t x) { return raw(&x, 1); }
  Bytes& u32(uint32_t x) { return raw(&x, 4); }
  Bytes& u64(uint64_t x) { return raw(&x, 8); }
  Bytes& f32(float x) { return raw(&x, 4); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& pad_to(size_t align) {
    while (b.size() % align) b.push_back('\0');
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  // Key with a u32 value.
  Bytes& kv_u32(const std::string& k, uint32_t v) { return str(k).u32(4).u32(v); }
  Bytes& kv_str(const std::string& k, const std::string& v) { return str(k).u32(8).str(v); }
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (auto d : ne) u64(d);
    return u32(type).u64(offset);
  }
};

// Expects parsing `bytes` (both from a file named `file_name` and from memory) to throw a
// moetool::Error naming the file and containing `needle`.
void expect_malformed(const TempDir& d, const std::string& file_name, const std::string& bytes,
                      const std::string& needle) {
  SCOPED_TRACE(file_name);
  const std::string path = d.file(file_name);
  testing::write_bytes(path, bytes);
  try {
    GGUFFile::open(path);
    ADD_FAILURE() << "no error for " << file_name;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  try {
    GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), file_name);
    ADD_FAILURE() << "no error for buffer " << file_name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(file_name), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------------------------------
// ggml types

TEST(GGUFGGMLTypes, TableMatchesGGML) {
  struct Row {
    GGMLType t;
    uint32_t id;
    const char* name;
    int64_t blck;
    size_t size;
  };
  const Row rows[] = {
      {GGMLType::F32, 0, "F32", 1, 4},          {GGMLType::F16, 1, "F16", 1, 2},
      {GGMLType::Q4_0, 2, "Q4_0", 32, 18},      {GGMLType::Q4_1, 3, "Q4_1", 32, 20},
      {GGMLType::Q5_0, 6, "Q5_0", 32, 22},      {GGMLType::Q5_1, 7, "Q5_1", 32, 24},
      {GGMLType::Q8_0, 8, "Q8_0", 32, 34},      {GGMLType::Q8_1, 9, "Q8_1", 32, 36},
      {GGMLType::Q2_K, 10, "Q2_K", 256, 84},    {GGMLType::Q3_K, 11, "Q3_K", 256, 110},
      {GGMLType::Q4_K, 12, "Q4_K", 256, 144},   {GGMLType::Q5_K, 13, "Q5_K", 256, 176},
      {GGMLType::Q6_K, 14, "Q6_K", 256, 210},   {GGMLType::Q8_K, 15, "Q8_K", 256, 292},
      {GGMLType::IQ2_XXS, 16, "IQ2_XXS", 256, 66}, {GGMLType::IQ2_XS, 17, "IQ2_XS", 256, 74},
      {GGMLType::IQ3_XXS, 18, "IQ3_XXS", 256, 98}, {GGMLType::IQ1_S, 19, "IQ1_S", 256, 50},
      {GGMLType::IQ4_NL, 20, "IQ4_NL", 32, 18}, {GGMLType::IQ3_S, 21, "IQ3_S", 256, 110},
      {GGMLType::IQ2_S, 22, "IQ2_S", 256, 82},  {GGMLType::IQ4_XS, 23, "IQ4_XS", 256, 136},
      {GGMLType::I8, 24, "I8", 1, 1},           {GGMLType::I16, 25, "I16", 1, 2},
      {GGMLType::I32, 26, "I32", 1, 4},         {GGMLType::I64, 27, "I64", 1, 8},
      {GGMLType::F64, 28, "F64", 1, 8},         {GGMLType::IQ1_M, 29, "IQ1_M", 256, 56},
      {GGMLType::BF16, 30, "BF16", 1, 2},       {GGMLType::TQ1_0, 34, "TQ1_0", 256, 54},
      {GGMLType::TQ2_0, 35, "TQ2_0", 256, 66},  {GGMLType::MXFP4, 39, "MXFP4", 32, 17},
  };
  EXPECT_EQ(ggml_type_table().size(), std::size(rows));
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    EXPECT_EQ(static_cast<uint32_t>(r.t), r.id);
    EXPECT_STREQ(ggml_type_name(r.t), r.name);
    EXPECT_EQ(ggml_block_size(r.t), r.blck);
    EXPECT_EQ(ggml_type_size(r.t), r.size);
    EXPECT_EQ(ggml_is_quantized(r.t), r.blck > 1);
    ASSERT_TRUE(is_valid_ggml_type(r.id));
    EXPECT_EQ(parse_ggml_type(r.name), r.t);
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u, 0xffffffffu})
    EXPECT_FALSE(is_valid_ggml_type(removed)) << removed;
  EXPECT_EQ(parse_ggml_type("q4_k"), GGMLType::Q4_K);
  EXPECT_EQ(parse_ggml_type("bf16"), GGMLType::BF16);
  EXPECT_FALSE(parse_ggml_type("Q4_2").has_value());
  EXPECT_FALSE(parse_ggml_type("").has_value());
}

TEST(GGUFGGMLTypes, RowAndTensorSizes) {
  EXPECT_EQ(ggml_row_size(GGMLType::F32, 128), 512u);
  EXPECT_EQ(ggml_row_size(GGMLType::Q4_0, 4096), 4096u / 32 * 18);
  EXPECT_EQ(ggml_row_size(GGMLType::Q4_K, 4096), 4096u / 256 * 144);
  EXPECT_EQ(ggml_row_size(GGMLType::Q8_0, 0), 0u);
  EXPECT_EQ(ggml_nbytes(GGMLType::F16, {128, 2048}), 128u * 2048 * 2);
  EXPECT_EQ(ggml_nbytes(GGMLType::Q6_K, {512, 3, 2, 2}), 2u * 210 * 3 * 2 * 2);
  EXPECT_EQ(ggml_nbytes(GGMLType::F32, {7, 0, 3}), 0u);
  try {
    ggml_row_size(GGMLType::Q4_K, 100, "m.gguf: tensor 'x'");
    FAIL();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("m.gguf: tensor 'x'"), std::string::npos) << m;
    EXPECT_NE(m.find("100"), std::string::npos) << m;
    EXPECT_NE(m.find("256"), std::string::npos) << m;
  }
  EXPECT_THROW(ggml_row_size(GGMLType::Q8_0, 33), Error);
  EXPECT_THROW(ggml_row_size(GGMLType::F32, -1), Error);
  EXPECT_THROW(ggml_nbytes(GGMLType::F32, {1, -2}), Error);
  const int64_t big = int64_t{1} << 40;
  EXPECT_THROW(ggml_nbytes(GGMLType::F32, {big, big}), Error);
  EXPECT_THROW(ggml_nbytes(GGMLType::F64, {int64_t{1} << 61}), Error);
  EXPECT_THROW(ggml_nbytes(GGMLType::F32, {big, 0, big, big}), Error);
}

TEST(GGUFGGMLTypes, DTypeMapping) {
  for (GGMLType t : {GGMLType::F32, GGMLType::F16, GGMLType::BF16, GGMLType::F64, GGMLType::I8, GGMLType::I16,
                     GGMLType::I32, GGMLType::I64}) {
    auto d = ggml_type_to_dtype(t);
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(dtype_size(*d), ggml_type_size(t));
    EXPECT_EQ(dtype_to_ggml_type(*d), t);
  }
  EXPECT_FALSE(ggml_type_to_dtype(GGMLType::Q4_K).has_value());
  EXPECT_FALSE(dtype_to_ggml_type(DType::U8).has_value());
  EXPECT_FALSE(dtype_to_ggml_type(DType::F8_E4M3).has_value());
}

// ------------------------------------------------------------------------------------------
// Values

TEST(GGUFValue, ScalarAccessorsAndErrors) {
  EXPECT_EQ(GGUFValue::u8(200).as_u64(), 200u);
  EXPECT_EQ(GGUFValue::i8(-5).as_i64(), -5);
  EXPECT_EQ(GGUFValue::i16(-300).as_i32(), -300);
  EXPECT_EQ(GGUFValue::u32(4000000000u).as_u32(), 4000000000u);
  EXPECT_EQ(GGUFValue::u64(~uint64_t{0}).as_u64(), ~uint64_t{0});
  EXPECT_EQ(GGUFValue::i64(std::numeric_limits<int64_t>::min()).as_i64(), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(GGUFValue::i32(std::numeric_limits<int32_t>::min()).as_i32(), std::numeric_limits<int32_t>::min());
  EXPECT_FLOAT_EQ(GGUFValue::f32(1.5f).as_f32(), 1.5f);
  EXPECT_DOUBLE_EQ(GGUFValue::f64(-2.25).as_f64(), -2.25);
  EXPECT_DOUBLE_EQ(GGUFValue::u32(7).as_f64(), 7.0);
  EXPECT_TRUE(GGUFValue::boolean(true).as_bool());
  EXPECT_EQ(GGUFValue::string("llama").as_string(), "llama");
  EXPECT_TRUE(GGUFValue::u16(3).is_integer());
  EXPECT_TRUE(GGUFValue::f64(3).is_float());

  // Mismatches name the context, the wanted and the actual type.
  try {
    GGUFValue::string("x").as_u64("m.gguf: key 'llama.block_count'");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "m.gguf: key 'llama.block_count': expected an unsigned integer, found string");
  }
  try {
    GGUFValue::u32(1).as_string("k");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "k: expected string, found u32");
  }
  try {
    GGUFValue::array(std::vector<float>{1.f}).as_string_array("k");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "k: expected array of string, found array of f32");
  }
  EXPECT_THROW(GGUFValue::i8(-1).as_u64(), Error);
  EXPECT_THROW(GGUFValue::u64(~uint64_t{0}).as_i64(), Error);
  EXPECT_THROW(GGUFValue::u64(uint64_t{1} << 32).as_u32(), Error);
  EXPECT_THROW(GGUFValue::i64(int64_t{1} << 31).as_i32(), Error);
  EXPECT_THROW(GGUFValue::u8(1).as_bool(), Error);
  EXPECT_THROW(GGUFValue::boolean(true).as_f64(), Error);
  EXPECT_THROW(GGUFValue::u8(1).array_size(), Error);
  EXPECT_THROW(GGUFValue::raw_array(GGUFType::STRING, nullptr, 0), Error);
  const uint8_t bad_bool[] = {0, 1, 2};
  EXPECT_THROW(GGUFValue::raw_array(GGUFType::BOOL, bad_bool, 3), Error);
}

TEST(GGUFValue, ArrayAccessors) {
  const auto a = GGUFValue::array(std::vector<int32_t>{3, -1, 7});
  EXPECT_EQ(a.array_type(), GGUFType::I32);
  EXPECT_EQ(a.array_size(), 3u);
  EXPECT_EQ(a.as_i64_array(), (std::vector<int64_t>{3, -1, 7}));
  EXPECT_EQ(a.as_i32_array(), (std::vector<int32_t>{3, -1, 7}));
  EXPECT_EQ(a.as_f64_array(), (std::vector<double>{3, -1, 7}));
  EXPECT_THROW(a.as_u64_array(), Error);  // -1
  EXPECT_EQ(a.at(1).as_i64(), -1);
  EXPECT_EQ(a.at(1).type(), GGUFType::I32);
  EXPECT_THROW(a.at(3), Error);
  EXPECT_EQ(a.array_bytes().size(), 12u);
  EXPECT_EQ(a.to_string(), "[3, -1, 7]");

  const auto s = GGUFValue::string_array({"a", "b\n", ""});
  EXPECT_EQ(s.as_string_array(), (std::vector<std::string>{"a", "b\n", ""}));
  EXPECT_EQ(s.at(1).as_string(), "b\n");
  EXPECT_THROW(s.array_bytes(), Error);
  EXPECT_THROW(s.as_f32_array(), Error);
  EXPECT_EQ(s.to_string(2), "[\"a\", \"b\\n\", ... (3 string elements)]");

  const auto b = GGUFValue::bool_array({true, false, true});
  EXPECT_EQ(b.as_bool_array(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(GGUFValue::array(std::vector<float>{0.5f, 2.f}).as_f32_array(), (std::vector<float>{0.5f, 2.f}));
  EXPECT_EQ(GGUFValue::array(std::vector<uint16_t>{1, 65535}).as_u64_array(), (std::vector<uint64_t>{1, 65535}));

  // Equality is type- and bit-exact.
  EXPECT_EQ(GGUFValue::u32(1), GGUFValue::u32(1));
  EXPECT_FALSE(GGUFValue::u32(1) == GGUFValue::i32(1));
  EXPECT_EQ(GGUFValue::f32(std::nanf("")), GGUFValue::f32(std::nanf("")));
}

// ------------------------------------------------------------------------------------------
// Round trips

// One of every scalar type and an array of every element type, with seeded random contents.
std::vector<GGUFKV> every_type_kvs(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto r = [&] { return rng(); };
  auto rf = [&] { return std::uniform_real_distribution<float>(-1e3f, 1e3f)(rng); };
  auto rd = [&] { return std::uniform_real_distribution<double>(-1e9, 1e9)(rng); };
  auto rs = [&](size_t max_len) {
    std::string s(r() % (max_len + 1), '\0');
    for (auto& c : s) c = static_cast<char>(r());  // arbitrary bytes, NULs included
    return s;
  };
  auto vec = [&](auto proto, size_t n) {
    std::vector<decltype(proto)> v(n);
    for (auto& x : v) x = static_cast<decltype(proto)>(r());
    return v;
  };
  std::vector<GGUFKV> kv;
  kv.push_back({"general.architecture", GGUFValue::string("llama")});
  kv.push_back({"t.u8", GGUFValue::u8(static_cast<uint8_t>(r()))});
  kv.push_back({"t.i8", GGUFValue::i8(static_cast<int8_t>(r()))});
  kv.push_back({"t.u16", GGUFValue::u16(static_cast<uint16_t>(r()))});
  kv.push_back({"t.i16", GGUFValue::i16(static_cast<int16_t>(r()))});
  kv.push_back({"t.u32", GGUFValue::u32(static_cast<uint32_t>(r()))});
  kv.push_back({"t.i32", GGUFValue::i32(static_cast<int32_t>(r()))});
  kv.push_back({"t.f32", GGUFValue::f32(rf())});
  kv.push_back({"t.bool", GGUFValue::boolean(true)});
  kv.push_back({"t.bool0", GGUFValue::boolean(false)});
  kv.push_back({"t.string", GGUFValue::string(rs(100))});
  kv.push_back({"t.empty_string", GGUFValue::string("")});
  kv.push_back({"t.u64", GGUFValue::u64(r())});
  kv.push_back({"t.i64", GGUFValue::i64(static_cast<int64_t>(r()))});
  kv.push_back({"t.f64", GGUFValue::f64(rd())});
  kv.push_back({"t.f32_nan", GGUFValue::f32(std::numeric_limits<float>::quiet_NaN())});
  kv.push_back({"a.u8", GGUFValue::array(vec(uint8_t{}, 17))});
  kv.push_back({"a.i8", GGUFValue::array(vec(int8_t{}, 5))});
  kv.push_back({"a.u16", GGUFValue::array(vec(uint16_t{}, 9))});
  kv.push_back({"a.i16", GGUFValue::array(vec(int16_t{}, 3))});
  kv.push_back({"a.u32", GGUFValue::array(vec(uint32_t{}, 33))});
  kv.push_back({"a.i32", GGUFValue::array(vec(int32_t{}, 2))});
  std::vector<float> fv(50);
  for (auto& x : fv) x = rf();
  kv.push_back({"a.f32", GGUFValue::array(fv)});
  std::vector<bool> bv(13);
  for (size_t i = 0; i < bv.size(); ++i) bv[i] = r() & 1;
  kv.push_back({"a.bool", GGUFValue::bool_array(bv)});
  std::vector<std::string> sv(40);
  for (auto& s : sv) s = rs(20);
  kv.push_back({"a.string", GGUFValue::string_array(sv)});
  kv.push_back({"a.u64", GGUFValue::array(vec(uint64_t{}, 4))});
  kv.push_back({"a.i64", GGUFValue::array(vec(int64_t{}, 6))});
  std::vector<double> dv(7);
  for (auto& x : dv) x = rd();
  kv.push_back({"a.f64", GGUFValue::array(dv)});
  kv.push_back({"a.empty_u32", GGUFValue::array(std::vector<uint32_t>{})});
  kv.push_back({"a.empty_string", GGUFValue::string_array({})});
  kv.push_back({"", GGUFValue::string("empty key is legal")});
  return kv;
}

TEST(GGUFRoundTrip, EveryMetadataType) {
  TempDir d;
  const auto kvs = every_type_kvs(42);
  const std::string path = d.file("meta.gguf");
  {
    GGUFWriter w(path);
    for (const auto& kv : kvs) w.add(kv.key, kv.value);
    w.finish();
  }
  auto f = GGUFFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->tensors().empty());
  ASSERT_EQ(f->metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    SCOPED_TRACE(kvs[i].key);
    EXPECT_EQ(f->metadata()[i].key, kvs[i].key);  // file order
    EXPECT_TRUE(f->metadata()[i].value == kvs[i].value) << f->metadata()[i].value.to_string();
    ASSERT_NE(f->find(kvs[i].key), nullptr);
    EXPECT_TRUE(*f->find(kvs[i].key) == kvs[i].value);
  }
  // Header only, padded to the alignment.
  EXPECT_EQ(file_size(path), f->data_offset());
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_string_array("a.string"), kvs[24].value.as_string_array());
  EXPECT_EQ(f->get_u64_or("missing", 9), 9u);
  EXPECT_EQ(f->get_string_or("missing", "x"), "x");
  EXPECT_TRUE(f->get_bool("t.bool"));
  EXPECT_THROW(f->get_u64("t.string"), Error);
  try {
    f->get_u32("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
  }
  try {
    f->get_f64("t.string");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": key 't.string': expected a number, found string");
  }
}

struct PlannedTensor {
  std::string name;
  GGMLType type;
  std::vector<int64_t> ne;
  std::vector<uint8_t> data;
};

std::vector<PlannedTensor> planned_tensors(uint64_t seed) {
  std::vector<PlannedTensor> ts = {
      {"token_embd.weight", GGMLType::F16, {64, 10}, {}},
      {"blk.0.attn_norm.weight", GGMLType::F32, {64}, {}},
      {"blk.0.ffn_gate_exps.weight", GGMLType::BF16, {64, 24, 4}, {}},
      {"blk.0.ffn_down.weight", GGMLType::Q4_0, {96, 3}, {}},
      {"blk.0.ffn_up.weight", GGMLType::Q4_K, {512, 2}, {}},
      {"blk.0.odd.weight", GGMLType::F32, {3, 1}, {}},  // 12 bytes: needs padding
      {"empty", GGMLType::F32, {0, 5}, {}},
      {"ids", GGMLType::I32, {7}, {}},
      {"four_d", GGMLType::F64, {2, 3, 1, 2}, {}},
      {"q8", GGMLType::Q8_0, {32, 1, 1, 3}, {}},
      {"i8", GGMLType::I8, {5}, {}},
  };
  for (size_t i = 0; i < ts.size(); ++i) ts[i].data = random_bytes(ggml_nbytes(ts[i].type, ts[i].ne), seed + i);
  return ts;
}

void write_planned(const std::string& path, const std::vector<PlannedTensor>& ts, uint32_t alignment,
                   size_t chunk = 0) {
  GGUFWriter w(path);
  w.add_string("general.architecture", "llama");
  if (alignment != kGGUFDefaultAlignment) w.add("general.alignment", GGUFValue::u32(alignment));
  w.add("llama.block_count", GGUFValue::u32(1));
  for (const auto& t : ts) EXPECT_EQ(w.add_tensor_info(t.name, t.type, t.ne), t.data.size());
  for (const auto& t : ts) {
    if (chunk == 0) {
      w.write_tensor_data(t.name, t.data.data(), t.data.size());
    } else {
      for (size_t o = 0; o < t.data.size(); o += chunk)
        w.write_tensor_data(t.name, t.data.data() + o, std::min(chunk, t.data.size() - o));
    }
  }
  EXPECT_FALSE(file_exists(path));  // nothing at the final path before finish()
  w.finish();
}

void check_planned(const std::string& path, const std::vector<PlannedTensor>& ts, uint32_t alignment) {
  auto f = GGUFFile::open(path);
  EXPECT_EQ(f->alignment(), alignment);
  EXPECT_EQ(f->data_offset() % alignment, 0u);
  ASSERT_EQ(f->tensors().size(), ts.size());
  uint64_t expect_offset = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& want = ts[i];
    const auto& info = f->tensors()[i];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(info.name, want.name);
    EXPECT_EQ(info.type, want.type);
    EXPECT_EQ(info.ne, want.ne);
    EXPECT_EQ(info.nbytes, want.data.size());
    EXPECT_EQ(info.offset, expect_offset);  // llama.cpp layout: contiguous, each padded
    expect_offset += (info.nbytes + alignment - 1) / alignment * alignment;
    const auto raw = f->raw_tensor(want.name);
    EXPECT_EQ(raw.type, want.type);
    ASSERT_EQ(raw.bytes.size(), want.data.size());
    if (!want.data.empty()) {
      EXPECT_EQ(std::memcmp(raw.bytes.data(), want.data.data(), want.data.size()), 0);
    }
    if (ggml_is_quantized(want.type)) {
      EXPECT_THROW(f->tensor(want.name), Error);
    } else {
      const Tensor t = f->tensor(want.name);  // [ne[n-1], ..., ne[0]]
      EXPECT_EQ(t.shape, Shape(want.ne.rbegin(), want.ne.rend()));
      EXPECT_EQ(t.dtype, *ggml_type_to_dtype(want.type));
      ASSERT_EQ(t.nbytes(), want.data.size());
      if (t.nbytes()) {
        EXPECT_EQ(std::memcmp(t.data, want.data.data(), t.nbytes()), 0);
      }
    }
  }
  EXPECT_EQ(f->file_size(), f->data_offset() + expect_offset);  // last tensor padded too
}

TEST(GGUFRoundTrip, TensorDataByteExact) {
  TempDir d;
  const auto ts = planned_tensors(7);
  write_planned(d.file("a.gguf"), ts, 32);
  check_planned(d.file("a.gguf"), ts, 32);
  // Same content written in small chunks gives the identical file.
  write_planned(d.file("b.gguf"), ts, 32, 7);
  EXPECT_EQ(slurp(d.file("a.gguf")), slurp(d.file("b.gguf")));
  // Other alignments.
  for (uint32_t al : {1u, 8u, 64u, 4096u}) {
    SCOPED_TRACE(al);
    const std::string p = d.file("al" + std::to_string(al) + ".gguf");
    write_planned(p, ts, al);
    check_planned(p, ts, al);
  }
  // No temporaries left behind.
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(d.path())) n += e.path().string().find(".tmp-") != std::string::npos;
  EXPECT_EQ(n, 0u);
}

TEST(GGUFRoundTrip, TensorViewsAndShapes) {
  TempDir d;
  const std::string path = d.file("t.gguf");
  const auto vals = testing::random_normal(6 * 4, 3);  // [6, 4] f32
  Tensor src = Tensor::zeros(DType::F32, {6, 4});      // [rows=6, cols=4]
  std::memcpy(src.data, vals.data(), vals.size() * 4);
  {
    GGUFWriter w(path);
    EXPECT_EQ(w.add_tensor_info("w", DType::F32, src.shape), 96u);
    EXPECT_EQ(w.tensor_infos()[0].ne, (std::vector<int64_t>{4, 6}));  // ggml order
    Tensor wrong = Tensor::zeros(DType::F32, {4, 6});
    EXPECT_THROW(w.write_tensor("w", wrong), Error);
    EXPECT_THROW(w.write_tensor("w", Tensor::zeros(DType::F16, {6, 4})), Error);
    w.write_tensor("w", src);
    w.finish();
  }
  auto f = GGUFFile::open(path);
  const Tensor t = f->tensor("w");  // [6, 4]
  EXPECT_EQ(t.shape, (Shape{6, 4}));
  EXPECT_EQ(t.to_f32(), vals);
  EXPECT_EQ(f->tensor_info("w").shape(), (Shape{6, 4}));
  EXPECT_EQ(f->tensor_info("w").numel(), 24);
  // The view keeps the mapping alive after the file object is gone.
  f.reset();
  EXPECT_EQ(t.to_f32(), vals);
}

// The writer's bytes equal a layout built by hand from the specification.
TEST(GGUFRoundTrip, WriterMatchesSpecLayout) {
  TempDir d;
  const auto a = random_bytes(6 * 2 * 2, 11);  // F16 ne=[6,2]: 24 bytes
  const auto b = random_bytes(18 * 2, 12);     // Q4_0 ne=[64]: 36 bytes
  Bytes ref;
  ref.header(2, 3);
  ref.kv_str("general.architecture", "llama");
  ref.str("general.alignment").u32(4).u32(16);
  ref.str("tok").u32(9).u32(8).u64(2).str("a").str("bc");
  ref.tensor("a", {6, 2}, 1, 0);
  ref.tensor("b", {64}, 2, 32);
  ref.pad_to(16);
  ref.raw(a.data(), a.size()).pad_to(16);
  ref.raw(b.data(), b.size()).pad_to(16);

  const std::string path = d.file("spec.gguf");
  GGUFWriter w(path);
  w.add_string("general.architecture", "llama");
  w.add("general.alignment", GGUFValue::u32(16));
  w.add_string_array("tok", {"a", "bc"});
  w.add_tensor_info("a", GGMLType::F16, {6, 2});
  w.add_tensor_info("b", GGMLType::Q4_0, {64});
  w.write_tensor_data("a", a.data(), a.size());
  w.write_tensor_data("b", b.data(), b.size());
  w.finish();
  EXPECT_EQ(slurp(path), ref.b);
  // And the reader accepts the hand-built bytes.
  auto f = GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(ref.b.data()), ref.b.size(), "ref");
  EXPECT_EQ(f->tensor_info("b").offset, 32u);
  EXPECT_EQ(f->alignment(), 16u);
}

TEST(GGUFWriter, RejectsMisuse) {
  TempDir d;
  const std::string path = d.file("w.gguf");
  const auto data = random_bytes(64, 5);
  auto expect_error = [&](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(path), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  };
  {
    GGUFWriter w(path);
    w.add_u32("k", 1);
    expect_error([&] { w.add_u32("k", 2); }, "duplicate key");
    expect_error([&] { w.add("general.alignment", GGUFValue::u32(24)); }, "power of two");
    expect_error([&] { w.add("general.alignment", GGUFValue::u64(32)); }, "expected u32");
    w.add_tensor_info("x", GGMLType::F32, {8, 2});  // 64 bytes
    w.add_tensor_info("y", GGMLType::F32, {4});     // 16 bytes
    expect_error([&] { w.add_tensor_info("x", GGMLType::F32, {1}); }, "duplicate tensor name");
    expect_error([&] { w.add_tensor_info("q", GGMLType::Q4_K, {100}); }, "block size");
    expect_error([&] { w.add_tensor_info("z", GGMLType::F32, {1, 1, 1, 1, 1}); }, "1..4 dims");
    expect_error([&] { w.add_tensor_info(std::string(64, 'n'), GGMLType::F32, {1}); }, "fewer than 64");
    expect_error([&] { w.add_tensor_info("bad", static_cast<GGMLType>(4), {1}); }, "unknown ggml type");
    expect_error([&] { w.write_tensor_data("y", data.data(), 16); }, "out of order");
    expect_error([&] { w.write_tensor_data("nope", data.data(), 16); }, "not declared");
    expect_error([&] { w.write_tensor_data("x", data.data(), 65); }, "at most 64");
    w.write_tensor_data("x", data.data(), 32);
    expect_error([&] { w.write_tensor_data("y", data.data(), 16); }, "incomplete");
    expect_error([&] { w.add_u32("late", 1); }, "after tensor data");
    expect_error([&] { w.add_tensor_info("late", GGMLType::F32, {1}); }, "after tensor data");
    expect_error([&] { w.finish(); }, "incomplete");
    EXPECT_FALSE(file_exists(path));
  }
  // Destroyed without finish(): neither the file nor a temporary remains.
  EXPECT_FALSE(file_exists(path));
  EXPECT_TRUE(fs::is_empty(d.path()));

  GGUFWriter w(path);
  w.add_tensor_info("x", GGMLType::F32, {4});
  w.write_tensor_data("x", data.data(), 16);
  expect_error([&] { w.write_tensor_data("x", data.data(), 16); }, "written twice");
  w.finish();
  EXPECT_TRUE(file_exists(path));
  expect_error([&] { w.finish(); }, "after finish");
  EXPECT_EQ(GGUFFile::open(path)->tensors().size(), 1u);
}

// Writing is streamed with large writes: a 256 MiB tensor must not take much longer than a copy.
TEST(GGUFWriter, LargeTensorThroughput) {
  TempDir d;
  const size_t n = size_t{64} << 20;  // 64 Mi f32 = 256 MiB
  std::vector<uint8_t> data = random_bytes(1 << 20, 9);
  data.resize(n * 4);
  for (size_t o = 1 << 20; o < data.size(); o += 1 << 20) std::memcpy(&data[o], data.data(), 1 << 20);
  const std::string path = d.file("big.gguf");
  const auto t0 = std::chrono::steady_clock::now();
  {
    GGUFWriter w(path);
    w.add_tensor_info("big", GGMLType::F32, {1024, static_cast<int64_t>(n / 1024)});
    for (size_t o = 0; o < data.size(); o += 32 << 20) w.write_tensor_data("big", data.data() + o, 32 << 20);
    w.finish();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto f = GGUFFile::open(path);
  const auto raw = f->raw_tensor("big");
  ASSERT_EQ(raw.bytes.size(), data.size());
  EXPECT_EQ(std::memcmp(raw.bytes.data(), data.data(), data.size()), 0);
  RecordProperty("write_MiB_per_s", static_cast<int>(256 / secs));
  EXPECT_LT(secs, 30.0);
}

// ------------------------------------------------------------------------------------------
// Real llama.cpp files

TEST(GGUFShared, TinyStoriesF16) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const std::string path = testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf");
  auto f = GGUFFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->tensors().size(), 20u);
  int n_f16 = 0, n_f32 = 0;
  for (const auto& t : f->tensors()) {
    n_f16 += t.type == GGMLType::F16;
    n_f32 += t.type == GGMLType::F32;
  }
  EXPECT_EQ(n_f16, 15);
  EXPECT_EQ(n_f32, 5);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_u32("llama.block_count"), 2u);
  EXPECT_EQ(f->get_u64("llama.embedding_length"), 128u);
  EXPECT_EQ(f->get_u32("llama.feed_forward_length"), 384u);
  EXPECT_NEAR(f->get_f32("llama.rope.freq_base"), 10000.f, 1e-3);
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f->metadata().front().key, "general.architecture");
  const auto& tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 2048u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<|start_story|>");
  EXPECT_EQ(f->get("tokenizer.ggml.scores").as_f32_array().size(), 2048u);
  EXPECT_EQ(f->get("tokenizer.ggml.token_type").as_i32_array()[0], 3);

  const auto& emb = f->tensor_info("token_embd.weight");
  EXPECT_EQ(emb.ne, (std::vector<int64_t>{128, 2048}));
  EXPECT_EQ(emb.shape(), (Shape{2048, 128}));
  const Tensor e = f->tensor("token_embd.weight");  // [2048, 128] f16
  EXPECT_EQ(e.dtype, DType::F16);
  EXPECT_EQ(e.shape, (Shape{2048, 128}));
  EXPECT_EQ(f->tensor("blk.0.ffn_down.weight").shape, (Shape{128, 384}));
  EXPECT_EQ(f->tensor("blk.0.attn_k.weight").shape, (Shape{64, 128}));
  const Tensor norm = f->tensor("output_norm.weight");  // [128] f32
  EXPECT_EQ(norm.dtype, DType::F32);
  EXPECT_EQ(norm.shape, (Shape{128}));
  for (float v : norm.to_f32()) EXPECT_TRUE(std::isfinite(v));
  // The last tensor ends exactly at the end of the file.
  const auto& last = f->tensor_info("output_norm.weight");
  EXPECT_EQ(f->data_offset() + last.offset + last.nbytes, f->file_size());

  // Re-writing everything through GGUFWriter reproduces the file byte for byte.
  TempDir d;
  const std::string out = d.file("copy.gguf");
  {
    GGUFWriter w(out);
    for (const auto& kv : f->metadata()) w.add(kv.key, kv.value);
    for (const auto& t : f->tensors()) w.add_tensor_info(t.name, t.type, t.ne);
    for (const auto& t : f->tensors()) {
      const auto raw = f->raw_tensor(t);
      w.write_tensor_data(t.name, raw.bytes.data(), raw.bytes.size());
    }
    w.finish();
  }
  EXPECT_EQ(slurp(out), slurp(path));
}

TEST(GGUFShared, VocabOnlyFiles) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const std::string dir = testing::shared_path("models/llamacpp-vocab");
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".gguf") continue;
    SCOPED_TRACE(e.path().string());
    auto f = GGUFFile::open(e.path().string());
    ++n;
    EXPECT_TRUE(f->tensors().empty());
    EXPECT_FALSE(f->get_string("general.architecture").empty());
    EXPECT_GT(f->get_string_array("tokenizer.ggml.tokens").size(), 1000u);
    EXPECT_FALSE(f->get_string("tokenizer.ggml.model").empty());
  }
  EXPECT_GE(n, 4);
  auto gpt2 = GGUFFile::open(dir + "/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(gpt2->get_string_array("tokenizer.ggml.tokens").size(), 50257u);
  EXPECT_EQ(gpt2->get_string_array("tokenizer.ggml.merges").size(), 50000u);
  EXPECT_EQ(gpt2->get_u32("tokenizer.ggml.bos_token_id"), 50256u);
}

// ------------------------------------------------------------------------------------------
// Malformed inputs

// A small valid file: 2 kvs, 2 F32 tensors.
std::string small_valid_file() {
  Bytes b;
  b.header(2, 2);
  b.kv_str("general.architecture", "llama");
  b.str("a").u32(9).u32(8).u64(2).str("x").str("yz");
  b.tensor("t0", {4}, 0, 0);
  b.tensor("t1", {2, 2}, 0, 32);
  b.pad_to(32);
  for (int i = 0; i < 4; ++i) b.f32(1.5f + static_cast<float>(i));
  b.pad_to(32);
  for (int i = 0; i < 4; ++i) b.f32(-2.f * static_cast<float>(i) + 0.25f);
  return b.b;
}

TEST(GGUFMalformed, ValidBaseParses) {
  const std::string s = small_valid_file();
  auto f = GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "base.gguf");
  EXPECT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensor("t1").to_f32(), (std::vector<float>{0.25f, -1.75f, -3.75f, -5.75f}));
}

TEST(GGUFMalformed, EachRejectedWithFileName) {
  TempDir d;
  const std::string good = small_valid_file();

  std::string bad_magic = good;
  bad_magic[0] = 'X';
  expect_malformed(d, "bad_magic.gguf", bad_magic, "expected magic \"GGUF\"");
  expect_malformed(d, "tiny.gguf", "GG", "too small");

  for (uint32_t v : {1u, 4u, 0u}) {
    std::string s = good;
    std::memcpy(&s[4], &v, 4);
    expect_malformed(d, "version" + std::to_string(v) + ".gguf", s, "version");
  }
  {
    std::string s = good;
    const uint32_t be = 0x03000000u;
    std::memcpy(&s[4], &be, 4);
    expect_malformed(d, "big_endian.gguf", s, "big-endian");
  }
  {
    std::string s = good;
    const uint64_t n = 1000000;
    std::memcpy(&s[8], &n, 8);
    expect_malformed(d, "tensor_count.gguf", s, "tensor count 1000000 is larger than the file could hold");
  }
  {
    std::string s = good;
    const uint64_t n = ~uint64_t{0};
    std::memcpy(&s[16], &n, 8);
    expect_malformed(d, "kv_count.gguf", s, "is larger than the file could hold");
  }
  {
    Bytes b;
    b.header(0, 1).str("k").u32(8).u64(1000).raw("abc", 3);
    expect_malformed(d, "string_len.gguf", b.b, "string length 1000");
  }
  {
    Bytes b;
    b.header(0, 1).str("k").u32(9).u32(8).u64(uint64_t{1} << 60);
    expect_malformed(d, "string_array_len.gguf", b.b, "strings");
  }
  {
    Bytes b;
    b.header(0, 1).str("k").u32(9).u32(10).u64(uint64_t{1} << 61);
    expect_malformed(d, "u64_array_len.gguf", b.b, "array of");
  }
  {
    Bytes b;
    b.header(0, 1).str("k").u32(9).u32(9).u64(1).u32(4).u64(0);
    expect_malformed(d, "nested.gguf", b.b, "nested arrays");
  }
  {
    Bytes b;
    b.header(0, 1).str("k").u32(13).u32(0);
    expect_malformed(d, "value_type.gguf", b.b, "unknown value type 13");
  }
  {
    Bytes b;
    b.header(0, 1).str("k").u32(7).u8(2).raw("pad-pad-pad-pad", 15);
    expect_malformed(d, "bool.gguf", b.b, "0 or 1");
  }
  {
    Bytes b;
    b.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
    expect_malformed(d, "dup_key.gguf", b.b, "duplicate key");
  }
  {
    Bytes b;
    b.header(1, 1).kv_u32("general.alignment", 24).tensor("t", {4}, 0, 0).pad_to(32);
    b.b.append(64, '\x11');
    expect_malformed(d, "alignment.gguf", b.b, "power of two");
  }
  {
    Bytes b;
    b.header(1, 1).kv_u32("general.alignment", 0).tensor("t", {4}, 0, 0).pad_to(32);
    b.b.append(64, '\x11');
    expect_malformed(d, "alignment0.gguf", b.b, "power of two");
  }
  {
    Bytes b;
    b.header(0, 1).str("general.alignment").u32(10).u64(32);
    expect_malformed(d, "alignment_type.gguf", b.b, "expected u32, found u64");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {4}, 0, 16).pad_to(32);
    b.b.append(64, '\x22');
    expect_malformed(d, "unaligned.gguf", b.b, "not a multiple of the alignment");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {64}, 0, 0).pad_to(32);
    b.b.append(100, '\x33');  // needs 256
    expect_malformed(d, "past_end.gguf", b.b, "extends past the end of the file");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {4}, 0, ~uint64_t{0} - 31);  // offset + size overflows
    b.pad_to(32);
    expect_malformed(d, "offset_overflow.gguf", b.b, "extends past the end of the file");
  }
  {
    Bytes b;
    b.header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad_to(32);
    b.b.append(64, '\x44');
    expect_malformed(d, "dup_tensor.gguf", b.b, "duplicate tensor name");
  }
  {
    Bytes b;
    b.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad_to(32);
    b.b.append(64, '\x55');
    expect_malformed(d, "overlap.gguf", b.b, "overlaps");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {}, 0, 0).pad_to(32);
    expect_malformed(d, "ndims0.gguf", b.b, "n_dims must be 1..4, found 0");
    Bytes c;
    c.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad_to(32);
    expect_malformed(d, "ndims5.gguf", c.b, "n_dims must be 1..4, found 5");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {4}, 4, 0).pad_to(32);
    b.b.append(32, '\x66');
    expect_malformed(d, "ggml_type.gguf", b.b, "unknown ggml type id 4");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {100}, 12, 0).pad_to(32);
    b.b.append(1024, '\x77');
    expect_malformed(d, "block.gguf", b.b, "not a multiple of the Q4_K block size 256");
  }
  {
    Bytes b;
    b.header(1, 0).tensor("t", {~uint64_t{0}}, 0, 0).pad_to(32);
    expect_malformed(d, "huge_dim.gguf", b.b, "exceeds");
    Bytes c;
    c.header(1, 0).tensor("t", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0).pad_to(32);
    expect_malformed(d, "overflow_dims.gguf", c.b, "overflows");
  }
}

TEST(GGUFMalformed, EveryTruncationThrows) {
  TempDir d;
  const std::string good = small_valid_file();
  // Every strict prefix of the valid file is malformed (the last tensor ends at the end of the file).
  for (size_t n = 0; n < good.size(); ++n) {
    const std::string name = "prefix" + std::to_string(n) + ".gguf";
    try {
      GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(good.data()), n, name);
      ADD_FAILURE() << "prefix " << n << " parsed";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  // A few via real files too (mmap of an empty file included).
  for (size_t n : {size_t{0}, size_t{3}, size_t{23}, size_t{24}, good.size() / 2, good.size() - 1})
    expect_malformed(d, "trunc" + std::to_string(n) + ".gguf", good.substr(0, n), "");
  // Same for a real-size file, at many prefix lengths.
  {
    TempDir t;
    const auto ts = planned_tensors(99);
    write_planned(t.file("x.gguf"), ts, 32);
    const std::string full = slurp(t.file("x.gguf"));
    auto base = GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(full.data()), full.size(), "full");
    const uint64_t need = base->data_offset() + base->tensors().back().offset + base->tensors().back().nbytes;
    for (size_t n = 0; n < need; n += 1 + n / 16) {
      const std::string name = "px" + std::to_string(n);
      EXPECT_THROW(
          {
            try {
              GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(full.data()), n, name);
            } catch (const Error& e) {
              EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
              throw;
            }
          },
          Error)
          << n;
    }
  }
}

// Random byte flips of a valid file never crash: each parse either succeeds or throws moetool::Error.
TEST(GGUFMalformed, RandomCorruptionNeverCrashes) {
  const std::string good = small_valid_file();
  std::mt19937_64 rng(1234);
  int ok = 0, rejected = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) s[rng() % s.size()] = static_cast<char>(rng());
    try {
      auto f = GGUFFile::parse_buffer(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "fuzz.gguf");
      for (const auto& t : f->tensors()) {
        const auto raw = f->raw_tensor(t);
        volatile uint8_t sink = 0;
        for (uint8_t byte : raw.bytes) sink = sink + byte;
      }
      ++ok;
    } catch (const Error& e) {
      ASSERT_NE(std::string(e.what()).find("fuzz.gguf"), std::string::npos) << e.what();
      ++rejected;
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace moetool
