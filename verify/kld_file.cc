// verify/kld_file.cc — llama.cpp KL-divergence base files: encoding, streaming writer, validating
// memory-mapped reader (see kld_file.h).
#include "verify/kld_file.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>

#include "core/error.h"
#include "core/mapped_file.h"

namespace moetool {

namespace {

constexpr char kMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
constexpr uint64_t kHeaderBytes = 8 + 4 + 4 + 4;
constexpr int64_t kMaxI32 = std::numeric_limits<int32_t>::max();

// llama.cpp's nearest_int(): x + 1.5·2^23 rounds to the nearest integer, ties to even, for the
// range used here (0 … 65535). std::nearbyint in the default rounding mode gives the same result and
// cannot be fused with the preceding multiplication.
inline int nearest_int(float x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

int64_t kld_row_words(int64_t n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }
int64_t kld_rows_per_chunk(int64_t n_ctx) { return n_ctx - 1 - n_ctx / 2; }
int64_t kld_first_row(int64_t n_ctx) { return n_ctx / 2; }

void kld_encode_row(const float* logits, int64_t n_vocab, uint16_t* words) {
  float max_logit = logits[0];
  float min_logit = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) {
    max_logit = std::max(max_logit, logits[i]);
    min_logit = std::min(min_logit, logits[i]);
  }
  min_logit = std::max(min_logit, max_logit - 16);
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - max_logit);  // float expf
  const float log_sum_exp = static_cast<float>(std::log(sum_exp));
  const float min_log_prob = min_logit - max_logit - log_sum_exp;
  const float scale = (max_logit - min_logit) / 65535.f;
  std::memcpy(words, &scale, sizeof(float));
  std::memcpy(words + 2, &min_log_prob, sizeof(float));
  uint16_t* q = words + 4;
  if (scale != 0.0f) {
    const float inv_scale = 1 / scale;
    for (int64_t i = 0; i < n_vocab; ++i)
      q[i] = logits[i] > min_logit ? static_cast<uint16_t>(nearest_int(inv_scale * (logits[i] - min_logit))) : 0;
  } else {
    std::memset(q, 0, static_cast<size_t>(n_vocab) * sizeof(uint16_t));
  }
  // Padding word (odd n_vocab): llama.cpp's buffer is zero-initialised and never written there.
  for (int64_t i = n_vocab; i < kld_row_words(n_vocab) - 4; ++i) q[i] = 0;
}

void kld_decode_row(const uint16_t* words, int64_t n_vocab, float* log_probs) {
  float scale, min_log_prob;
  std::memcpy(&scale, words, sizeof(float));
  std::memcpy(&min_log_prob, words + 2, sizeof(float));
  const uint16_t* q = words + 4;
  for (int64_t i = 0; i < n_vocab; ++i) {
    // Rounded twice (no FMA); a build of llama.cpp that fuses `scale*q + min` differs by ≤ 1 ulp.
    const float t = scale * static_cast<float>(q[i]);
    log_probs[i] = t + min_log_prob;
  }
}

// ---------------------------------------------------------------------------------------------

KldBaseWriter::KldBaseWriter(std::string path, int64_t n_ctx, int64_t n_vocab, const std::vector<int32_t>& tokens)
    : path_(std::move(path)), n_ctx_(n_ctx), n_vocab_(n_vocab) {
  check(n_ctx >= 3 && n_ctx <= kMaxI32, path_, ": KL-divergence base file: n_ctx ", n_ctx,
        " out of range (at least 3, so that each chunk has a scored row)");
  check(n_vocab >= 1 && n_vocab <= kMaxI32, path_, ": KL-divergence base file: n_vocab ", n_vocab, " out of range");
  check(!tokens.empty() && tokens.size() % static_cast<size_t>(n_ctx) == 0, path_, ": KL-divergence base file: ",
        tokens.size(), " tokens is not a positive multiple of n_ctx ", n_ctx);
  n_chunk_ = static_cast<int64_t>(tokens.size()) / n_ctx;
  check(n_chunk_ <= kMaxI32, path_, ": KL-divergence base file: too many chunks (", n_chunk_, ")");
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < n_vocab, path_, ": KL-divergence base file: token id ", tokens[i],
          " at index ", i, " outside the vocabulary [0, ", n_vocab, ")");
  tmp_ = str(path_, ".tmp-", ::getpid());
  out_.open(tmp_, std::ios::binary | std::ios::trunc);
  if (!out_) fail(tmp_, ": cannot open for writing");
  const uint32_t ctx32 = static_cast<uint32_t>(n_ctx);
  const int32_t vocab32 = static_cast<int32_t>(n_vocab), chunk32 = static_cast<int32_t>(n_chunk_);
  out_.write(kMagic, 8);
  out_.write(reinterpret_cast<const char*>(&ctx32), 4);
  out_.write(reinterpret_cast<const char*>(&vocab32), 4);
  out_.write(reinterpret_cast<const char*>(&chunk32), 4);
  out_.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 4));
  if (!out_) {
    out_.close();
    std::remove(tmp_.c_str());
    fail(tmp_, ": write failed (disk full?)");
  }
}

