// tests/df11_test.cc — DF11 (formats/df11.h, compress/quantize_df11.h): bit-exact round trips on
// random BF16 (every exponent, specials, sizes around the block), the code within one bit of the
// exponent entropy (Huffman's bound) and at most 16 bits long even for skewed counts, the planned size
// equal to the coded one, a real model coded and decoded bit for bit with logits identical to its
// BF16 model's, and corrupt streams rejected with an error naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "formats/checkpoint.h"
#include "formats/df11.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "engine/weights.h"
#include "kernels/linear.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool::testing {
namespace {

// Trained-weight-like BF16: N(0, σ) with σ varying, plus every exponent value, ±0, ±Inf, NaNs with
// payloads and subnormals.
std::vector<uint16_t> weights_like(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = f32_to_bf16(nd(g) * 0.02f * (1 + (i % 7)));
  const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc1, 0xffff, 0x0001, 0x807f, 0x7f7f};
  for (size_t k = 0; k < std::size(special) && static_cast<int64_t>(k) < n; ++k) v[k * 3 % v.size()] = special[k];
  for (int e = 0; e < 256 && e < n; ++e) v[static_cast<size_t>((e * 7919) % n)] = static_cast<uint16_t>((e << 7) | (e & 0x7f));
  return v;
}

std::vector<uint16_t> round_trip(const std::vector<uint16_t>& v, int64_t block) {
  const int64_t n = static_cast<int64_t>(v.size());
  const DF11Encoded e = df11_encode(v.data(), n, block);
  EXPECT_EQ(static_cast<int64_t>(e.exp.size()), df11_exp_bytes(v.data(), n, block));
  std::vector<uint16_t> out(v.size(), 0xdead);
  df11_decode(e.lengths.data(), e.offsets.data(), static_cast<int64_t>(e.offsets.size()) - 1, e.exp.data(),
              static_cast<int64_t>(e.exp.size()), e.sm.data(), n, block, out.data(), "t", e.hash.data());
  return out;
}

TEST(Df11, RoundTripIsBitExact) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{4096}, int64_t{4097}, int64_t{100003}})
    for (int64_t block : {int64_t{256}, int64_t{4096}, int64_t{65536}}) {
      const auto v = weights_like(n, static_cast<uint32_t>(n + block));
      EXPECT_EQ(round_trip(v, block), v) << n << " values, block " << block;
    }
  const std::vector<uint16_t> one(1000, 0x3f80);  // a single exponent value: 1-bit codes
  EXPECT_EQ(round_trip(one, 256), one);
}

// Huffman: H ≤ mean code length < H + 1 (H: the exponent entropy); block padding adds < 8 bits a block.
TEST(Df11, CodeLengthIsWithinOneBitOfTheEntropy) {
  const int64_t n = 1 << 20, block = 65536;
  const auto v = weights_like(n, 3);
  std::map<int, int64_t> c;
  for (uint16_t x : v) ++c[(x >> 7) & 0xff];
  double H = 0;
  for (auto [s, k] : c) H -= static_cast<double>(k) / n * std::log2(static_cast<double>(k) / n);
  const DF11Encoded e = df11_encode(v.data(), n, block);
  const double bits = 8.0 * static_cast<double>(e.exp.size()) / n;
  EXPECT_GE(bits, H);
  EXPECT_LT(bits, H + 1.0 + 8.0 * (n / block) / n);
  std::cout << "[df11] exponent entropy " << H << " bits, coded " << bits << " bits, stored "
            << static_cast<double>(e.bytes()) / (2.0 * n) << " of BF16\n";
}

// Fibonacci-like counts would need codes of ~30 bits; they are limited to 16 and still decode.
TEST(Df11, CodesAreLimitedTo16Bits) {
  std::vector<uint16_t> v;
  uint64_t a = 1, b = 1;
  for (int e = 0; e < 30; ++e) {
    for (uint64_t k = 0; k < a; ++k) v.push_back(static_cast<uint16_t>(((e + 90) << 7) | (k & 0x7f)));
    const uint64_t t = a + b;
    a = b, b = t;
    if (v.size() > 3000000) break;
  }
  const DF11Encoded e = df11_encode(v.data(), static_cast<int64_t>(v.size()), 65536);
  for (uint8_t l : e.lengths) EXPECT_LE(l, kDf11MaxCodeBits);
  EXPECT_EQ(round_trip(v, 65536), v);
}

