// formats/df11.cc — Huffman-coded BF16 exponents: codec and checkpoint layout (see df11.h).
#include "formats/df11.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <queue>

#include "core/error.h"

namespace moetool {
namespace {

// Optimal code lengths for the counts (Huffman), limited to kDf11MaxCodeBits by flattening the counts
// until the tree is shallow enough (as zlib does): at most ~2 % longer codes on weight exponents.
std::vector<uint8_t> code_lengths(std::vector<uint64_t> counts) {
  std::vector<uint8_t> len(256, 0);
  int used = 0, only = 0;
  for (int s = 0; s < 256; ++s)
    if (counts[s]) ++used, only = s;
  if (used == 0) return len;
  if (used == 1) {
    len[only] = 1;
    return len;
  }
  for (;;) {
    // nodes: leaves 0..255, internal 256.. ; parent links give the depth.
    std::vector<int> parent(512, -1);
    using Item = std::pair<uint64_t, int>;
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> pq;
    for (int s = 0; s < 256; ++s)
      if (counts[s]) pq.push({counts[s], s});
    int next = 256;
    while (pq.size() > 1) {
      const auto a = pq.top();
      pq.pop();
      const auto b = pq.top();
      pq.pop();
      parent[a.second] = parent[b.second] = next;
      pq.push({a.first + b.first, next++});
    }
    int maxlen = 0;
    for (int s = 0; s < 256; ++s) {
      if (!counts[s]) continue;
      int d = 0;
      for (int p = parent[s]; p != -1; p = parent[p]) ++d;
      len[s] = static_cast<uint8_t>(d);
      maxlen = std::max(maxlen, d);
    }
    if (maxlen <= kDf11MaxCodeBits) return len;
    for (auto& c : counts)
      if (c) c = std::max<uint64_t>(1, c >> 1);
  }
}

// Canonical codes (shorter first, then by symbol). Throws naming `what` unless the lengths are at most
// kDf11MaxCodeBits and satisfy Kraft's inequality (a prefix code).
std::vector<uint32_t> canonical_codes(const uint8_t* len, const std::string& what) {
  uint64_t kraft = 0;  // in units of 2^-16
  int bl_count[kDf11MaxCodeBits + 1] = {0};
  for (int s = 0; s < 256; ++s) {
    if (len[s] > kDf11MaxCodeBits)
      fail(what, ": DF11 code length ", int(len[s]), " for exponent ", s, " (at most ", kDf11MaxCodeBits, ")");
    if (len[s]) ++bl_count[len[s]], kraft += 1ull << (kDf11MaxCodeBits - len[s]);
  }
  if (kraft > (1ull << kDf11MaxCodeBits)) fail(what, ": DF11 code lengths are not a prefix code (Kraft sum > 1)");
  std::vector<uint32_t> code(256, 0);
  uint32_t c = 0, next[kDf11MaxCodeBits + 2] = {0};
  for (int l = 1; l <= kDf11MaxCodeBits; ++l) {
    c = (c + static_cast<uint32_t>(bl_count[l - 1])) << 1;
    next[l] = c;
  }
  for (int s = 0; s < 256; ++s)
    if (len[s]) code[s] = next[len[s]]++;
  return code;
}

}  // namespace

DF11Encoded df11_encode(const uint16_t* v, int64_t n, int64_t block) {
  if (block <= 0) fail("DF11: block size ", block, " must be positive");
  DF11Encoded e;
  e.n = n, e.block = block;
  e.sm.resize(static_cast<size_t>(n));
  std::vector<uint64_t> counts(256, 0);
#pragma omp parallel
  {
    std::vector<uint64_t> local(256, 0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      ++local[(v[i] >> 7) & 0xff];
      e.sm[static_cast<size_t>(i)] = static_cast<uint8_t>(((v[i] >> 8) & 0x80) | (v[i] & 0x7f));
    }
#pragma omp critical(moetool_df11_counts)
    for (int s = 0; s < 256; ++s) counts[s] += local[s];
  }
  e.lengths = code_lengths(counts);
  const std::vector<uint32_t> code = canonical_codes(e.lengths.data(), "DF11 encoder");
  const int64_t nb = (n + block - 1) / block;
  std::vector<std::vector<uint8_t>> parts(static_cast<size_t>(nb));
  e.hash.resize(static_cast<size_t>(nb));
#pragma omp parallel for schedule(dynamic)
  for (int64_t b = 0; b < nb; ++b) {
    e.hash[static_cast<size_t>(b)] = df11_block_hash(v + b * block, std::min(n - b * block, block));
    auto& out = parts[static_cast<size_t>(b)];
    uint64_t acc = 0;
    int bits = 0;
    for (int64_t i = b * block, end = std::min(n, i + block); i < end; ++i) {
      const int s = (v[i] >> 7) & 0xff;
      acc = (acc << e.lengths[s]) | code[s];
      bits += e.lengths[s];
      while (bits >= 8) out.push_back(static_cast<uint8_t>(acc >> (bits -= 8)));
    }
    if (bits) out.push_back(static_cast<uint8_t>(acc << (8 - bits)));
  }
  e.offsets.assign(static_cast<size_t>(nb + 1), 0);
  for (int64_t b = 0; b < nb; ++b)
    e.offsets[static_cast<size_t>(b + 1)] = e.offsets[static_cast<size_t>(b)] + static_cast<int64_t>(parts[static_cast<size_t>(b)].size());
  e.exp.resize(static_cast<size_t>(e.offsets.back()));
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b)
    std::copy(parts[static_cast<size_t>(b)].begin(), parts[static_cast<size_t>(b)].end(),
              e.exp.begin() + e.offsets[static_cast<size_t>(b)]);
  return e;
}