KldBaseWriter::~KldBaseWriter() {
  if (!finished_) {
    out_.close();
    if (!tmp_.empty()) std::remove(tmp_.c_str());
  }
}

void KldBaseWriter::add_chunk(const float* logits, int64_t n_rows) {
  check(!finished_, path_, ": KL-divergence base file: add_chunk after finish");
  check(written_ < n_chunk_, path_, ": KL-divergence base file: more than the ", n_chunk_, " chunks announced");
  const int64_t rows = kld_rows_per_chunk(n_ctx_);
  check(n_rows == n_ctx_ || n_rows == rows, path_, ": KL-divergence base file: chunk ", written_, " has ", n_rows,
        " rows of logits; expected ", n_ctx_, " (whole chunk) or ", rows, " (stored rows)");
  check(logits != nullptr, path_, ": KL-divergence base file: null logits");
  const float* first = n_rows == n_ctx_ ? logits + kld_first_row(n_ctx_) * n_vocab_ : logits;
  const int64_t nv = kld_row_words(n_vocab_);
  std::vector<uint16_t> buf(static_cast<size_t>(rows * nv));
#pragma omp parallel for schedule(static) if (rows > 1 && rows * n_vocab_ > 65536)
  for (int64_t r = 0; r < rows; ++r) kld_encode_row(first + r * n_vocab_, n_vocab_, buf.data() + r * nv);
  out_.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size() * sizeof(uint16_t)));
  if (!out_) fail(tmp_, ": write failed (disk full?)");
  ++written_;
}

void KldBaseWriter::finish() {
  check(!finished_, path_, ": KL-divergence base file: finish called twice");
  check(written_ == n_chunk_, path_, ": KL-divergence base file: ", written_, " of ", n_chunk_,
        " chunks written");
  out_.flush();
  out_.close();
  if (!out_) fail(tmp_, ": write failed (disk full?)");
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) fail(path_, ": cannot rename from temporary file: ", ec.message());
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------

