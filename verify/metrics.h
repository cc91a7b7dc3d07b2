// verify/metrics.h — the statistics of `moetool verify`: per-token KL divergence, same-top-1, Δp and
// perplexities of a candidate model against its base, accumulated chunk by chunk from float32 logits
// and summarised exactly as llama.cpp's `llama-perplexity --kl-divergence` prints them; per-layer
// hidden-state similarity; and the pass/fail thresholds that CI applies.
//
// Conventions (shared with llama.cpp's tools/perplexity/perplexity.cpp):
// - A chunk is n_tokens token ids and the logits rows [n_tokens, vocab] the model produced for them;
//   row i predicts tokens[i+1]. Rows i in [first_scored, n_tokens-1) are scored.
// - llama.cpp scores only the second half of each chunk: first_scored = n_ctx/2
//   (ScoredPositions::kSecondHalf). moetool's default scores every token after the first:
//   first_scored = 0, i.e. rows 0 … n_tokens-2 predicting tokens 1 … n_tokens-1
//   (ScoredPositions::kAllAfterFirst).
// - Per scored row, in double precision with a max-shifted (stable) log-softmax:
//     KLD  = Σ_j p_base,j (log p_base,j − log p_cand,j)
//     top1 = argmax(base) == argmax(cand)   (first index of the maximum, as llama.cpp)
//     Δp   = p_cand(next) − p_base(next)
//     nll  = −log p_cand(next), nll_base = −log p_base(next)          (PPL = exp(mean nll))
// - "± σ" is llama.cpp's standard error of the mean: sqrt((Σx²/n − (Σx/n)²)/(n−1)), reported as 0
//   when n ≤ 10; covariances are 0 when n < 10. Percentiles interpolate linearly between closest
//   ranks: p = f·(n−1), value = (1−frac(p))·v[⌊p⌋] + frac(p)·v[⌊p⌋+1] on the sorted values
//   (the median is the 0.5 percentile, which equals llama.cpp's median).
// - Δp, its percentiles, RMS Δp and the same-top fraction are stored as fractions (llama.cpp prints
//   them ×100 with a "%"); cor(ln PPL(Q), ln PPL(base)) likewise.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace moetool {

// Which rows of a chunk are scored (see above).
enum class ScoredPositions { kAllAfterFirst, kSecondHalf };
// "all-after-first" | "second-half".
const char* scored_positions_name(ScoredPositions s);
// Parses the names above; throws moetool::Error on anything else.
ScoredPositions parse_scored_positions(const std::string& s);
// The first scored row of a chunk of n_ctx tokens: 0 for kAllAfterFirst, n_ctx/2 for kSecondHalf.
int64_t first_scored_row(ScoredPositions s, int64_t n_ctx);

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A value with its uncertainty ("value ± unc").
struct Estimate {
  double value = kNaN;
  double unc = kNaN;
};

// One point of a distribution: q in [0, 1] (1 = maximum, 0.5 = median, 0 = minimum).
struct Quantile {
  double q = 0;
  double value = kNaN;
};

// Linear-interpolation percentile of ascending `sorted` values (llama.cpp's definition):
// fraction ≤ 0 → front, ≥ 1 → back. Throws moetool::Error when `sorted` is empty.
double percentile_sorted(const std::vector<double>& sorted, double fraction);
// The value stored for q in `qs` (exact match), NaN if absent.
double quantile_value(const std::vector<Quantile>& qs, double q);
// Stable key for a quantile: 1 → "max", 0 → "min", 0.5 → "median", 0.999 → "p99_9", 0.01 → "p1".
std::string quantile_key(double q);
// Label as llama.cpp prints it: "Maximum", "99.9%", "Median", " 5.0%", "Minimum".
std::string quantile_label(double q);

// The KLD quantiles llama.cpp prints, in its order.
inline const std::vector<double> kKldQuantiles = {1.0, 0.999, 0.99, 0.95, 0.90, 0.5, 0.10, 0.05, 0.01, 0.001, 0.0};
// The Δp quantiles llama.cpp prints, in its order.
inline const std::vector<double> kDeltaPQuantiles = {1.0,  0.999, 0.99, 0.95, 0.90, 0.75, 0.5,
                                                     0.25, 0.10,  0.05, 0.01, 0.001, 0.0};

// Histogram of per-token KLD for plots. Bins are [edges[i], edges[i+1]) (the last one closed);
// log-spaced (5 per decade, at most 8 decades) when log_x. Values below edges.front() — zero, the
// tiny negative values rounding can give, or far-below-range values — are counted in `below`.
// edges is empty when no value is positive (e.g. identical models): then everything is `below`.
struct KldHistogram {
  bool log_x = true;
  std::vector<double> edges;
  std::vector<int64_t> counts;
  int64_t below = 0;
};