int64_t df11_exp_bytes(const uint16_t* v, int64_t n, int64_t block) {
  if (block <= 0) fail("DF11: block size ", block, " must be positive");
  std::vector<uint64_t> counts(256, 0);
  for (int64_t i = 0; i < n; ++i) ++counts[(v[i] >> 7) & 0xff];
  const std::vector<uint8_t> len = code_lengths(counts);
  int64_t bytes = 0;
  for (int64_t b = 0; b * block < n; ++b) {
    int64_t bits = 0;
    for (int64_t i = b * block, end = std::min(n, i + block); i < end; ++i) bits += len[(v[i] >> 7) & 0xff];
    bytes += (bits + 7) / 8;
  }
  return bytes;
}

std::vector<uint16_t> df11_decode_table(const uint8_t* lengths, const std::string& what) {
  const std::vector<uint32_t> code = canonical_codes(lengths, what);
  std::vector<uint16_t> table(1u << kDf11MaxCodeBits, 0);
  for (int s = 0; s < 256; ++s)
    if (lengths[s]) {
      const int sh = kDf11MaxCodeBits - lengths[s];
      std::fill(table.begin() + (code[s] << sh), table.begin() + ((code[s] + 1) << sh),
                static_cast<uint16_t>((lengths[s] << 8) | s));
    }
  return table;
}

void df11_check_blocks(const int64_t* offsets, int64_t nb, int64_t exp_bytes, int64_t n, int64_t block,
                       const std::string& what) {
  if (block <= 0 || nb != (n + block - 1) / block)
    fail(what, ": DF11 has ", nb, " blocks for ", n, " values of block ", block, " (expected ",
         (n + block - 1) / std::max<int64_t>(block, 1), ")");
  if (offsets[0] != 0 || offsets[nb] != exp_bytes)
    fail(what, ": DF11 block offsets span [", offsets[0], ", ", offsets[nb], "], expected [0, ", exp_bytes, "]");
  for (int64_t b = 0; b < nb; ++b)
    if (offsets[b + 1] < offsets[b]) fail(what, ": DF11 block offsets decrease at block ", b);
}

void df11_block_error(const std::string& what, int64_t block_index) {
  fail(what, ": DF11 stream corrupt in block ", block_index,
       " (an invalid code, a block whose code ends early or late, or values that fail its hash)");
}