TEST(Df11, CorruptStreamsAreRejected) {
  const auto v = weights_like(20000, 9);
  const DF11Encoded e = df11_encode(v.data(), 20000, 4096);
  std::vector<uint16_t> out(v.size());
  auto decode = [&](DF11Encoded x) {
    return error_of([&] {
      df11_decode(x.lengths.data(), x.offsets.data(), static_cast<int64_t>(x.offsets.size()) - 1, x.exp.data(),
                  static_cast<int64_t>(x.exp.size()), x.sm.data(), x.n, x.block, out.data(), "ck: 'w'", x.hash.data());
    });
  };
  DF11Encoded x = e;
  for (auto& l : x.lengths) l = l ? 1 : 0;  // every present exponent 1 bit long: Kraft sum > 1
  EXPECT_NE(decode(x).find("ck: 'w': DF11 code lengths are not a prefix code"), std::string::npos);
  x = e;
  x.lengths[200] = 17;
  EXPECT_NE(decode(x).find("code length 17"), std::string::npos);
  x = e;
  x.exp[x.offsets[2] + 5] ^= 0x5a;  // flipped bits inside block 2
  EXPECT_NE(decode(x).find("corrupt in block 2"), std::string::npos);
  x = e;
  x.exp.pop_back();
  x.offsets.back() -= 1;  // the last block cut short
  EXPECT_NE(decode(x).find("corrupt in block 4"), std::string::npos);
  x = e;
  std::swap(x.offsets[1], x.offsets[2]);
  EXPECT_NE(decode(x).find("offsets decrease"), std::string::npos);
  x = e;
  x.sm[100] ^= 1;  // a mantissa bit: only the hash sees it
  EXPECT_NE(decode(x).find("corrupt in block 0"), std::string::npos);
}

// The shared block decoder (formats/df11_block.h, what the GPU runs too) on its own: one block
// decodes to the values; a code cut short, a stray byte after the code and a prefix no code starts
// with give their statuses. The hash is the little-endian 64-bit-word hash the files store (a
// memcpy-based reference: the GPU composes the words from four values).
TEST(Df11, SharedBlockDecoderAndHash) {
  const auto v = weights_like(3000, 21);
  const DF11Encoded e = df11_encode(v.data(), 3000, 1024);
  const auto table = df11_decode_table(e.lengths.data(), "t");
  std::vector<uint16_t> out(1024);
  const uint8_t* b1 = e.exp.data() + e.offsets[1];
  const uint8_t* b1_end = e.exp.data() + e.offsets[2];
  EXPECT_EQ(df11::decode_block(table.data(), b1, b1_end, e.sm.data() + 1024, 1024, out.data()), df11::kBlockOk);
  EXPECT_TRUE(std::equal(out.begin(), out.end(), v.begin() + 1024));
  EXPECT_EQ(df11::decode_block(table.data(), b1, b1_end - 3, e.sm.data() + 1024, 1024, out.data()), df11::kBlockBadCode);
  std::vector<uint8_t> longer(b1, b1_end);
  longer.push_back(0);
  EXPECT_EQ(df11::decode_block(table.data(), longer.data(), longer.data() + longer.size(), e.sm.data() + 1024, 1024,
                               out.data()),
            df11::kBlockBadLength);
  std::vector<uint16_t> holes(table);  // the table with every entry of the first code removed
  const uint16_t first = holes[static_cast<size_t>(b1[0]) << 8];
  for (auto& t : holes)
    if (t == first) t = 0;
  EXPECT_EQ(df11::decode_block(holes.data(), b1, b1_end, e.sm.data() + 1024, 1024, out.data()), df11::kBlockBadCode);
  for (int64_t n : {0, 1, 3, 4, 7, 1024, 1027}) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(n);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      uint64_t w;
      std::memcpy(&w, v.data() + i, 8);
      h = (h ^ w) * 0xff51afd7ed558ccdull;
      h ^= h >> 32;
    }
    for (; i < n; ++i) h = ((h ^ v[static_cast<size_t>(i)]) * 0xc4ceb9fe1a85ec53ull) ^ (h >> 29);
    EXPECT_EQ(df11::block_hash(v.data(), n), h) << n;
  }
}

