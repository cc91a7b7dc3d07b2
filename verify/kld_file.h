// verify/kld_file.h — llama.cpp's KL-divergence base file (`llama-perplexity --kl-divergence-base FILE`,
// read back by `--kl-divergence`): writer and validating zero-copy reader, so moetool and llama.cpp can
// score against each other's base runs.
//
// Layout (llama.cpp tools/perplexity/perplexity.cpp: perplexity() writes, kl_divergence() reads),
// all little-endian, no padding between fields:
//   char     magic[8] = "_logits_"
//   uint32   n_ctx                 (written from an int32)
//   int32    n_vocab
//   int32    n_chunk
//   int32    tokens[n_chunk · n_ctx]   (the evaluation tokens as tokenized; llama.cpp substitutes BOS
//                                       for a chunk's first token only while decoding)
//   per chunk, rows_per_chunk = n_ctx − 1 − n_ctx/2 rows (rows n_ctx/2 … n_ctx−2 of the chunk: the
//   second half; row i predicts token i+1), each of nv = 2·⌈n_vocab/2⌉ + 4 uint16 words:
//     float  scale                 (words 0–1)
//     float  min_log_prob          (words 2–3)
//     uint16 q[n_vocab]            (then one zero word of padding when n_vocab is odd)
// Encoding of a row of logits l (float arithmetic, as llama.cpp):
//   max = max l;  min = max(min l, max − 16);  lse = (float) log(Σ_j (double) expf(l_j − max))
//   min_log_prob = min − max − lse;  scale = (max − min)/65535
//   q_j = l_j > min ? nearest_int((l_j − min)·(1/scale)) : 0      (all q = 0 when scale == 0)
// Decoding: log p_j = scale·q_j + min_log_prob. The error is at most scale/2 ≤ 16/65535/2 ≈ 1.2e-4
// (plus float rounding) for log-probabilities above the clamp; everything 16 nats or more below the
// row's maximum decodes to min_log_prob.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace moetool {

class MappedFile;

// uint16 words per stored row: 2·⌈n_vocab/2⌉ + 4.
int64_t kld_row_words(int64_t n_vocab);
// Rows stored per chunk: n_ctx − 1 − n_ctx/2.
int64_t kld_rows_per_chunk(int64_t n_ctx);
// First stored row of a chunk: n_ctx/2 (= first_scored_row(ScoredPositions::kSecondHalf, n_ctx)).
int64_t kld_first_row(int64_t n_ctx);
// Encodes one row of logits into kld_row_words(n_vocab) words, bit-exactly as llama.cpp.
void kld_encode_row(const float* logits, int64_t n_vocab, uint16_t* words);
// Decodes one stored row into n_vocab log-probabilities.
void kld_decode_row(const uint16_t* words, int64_t n_vocab, float* log_probs);

// Streams a base file to "<path>.tmp-<pid>" and renames it into place on finish(), so an
// interrupted run never leaves a file that looks complete.
class KldBaseWriter {
 public:
  // tokens: the n_chunk·n_ctx evaluation tokens (n_chunk = tokens.size()/n_ctx, which must divide
  // exactly). Throws moetool::Error naming the file on bad sizes or token ids outside [0, n_vocab).
  KldBaseWriter(std::string path, int64_t n_ctx, int64_t n_vocab, const std::vector<int32_t>& tokens);
  ~KldBaseWriter();  // removes the temporary file unless finished
  KldBaseWriter(const KldBaseWriter&) = delete;
  KldBaseWriter& operator=(const KldBaseWriter&) = delete;

  int64_t n_chunk() const { return n_chunk_; }
  int64_t chunks_written() const { return written_; }
  // The next chunk's base logits, row-major [n_rows, n_vocab]: either the whole chunk (n_rows = n_ctx;
  // rows n_ctx/2 … n_ctx−2 are stored) or only the stored rows (n_rows = kld_rows_per_chunk(n_ctx)).
  void add_chunk(const float* logits, int64_t n_rows);
  // Checks that every chunk was written, closes and renames the file into place.
  void finish();

 private:
  std::string path_, tmp_;
  int64_t n_ctx_ = 0, n_vocab_ = 0, n_chunk_ = 0, written_ = 0;
  std::ofstream out_;
  bool finished_ = false;
};

// A validated, memory-mapped base file.
class KldBaseFile {
 public:
  // Maps and validates `path`: magic, header values (n_ctx ≥ 3 so that a chunk has a scored row,
  // n_vocab ≥ 1, n_chunk ≥ 1), exact file size (truncated or trailing bytes), token ids in
  // [0, n_vocab). Row headers are checked when rows are decoded. Throws moetool::Error naming the file.
  static KldBaseFile open(const std::string& path);

  const std::string& path() const { return path_; }
  int64_t n_ctx() const { return n_ctx_; }
  int64_t n_vocab() const { return n_vocab_; }
  int64_t n_chunk() const { return n_chunk_; }
  int64_t first_row() const { return kld_first_row(n_ctx_); }        // = first scored row
  int64_t rows_per_chunk() const { return kld_rows_per_chunk(n_ctx_); }
  // The n_ctx tokens of a chunk.
  const int32_t* chunk_tokens(int64_t chunk) const;
  std::vector<int32_t> tokens() const;  // all n_chunk·n_ctx tokens
  // Raw stored row r (0 … rows_per_chunk−1) of a chunk: kld_row_words(n_vocab) words.
  const uint16_t* row_words(int64_t chunk, int64_t r) const;
  // Decoded log-probabilities of rows [r0, r0+n) of a chunk into out[n, n_vocab]. Throws
  // moetool::Error naming the file, chunk and row for a non-finite or negative scale or a
  // non-finite min_log_prob.
  void log_probs(int64_t chunk, int64_t r0, int64_t n, float* out) const;
  // All rows_per_chunk rows of a chunk, [rows_per_chunk, n_vocab] — the BaseLogProbs rows that
  // VerifyAccumulator::add_chunk expects with first_scored = first_row().
  std::vector<float> log_probs(int64_t chunk) const;

 private:
  std::shared_ptr<MappedFile> map_;
  std::string path_;
  int64_t n_ctx_ = 0, n_vocab_ = 0, n_chunk_ = 0;
  const int32_t* tokens_ = nullptr;  // 4-aligned: the mapping is page-aligned, tokens start at byte 20
  const uint8_t* rows_ = nullptr;
};

}  // namespace moetool