// llama.cpp's per-chunk line: running values over all chunks so far.
struct ChunkProgress {
  int64_t chunk = 0;  // 1-based
  int64_t tokens = 0;  // scored tokens so far
  Estimate ppl_q, ln_ppl_ratio, kld, rms_dp, same_top;
  // This chunk alone (not running): its scored tokens and their mean KLD and same-top fraction.
  int64_t chunk_tokens = 0;
  double chunk_kld = kNaN, chunk_same_top = kNaN;
};

// One of the scored positions with the largest KLD (VerifyStats::worst), for the report to show
// with its context. Top tokens are the argmax of each model's row (−1: not known).
struct WorstToken {
  int64_t chunk = 0;     // 0-based chunk index
  int64_t position = 0;  // row in the chunk: it predicts token position + 1
  double kld = kNaN;
  int32_t top_base = -1, top_cand = -1;
  double p_top_base = kNaN, p_top_cand = kNaN;  // each model's probability of its own top token
  // Filled by the verify job when a tokenizer is at hand: the decoded text before the prediction,
  // the actual next token and the two top tokens.
  std::string context, next, top_base_text, top_cand_text;
};

struct VerifyStats {
  int64_t n_tokens = 0;  // scored tokens
  int64_t n_chunks = 0;
  // Perplexity statistics.
  Estimate ppl_q, ppl_base;
  double cor_ln_ppl = kNaN;  // cor(ln PPL(Q), ln PPL(base)) as a fraction
  Estimate ln_ppl_ratio;     // mean ln(PPL(Q)/PPL(base))
  Estimate ppl_ratio;        // PPL(Q)/PPL(base)
  Estimate ppl_diff;         // PPL(Q) − PPL(base)
  // KL divergence statistics.
  Estimate kld;                    // mean KLD ± σ
  std::vector<Quantile> kld_q;     // at kKldQuantiles
  KldHistogram kld_histogram;
  // Token probability statistics (fractions).
  Estimate delta_p;                // mean Δp ± σ
  std::vector<Quantile> delta_p_q; // at kDeltaPQuantiles
  Estimate rms_delta_p;            // RMS Δp ± σ
  Estimate same_top;               // same-top-1 fraction ± σ
  std::vector<ChunkProgress> chunks;
  // The kWorstTokens scored positions with the largest KLD, largest first (ties: earliest first).
  std::vector<WorstToken> worst;
  // Fraction of (token, MoE layer) pairs whose chosen expert set differs from the base's
  // (verify/routing.h; set by the verify job, NaN when routing was not compared).
  double route_mismatch = kNaN;
};

// How many worst positions VerifyStats::worst keeps.
inline constexpr size_t kWorstTokens = 10;

// The checks of one chunk's scoring (VerifyAccumulator::add_chunk and score_rows_on_device): data
// given, at least one token, a positive vocabulary, first_scored in [0, n_tokens − 1], and every
// scored row's next token in the vocabulary. Throws moetool::Error naming what is wrong.
void check_chunk_args(const float* base, const float* cand, const int32_t* tokens, int64_t n_tokens, int64_t vocab,
                      int64_t first_scored);

// One scored position (the per-row quantities of the conventions above).
struct ScoredRow {
  double kld = 0, dp = 0, nll = 0, nll_base = 0;
  bool same_top = false;
  int32_t top_base = -1, top_cand = -1;         // argmax of each row (−1: not known)
  double p_top_base = kNaN, p_top_cand = kNaN;  // their probabilities under their own model
};

// Accumulates the statistics chunk by chunk. Rows are evaluated in parallel (OpenMP) and reduced in
// order, so results do not depend on the thread count.
class VerifyAccumulator {
 public:
  // Base given as log-probabilities of the scored rows only: rows[(i − first_scored)·vocab + j] is
  // log p_base,j at scored position i (what KldBaseFile::log_probs yields). Terms whose base
  // log-probability is ≤ `floor` are left out of the KLD sum, as llama.cpp does (its file clamps
  // everything 16 nats below a row's maximum to one value); −inf keeps every term.
  struct BaseLogProbs {
    const float* rows = nullptr;
    double floor = -16.0;
  };

  // Scores rows [first_scored, n_tokens-1) of one chunk of base and candidate logits, both
  // [n_tokens, vocab] row-major. Throws moetool::Error on bad sizes, a token id outside [0, vocab)
  // or NaN/+inf logits (−inf, a masked token, is allowed).
  void add_chunk(const float* base_logits, const float* cand_logits, const int32_t* tokens, int64_t n_tokens,
                 int64_t vocab, int64_t first_scored);
  // Same, with the base given as log-probabilities of the scored rows (see BaseLogProbs).
  void add_chunk(const BaseLogProbs& base, const float* cand_logits, const int32_t* tokens, int64_t n_tokens,
                 int64_t vocab, int64_t first_scored);