// The engine's weights of a DF11 checkpoint are DF11 matrices (the coded tensors handed to a backend
// that decodes them itself — the CUDA engine), multiplying exactly as the BF16 model's matrices.
TEST(Df11, WeightsAreMultipliedAsCodedMatrices) {
  TempDir td;
  const std::string src = synth_in(td, "m", "mixtral", 6, "tiny");
  ASSERT_EQ(run_moetool({"quantize", src, "-o", td.file("bf16"), "--format", "bf16", "-q"}).exit_code, 0);
  ASSERT_EQ(run_moetool({"quantize", src, "-o", td.file("df11"), "--format", "df11", "--df11-block", "512", "-q"}).exit_code, 0);
  auto a = open_weights(td.file("bf16")), b = open_weights(td.file("df11"));
  int checked = 0;
  for (auto [r, l, e] : {std::tuple{Role::ExpertGate, int64_t{1}, int64_t{2}}, std::tuple{Role::ExpertDown, int64_t{0}, int64_t{3}},
                         std::tuple{Role::Q, int64_t{1}, int64_t{-1}}, std::tuple{Role::Router, int64_t{0}, int64_t{-1}}}) {
    const auto ma = a->matrix(r, l, e), mb = b->matrix(r, l, e);
    ASSERT_EQ(mb->storage(), "DF11") << role_name(r);
    ASSERT_NE(mb->packed(), nullptr);
    EXPECT_EQ(mb->packed()->kind, PackedWeight::Kind::Df11);
    const int64_t R = ma->rows(), C = ma->cols();
    // The 256-byte length table and per-block offsets/hashes: smaller than BF16 beyond a few KiB.
    if (R * C >= 4096) EXPECT_LT(mb->stored_bytes(), ma->stored_bytes()) << role_name(r);
    std::vector<float> da(static_cast<size_t>(R * C)), db(da.size());
    ma->to_dense(da.data());
    mb->to_dense(db.data());
    EXPECT_EQ(da, db) << role_name(r);
    std::vector<float> X(static_cast<size_t>(5 * C)), ya(static_cast<size_t>(5 * R)), yb(ya.size());
    std::mt19937 g(7);
    std::normal_distribution<float> nd;
    for (auto& x : X) x = nd(g);
    ma->matmul(X.data(), 5, ya.data());
    mb->matmul(X.data(), 5, yb.data());
    EXPECT_EQ(ya, yb) << role_name(r);
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

// tinymoe-3domain as its BF16 model and DF11-coded: every tensor decodes to the BF16 bytes, the
// checker's logits are identical, and the file is ~2/3 of the BF16 one.
TEST(Df11, RealModelRoundTripsAndRunsIdentically) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir td;
  const std::string m = shared_path("models/tinymoe-3domain");
  ASSERT_EQ(run_moetool({"quantize", m, "-o", td.file("bf16"), "--format", "bf16", "-q"}).exit_code, 0);
  const auto r = run_moetool({"quantize", m, "-o", td.file("df11"), "--format", "df11", "--df11-block", "4096", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_LT(j["ratio"].get<double>(), 0.70);
  EXPECT_GT(j["ratio"].get<double>(), 0.60);
  const Model a = Model::open(td.file("bf16")), b = Model::open(td.file("df11"));
  ASSERT_TRUE(b.df11());
  EXPECT_TRUE(b.check().empty()) << b.check().front().message();
  int64_t tensors = 0;
  for (const auto& s : a.family().tensors(a.config())) {
    const Tensor x = a.weight(s.role, s.layer, s.expert), y = b.weight(s.role, s.layer, s.expert);
    ASSERT_EQ(y.dtype, DType::BF16) << s.name;
    ASSERT_EQ(x.shape, y.shape) << s.name;
    ASSERT_EQ(0, std::memcmp(x.data, y.data, x.nbytes())) << s.name;
    ++tensors;
  }
  EXPECT_GT(tensors, 60);
  const std::string toks = "1,300,45,9,1023,77,5,600,12,88,2000,3";
  ASSERT_EQ(run_moetool({"logits", td.file("bf16"), "--tokens", toks, "-o", td.file("a.npy")}).exit_code, 0);
  ASSERT_EQ(run_moetool({"logits", td.file("df11"), "--tokens", toks, "-o", td.file("b.npy")}).exit_code, 0);
  EXPECT_EQ(read_file(td.file("a.npy")), read_file(td.file("b.npy")));
}

TEST(Df11, BadInputIsRefused) {
  TempDir td;
  const std::string src = synth_in(td, "m", "mixtral", 4, "tiny"), out = td.file("o");
  expect_bad_input({{{"quantize", src, "-o", out, "--format", "df11", "--df11-block", "7"}, "--df11-block 7"},
                    {{"quantize", src, "-o", out, "--format", "df11", "--bits", "8"}, "--bits does not apply to --format df11"},
                    {{"quantize", src, "-o", out, "--format", "gptq", "--df11-block", "4096"},
                     "--df11-block applies to --format df11"}},
                   {out});
  ASSERT_EQ(run_moetool({"quantize", src, "-o", td.file("d"), "--format", "df11", "--df11-block", "256", "-q"}).exit_code, 0);
  // One block of one tensor corrupted on disk: the checker names the tensor.
  const std::string name = "model.layers.1.block_sparse_moe.experts.2.w1.weight";
  const Checkpoint ck = Checkpoint::open(td.file("d"));
  std::filesystem::create_directories(td.file("bad"));
  std::filesystem::copy(td.file("d/config.json"), td.file("bad/config.json"));
  std::vector<TensorSpec> specs;
  for (const auto& n : ck.names()) specs.push_back({n, ck.info(n).dtype, ck.info(n).shape});
  {
    SafetensorsWriter w(td.file("bad"), specs, {{"format", "pt"}});
    for (const auto& sp : specs) {
      Tensor t = ck.get(sp.name).clone();
      if (sp.name == name + ".df11_sm") t.data[7] ^= 0x40;
      w.write(sp.name, t.data, t.nbytes());
    }
    w.finish();
  }
  expect_bad_input({{{"logits", td.file("bad"), "--tokens", "1,2,3", "-o", td.file("x.npy")}, "'" + name + "': DF11 stream corrupt in block 0"}},
                   {td.file("x.npy")});
  auto cfg = nlohmann::json::parse(read_file(td.file("d/config.json")));
  cfg["moetool_df11"]["block"] = 512;  // another block size: the offsets no longer fit
  write_bytes(td.file("d/config.json"), cfg.dump());
  EXPECT_FALSE(Model::open(td.file("d")).check().empty());
}

}  // namespace
}  // namespace moetool::testing