KldBaseFile KldBaseFile::open(const std::string& path) {
  KldBaseFile f;
  f.path_ = path;
  f.map_ = MappedFile::open(path);
  const uint8_t* d = f.map_->data();
  const uint64_t size = f.map_->size();
  const char* what = ": not a llama.cpp KL-divergence base file";
  if (size < 8 || std::memcmp(d, kMagic, 8) != 0) fail(path, what, " (bad magic; expected \"_logits_\")");
  if (size < kHeaderBytes)
    fail(path, ": truncated KL-divergence base file: ", size, " bytes, the header alone needs ", kHeaderBytes);
  uint32_t n_ctx;
  int32_t n_vocab, n_chunk;
  std::memcpy(&n_ctx, d + 8, 4);
  std::memcpy(&n_vocab, d + 12, 4);
  std::memcpy(&n_chunk, d + 16, 4);
  if (n_ctx < 3 || n_ctx > static_cast<uint32_t>(kMaxI32))
    fail(path, ": KL-divergence base file: n_ctx ", n_ctx, " out of range (at least 3)");
  if (n_vocab < 1) fail(path, ": KL-divergence base file: n_vocab ", n_vocab, " must be positive");
  if (n_chunk < 1) fail(path, ": KL-divergence base file: n_chunk ", n_chunk, " must be positive");
  f.n_ctx_ = n_ctx;
  f.n_vocab_ = n_vocab;
  f.n_chunk_ = n_chunk;
  using u128 = unsigned __int128;
  const u128 tok_bytes = u128(4) * n_ctx * static_cast<uint64_t>(n_chunk);
  const u128 row_bytes = u128(2) * static_cast<uint64_t>(kld_row_words(n_vocab));
  const u128 expected =
      u128(kHeaderBytes) + tok_bytes + u128(static_cast<uint64_t>(n_chunk)) *
                                           static_cast<uint64_t>(kld_rows_per_chunk(n_ctx)) * row_bytes;
  auto u128_str = [](u128 v) {
    std::string s;
    do {
      s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
      v /= 10;
    } while (v != 0);
    return s;
  };
  if (u128(size) < expected)
    fail(path, ": truncated KL-divergence base file: ", size, " bytes, but n_ctx ", n_ctx, ", n_vocab ", n_vocab,
         ", n_chunk ", n_chunk, " need ", u128_str(expected));
  if (u128(size) > expected)
    fail(path, ": KL-divergence base file size inconsistent with its header: ", size, " bytes, but n_ctx ", n_ctx,
         ", n_vocab ", n_vocab, ", n_chunk ", n_chunk, " need exactly ", u128_str(expected), " (",
         u128_str(u128(size) - expected), " trailing bytes)");
  f.tokens_ = reinterpret_cast<const int32_t*>(d + kHeaderBytes);
  f.rows_ = d + kHeaderBytes + static_cast<uint64_t>(tok_bytes);
  const int64_t n_tok = f.n_ctx_ * f.n_chunk_;
  for (int64_t i = 0; i < n_tok; ++i) {
    const int32_t t = f.tokens_[i];
    if (t < 0 || t >= n_vocab)
      fail(path, ": KL-divergence base file: token id ", t, " (chunk ", i / f.n_ctx_, ", position ", i % f.n_ctx_,
           ") outside the vocabulary [0, ", n_vocab, ")");
  }
  return f;
}

const int32_t* KldBaseFile::chunk_tokens(int64_t chunk) const {
  check(chunk >= 0 && chunk < n_chunk_, path_, ": chunk ", chunk, " out of range [0, ", n_chunk_, ")");
  return tokens_ + chunk * n_ctx_;
}

std::vector<int32_t> KldBaseFile::tokens() const {
  return std::vector<int32_t>(tokens_, tokens_ + n_ctx_ * n_chunk_);
}

const uint16_t* KldBaseFile::row_words(int64_t chunk, int64_t r) const {
  check(chunk >= 0 && chunk < n_chunk_, path_, ": chunk ", chunk, " out of range [0, ", n_chunk_, ")");
  check(r >= 0 && r < rows_per_chunk(), path_, ": row ", r, " out of range [0, ", rows_per_chunk(), ")");
  const uint64_t words = static_cast<uint64_t>(kld_row_words(n_vocab_));
  const uint64_t idx = static_cast<uint64_t>(chunk) * static_cast<uint64_t>(rows_per_chunk()) + static_cast<uint64_t>(r);
  return reinterpret_cast<const uint16_t*>(rows_ + idx * words * 2);
}

void KldBaseFile::log_probs(int64_t chunk, int64_t r0, int64_t n, float* out) const {
  check(r0 >= 0 && n >= 0 && r0 + n <= rows_per_chunk(), path_, ": rows [", r0, ", ", r0 + n,
        ") out of range [0, ", rows_per_chunk(), ")");
  for (int64_t r = r0; r < r0 + n; ++r) {
    const uint16_t* w = row_words(chunk, r);
    float scale, min_log_prob;
    std::memcpy(&scale, w, sizeof(float));
    std::memcpy(&min_log_prob, w + 2, sizeof(float));
    if (!std::isfinite(scale) || scale < 0 || !std::isfinite(min_log_prob))
      fail(path_, ": KL-divergence base file: chunk ", chunk, ", row ", r, ": invalid scale ", scale,
           " / min log-probability ", min_log_prob);
  }
  const uint16_t* first = n > 0 ? row_words(chunk, r0) : nullptr;
  const int64_t words = kld_row_words(n_vocab_);
#pragma omp parallel for schedule(static) if (n > 1 && n * n_vocab_ > 65536)
  for (int64_t r = 0; r < n; ++r) kld_decode_row(first + r * words, n_vocab_, out + r * n_vocab_);
}

std::vector<float> KldBaseFile::log_probs(int64_t chunk) const {
  std::vector<float> out(static_cast<size_t>(rows_per_chunk() * n_vocab_));
  log_probs(chunk, 0, rows_per_chunk(), out.data());
  return out;
}

}  // namespace moetool