  // One chunk whose rows were scored elsewhere (on the GPU: verify/score_device.h), in row order;
  // rows[r] is position first_scored + r of the chunk (VerifyStats::worst records it).
  void add_rows(const std::vector<ScoredRow>& rows, int64_t first_scored = 0);
  // The worst positions so far (the kWorstTokens largest KLDs), largest first.
  const std::vector<WorstToken>& worst() const { return worst_; }
  // Sets the top tokens of worst()[i] (the GPU path finds them after scoring).
  void set_worst_tops(size_t i, int32_t top_base, double p_base, int32_t top_cand, double p_cand);

  int64_t n_tokens() const { return count_; }
  int64_t n_chunks() const { return n_chunks_; }
  // The summary (callable at any time; the accumulator is unchanged).
  VerifyStats finish() const;

 private:
  int64_t count_ = 0, n_chunks_ = 0, n_same_top_ = 0;
  double sum_nll_ = 0, sum_nll2_ = 0, sum_nll_base_ = 0, sum_nll_base2_ = 0, sum_nll_nll_base_ = 0;
  double sum_kld_ = 0, sum_kld2_ = 0, sum_dp_ = 0, sum_dp2_ = 0, sum_dp4_ = 0;
  std::vector<double> kld_values_, dp_values_;
  std::vector<ChunkProgress> chunks_;
  std::vector<WorstToken> worst_;
};

// Per-layer comparison of hidden states (e.g. the residual stream after each layer).
struct LayerSimilarity {
  int64_t layer = 0;
  int64_t rows = 0;            // vectors compared
  double mean_cosine = kNaN;   // mean over rows of a·b / (‖a‖‖b‖) (1 when both are zero, 0 when one is)
  double min_cosine = kNaN;
  double nmse = kNaN;          // Σ‖a − b‖² / Σ‖a‖² over all rows (base = a)
};

// One row's comparison: a·b / (‖a‖‖b‖) with the conventions above, ‖a − b‖², ‖a‖².
struct RowSimilarity {
  double cosine = 0, err2 = 0, ref2 = 0;
};
// The same in double for rows a[n, d], b[n, d] (what add() accumulates).
std::vector<RowSimilarity> row_similarities(const float* a, const float* b, int64_t n, int64_t d);

class HiddenStateComparison {
 public:
  // base and cand are [n, H] row-major float32. Throws moetool::Error when H differs from an earlier
  // call for the same layer or on non-positive sizes.
  void add(int64_t layer, const float* base, const float* cand, int64_t n, int64_t H);
  // Rows compared elsewhere (on the GPU), in row order; the same checks as add().
  void add_rows(int64_t layer, int64_t H, const std::vector<RowSimilarity>& rows);
  // Layers in ascending order.
  std::vector<LayerSimilarity> finish() const;

 private:
  struct Acc {
    int64_t H = 0, rows = 0;
    double sum_cos = 0, min_cos = 1, sum_err2 = 0, sum_ref2 = 0;
  };
  std::map<int64_t, Acc> layers_;
};

// CI thresholds. max_kld applies to the mean KLD, min_top1 to the same-top-1 fraction (0.9 = 90 %),
// max_ppl_ratio to PPL(Q)/PPL(base).
// max_route_mismatch to VerifyStats::route_mismatch (0.05 = 5 % of (token, MoE layer) pairs).
struct Thresholds {
  std::optional<double> max_kld, min_top1, max_ppl_ratio, max_route_mismatch;
  bool any() const { return max_kld || min_top1 || max_ppl_ratio || max_route_mismatch; }
};

struct ThresholdResult {
  std::string name;    // "max_kld" | "min_top1" | "max_ppl_ratio" | "max_route_mismatch"
  std::string metric;  // "mean KLD" | "same top p" | "PPL(Q)/PPL(base)" | "route mismatch"
  double limit = kNaN, value = kNaN;
  bool passed = false;  // NaN values never pass
  std::string message;  // one human-readable line
};

// One result per configured threshold, in the order max_kld, min_top1, max_ppl_ratio,
// max_route_mismatch.
std::vector<ThresholdResult> evaluate(const VerifyStats& s, const Thresholds& t);
// One line per missed threshold, plus one when no token was scored; empty = pass.
std::vector<std::string> check(const VerifyStats& s, const Thresholds& t);

}  // namespace moetool