void df11_decode(const uint8_t* lengths, const int64_t* offsets, int64_t nb, const uint8_t* exp, int64_t exp_bytes,
                 const uint8_t* sm, int64_t n, int64_t block, uint16_t* out, const std::string& what,
                 const uint64_t* hash) {
  df11_check_blocks(offsets, nb, exp_bytes, n, block, what);
  const std::vector<uint16_t> table = df11_decode_table(lengths, what);
  std::atomic<int64_t> bad{-1};
#pragma omp parallel for schedule(dynamic)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t first = b * block, cnt = std::min(n - first, block);
    const int32_t st = df11::decode_block(table.data(), exp + offsets[b], exp + offsets[b + 1], sm + first, cnt,
                                          out + first);
    if (st != df11::kBlockOk || (hash && df11::block_hash(out + first, cnt) != hash[b])) {
      int64_t expect = -1;
      bad.compare_exchange_strong(expect, b);
    }
  }
  if (bad >= 0) df11_block_error(what, bad.load());
}

std::optional<int64_t> df11_block_of(const nlohmann::json& raw, const std::string& what) {
  if (!raw.is_object() || !raw.contains("moetool_df11")) return std::nullopt;
  const auto& d = raw["moetool_df11"];
  if (!d.is_object() || d.value("format", std::string()) != "moetool.df11/1")
    fail(what, ": config.json moetool_df11 is not {\"format\": \"moetool.df11/1\", ...}");
  const auto b = d.value("block", int64_t{0});
  if (b <= 0) fail(what, ": config.json moetool_df11.block is ", d.value("block", nlohmann::json()).dump(), ", expected a positive integer");
  return b;
}

nlohmann::ordered_json df11_config_json(int64_t block) {
  return {{"format", "moetool.df11/1"}, {"block", block}, {"dtype", "bfloat16"}};
}

std::vector<std::string> df11_tensor_names(const std::string& n) {
  return {n + ".df11_lengths", n + ".df11_offsets", n + ".df11_exp", n + ".df11_sm", n + ".df11_shape",
          n + ".df11_hash"};
}

bool df11_stored(const Checkpoint& ck, const std::string& name) { return ck.has(name + ".df11_exp"); }

Shape df11_check(const Checkpoint& ck, const std::string& name, int64_t block) {
  const auto nm = df11_tensor_names(name);
  const std::string what = str(ck.dir(), ": '", name, "' (DF11)");
  for (const auto& t : nm)
    if (!ck.has(t)) fail(what, ": '", t, "' is missing");
  const DType want[6] = {DType::U8, DType::I64, DType::U8, DType::U8, DType::I64, DType::I64};
  for (int i = 0; i < 6; ++i)
    if (ck.info(nm[i]).dtype != want[i] || ck.info(nm[i]).shape.size() != 1)
      fail(what, ": '", nm[i], "' expected a 1-D ", dtype_name(want[i]), ", got ", dtype_name(ck.info(nm[i]).dtype), " ",
           shape_str(ck.info(nm[i]).shape));
  const Tensor st = ck.get(nm[4]);
  Shape shape(st.as<const int64_t>(), st.as<const int64_t>() + st.numel());
  for (int64_t d : shape)
    if (d < 0) fail(what, ": '", nm[4], "' holds a negative dimension");
  const int64_t n = numel(shape), nb = (n + block - 1) / block;
  if (ck.info(nm[0]).shape[0] != 256) fail(what, ": '", nm[0], "' expected [256]");
  if (ck.info(nm[3]).shape[0] != n) fail(what, ": '", nm[3], "' expected [", n, "] for shape ", shape_str(shape));
  if (ck.info(nm[1]).shape[0] != nb + 1) fail(what, ": '", nm[1], "' expected [", nb + 1, "] (", nb, " blocks of ", block, ")");
  if (ck.info(nm[5]).shape[0] != nb) fail(what, ": '", nm[5], "' expected [", nb, "] (", nb, " blocks of ", block, ")");
  return shape;
}

Tensor df11_read(const Checkpoint& ck, const std::string& name, int64_t block) {
  const Shape shape = df11_check(ck, name, block);
  const auto nm = df11_tensor_names(name);
  const Tensor len = ck.get(nm[0]), off = ck.get(nm[1]), exp = ck.get(nm[2]), sm = ck.get(nm[3]), h = ck.get(nm[5]);
  Tensor out = Tensor::zeros(DType::BF16, shape);
  df11_decode(len.data, off.as<const int64_t>(), off.numel() - 1, exp.data, exp.numel(), sm.data, out.numel(), block,
              out.as<uint16_t>(), str(ck.dir(), ": '", name, "'"), h.as<const uint64_t>());
  return out;
}

}  // namespace moetool
