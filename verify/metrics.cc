// verify/metrics.cc — KLD / PPL / Δp / same-top statistics, hidden-state similarity and thresholds
// (see metrics.h; formulas follow llama.cpp's tools/perplexity/perplexity.cpp, kl_divergence()).
#include "verify/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace moetool {

const char* scored_positions_name(ScoredPositions s) {
  return s == ScoredPositions::kSecondHalf ? "second-half" : "all-after-first";
}

ScoredPositions parse_scored_positions(const std::string& s) {
  if (s == "second-half") return ScoredPositions::kSecondHalf;
  if (s == "all-after-first") return ScoredPositions::kAllAfterFirst;
  fail("scored positions: expected \"all-after-first\" or \"second-half\", got \"", s, "\"");
}

int64_t first_scored_row(ScoredPositions s, int64_t n_ctx) {
  return s == ScoredPositions::kSecondHalf ? n_ctx / 2 : 0;
}

double percentile_sorted(const std::vector<double>& v, double fraction) {
  check(!v.empty(), "percentile of an empty set of values");
  if (fraction <= 0) return v.front();
  if (fraction >= 1) return v.back();
  double p = fraction * static_cast<double>(v.size() - 1);
  const size_t ip = static_cast<size_t>(p);
  p -= static_cast<double>(ip);
  return (1 - p) * v[ip] + p * v[std::min(ip + 1, v.size() - 1)];
}

double quantile_value(const std::vector<Quantile>& qs, double q) {
  for (const auto& x : qs)
    if (x.q == q) return x.value;
  return kNaN;
}

// q·100 with at most one decimal, e.g. 99.9, 5, 0.1.
static std::string pct_digits(double q) {
  const double p = std::round(q * 1000.0) / 10.0;
  char buf[32];
  if (p == std::floor(p))
    std::snprintf(buf, sizeof buf, "%.0f", p);
  else
    std::snprintf(buf, sizeof buf, "%.1f", p);
  return buf;
}

std::string quantile_key(double q) {
  if (q >= 1) return "max";
  if (q <= 0) return "min";
  if (q == 0.5) return "median";
  std::string s = "p";
  s += pct_digits(q);
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

std::string quantile_label(double q) {
  if (q >= 1) return "Maximum";
  if (q <= 0) return "Minimum";
  if (q == 0.5) return "Median ";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%4.1f%%", q * 100.0);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's estimators.

namespace {

// mean ± standard error; the error is 0 unless n > 10 (llama.cpp's mean_and_uncertainty).
Estimate mean_and_uncertainty(double sum, double sum2, int64_t count) {
  if (count < 1) return {kNaN, kNaN};
  const double n = static_cast<double>(count);
  const double f = sum / n;
  double df = sum2 / n - f * f;
  df = df > 0 && count > 10 ? std::sqrt(df / (n - 1)) : 0.0;
  return {f, df};
}

// Covariance of the two means; 0 for fewer than 10 values (llama.cpp's covariance).
double covariance(double suma, double sumb, double sumab, int64_t count) {
  if (count < 10) return 0.0;
  const double n = static_cast<double>(count);
  return (sumab / n - (suma / n) * (sumb / n)) / (n - 1);
}

double sqrt_nonneg(double x) { return x > 0 ? std::sqrt(x) : 0.0; }

struct Sums {
  int64_t count, n_same_top;
  double nll, nll2, nll_base, nll_base2, nll_nll_base, kld, kld2, dp, dp2, dp4;
};

struct Summary {
  Estimate ppl_q, ppl_base, ln_ppl_ratio, ppl_ratio, ppl_diff, kld, delta_p, rms_delta_p, same_top;
  double cor = kNaN;
};

Summary summarize(const Sums& s) {
  Summary r;
  if (s.count < 1) return r;
  const Estimate log_ppl = mean_and_uncertainty(s.nll, s.nll2, s.count);
  r.ppl_q.value = std::exp(log_ppl.value);
  r.ppl_q.unc = r.ppl_q.value * log_ppl.unc;
  const Estimate log_ppl_base = mean_and_uncertainty(s.nll_base, s.nll_base2, s.count);
  r.ppl_base.value = std::exp(log_ppl_base.value);
  r.ppl_base.unc = r.ppl_base.value * log_ppl_base.unc;
  const double cov = covariance(s.nll, s.nll_base, s.nll_nll_base, s.count);
  const double den = log_ppl.unc * log_ppl_base.unc;
  r.cor = den > 0 ? cov / den : kNaN;
  r.ln_ppl_ratio.value = log_ppl.value - log_ppl_base.value;
  r.ln_ppl_ratio.unc =
      sqrt_nonneg(log_ppl.unc * log_ppl.unc + log_ppl_base.unc * log_ppl_base.unc - 2.0 * cov);
  r.ppl_ratio.value = std::exp(r.ln_ppl_ratio.value);
  r.ppl_ratio.unc = r.ppl_ratio.value * r.ln_ppl_ratio.unc;
  const double ppl_cov = r.ppl_q.value * r.ppl_base.value * cov;
  r.ppl_diff.value = r.ppl_q.value - r.ppl_base.value;
  r.ppl_diff.unc = sqrt_nonneg(r.ppl_q.unc * r.ppl_q.unc + r.ppl_base.unc * r.ppl_base.unc - 2.0 * ppl_cov);
  r.kld = mean_and_uncertainty(s.kld, s.kld2, s.count);
  r.delta_p = mean_and_uncertainty(s.dp, s.dp2, s.count);
  const Estimate mse = mean_and_uncertainty(s.dp2, s.dp4, s.count);
  r.rms_delta_p.value = std::sqrt(mse.value);
  r.rms_delta_p.unc = r.rms_delta_p.value > 0 ? 0.5 / r.rms_delta_p.value * mse.unc : 0.0;
  const double p = static_cast<double>(s.n_same_top) / static_cast<double>(s.count);
  r.same_top.value = p;
  r.same_top.unc = s.count > 1 ? sqrt_nonneg(p * (1 - p) / static_cast<double>(s.count - 1)) : 0.0;
  return r;
}

KldHistogram make_histogram(const std::vector<double>& sorted) {
  KldHistogram h;
  h.log_x = true;
  double min_pos = 0;
  for (double v : sorted)
    if (v > 0) {
      min_pos = v;
      break;
    }
  if (sorted.empty() || !(min_pos > 0) || !std::isfinite(sorted.back())) {
    // No positive finite range to draw: count what lies below (≤ 0) and leave no bins.
    h.below = static_cast<int64_t>(sorted.size());
    return h;
  }
  constexpr int kPerDecade = 5, kMaxDecades = 8;
  int hi = static_cast<int>(std::ceil(std::log10(sorted.back())));
  int lo = static_cast<int>(std::floor(std::log10(min_pos)));
  if (hi <= lo) hi = lo + 1;
  lo = std::max(lo, hi - kMaxDecades);
  const int nbins = (hi - lo) * kPerDecade;
  h.edges.resize(nbins + 1);
  for (int i = 0; i <= nbins; ++i)
    h.edges[i] = std::pow(10.0, lo + static_cast<double>(i) / kPerDecade);
  h.edges.front() = std::pow(10.0, lo);
  h.edges.back() = std::pow(10.0, hi);
  h.counts.assign(nbins, 0);
  for (double v : sorted) {
    if (!(v >= h.edges.front())) {
      ++h.below;
      continue;
    }
    auto it = std::upper_bound(h.edges.begin(), h.edges.end(), v);
    int64_t b = static_cast<int64_t>(it - h.edges.begin()) - 1;
    b = std::clamp<int64_t>(b, 0, nbins - 1);
    ++h.counts[b];
  }
  return h;
}

// Stable log-sum-exp of a row in double; throws on NaN / +inf or an all −inf row.
double row_lse(const float* x, int64_t vocab, const char* what, int64_t row) {
  double m = -INFINITY;
  for (int64_t j = 0; j < vocab; ++j) {
    const double v = x[j];
    if (std::isnan(v) || v == INFINITY) fail(what, " row ", row, ": non-finite value ", v, " at index ", j);
    m = std::max(m, v);
  }
  if (m == -INFINITY) fail(what, " row ", row, ": every value is -inf");
  double s = 0;
  for (int64_t j = 0; j < vocab; ++j) s += std::exp(static_cast<double>(x[j]) - m);
  return m + std::log(s);
}

// First index of the maximum (llama.cpp's argmax).
int64_t argmax_first(const float* x, int64_t vocab) {
  int64_t im = 0;
  float m = x[0];
  for (int64_t j = 1; j < vocab; ++j)
    if (x[j] > m) {
      m = x[j];
      im = j;
    }
  return im;
}

// A scored row from its KLD and the log-probabilities of the next token under base (lpb_tok) and
// candidate (lpc_tok); b and c are the rows whose top tokens are compared, lse_b and lse_c their
// log-normalisers (0 for log-probabilities).
ScoredRow scored_row(double kld, double lpb_tok, double lpc_tok, const float* b, double lse_b, const float* c,
                     double lse_c, int64_t vocab) {
  ScoredRow row;
  row.kld = kld;
  row.nll = -lpc_tok;
  row.nll_base = -lpb_tok;
  row.dp = std::exp(lpc_tok) - std::exp(lpb_tok);
  const int64_t ib = argmax_first(b, vocab), ic = argmax_first(c, vocab);
  row.same_top = ib == ic;
  row.top_base = static_cast<int32_t>(ib);
  row.top_cand = static_cast<int32_t>(ic);
  row.p_top_base = std::exp(static_cast<double>(b[ib]) - lse_b);
  row.p_top_cand = std::exp(static_cast<double>(c[ic]) - lse_c);
  return row;
}

// Scores rows first_scored .. n_tokens - 2 of a chunk in parallel: score(r, i) returns row r, at
// token position i = first_scored + r. The first error is rethrown as "verify: <what>".
template <class F>
std::vector<ScoredRow> score_rows(int64_t n_tokens, int64_t vocab, int64_t first_scored, const F& score) {
  const int64_t n_rows = n_tokens - 1 - first_scored;
  std::vector<ScoredRow> rows(static_cast<size_t>(n_rows));
  std::string error;
#pragma omp parallel for schedule(dynamic, 1) if (n_rows > 1 && vocab * n_rows > 65536)
  for (int64_t r = 0; r < n_rows; ++r) {
    try {
      rows[static_cast<size_t>(r)] = score(r, first_scored + r);
    } catch (const std::exception& e) {
#pragma omp critical(moetool_verify_error)
      if (error.empty()) error = e.what();
    }
  }
  if (!error.empty()) fail("verify: ", error);
  return rows;
}


}  // namespace

void check_chunk_args(const float* base, const float* cand, const int32_t* tokens, int64_t n_tokens,
                      int64_t vocab, int64_t first_scored) {
  check(base != nullptr && cand != nullptr && tokens != nullptr, "verify: null logits or tokens");
  check(n_tokens >= 1, "verify: a chunk needs at least one token, got ", n_tokens);
  check(vocab >= 1, "verify: vocabulary size must be positive, got ", vocab);
  check(first_scored >= 0 && first_scored <= n_tokens - 1, "verify: first scored row ", first_scored,
        " outside [0, ", n_tokens - 1, "] for a chunk of ", n_tokens, " tokens");
  for (int64_t i = first_scored + 1; i < n_tokens; ++i)
    check(tokens[i] >= 0 && tokens[i] < vocab, "verify: token id ", tokens[i], " at position ", i,
          " outside the vocabulary [0, ", vocab, ")");
}

// ---------------------------------------------------------------------------------------------

void VerifyAccumulator::add_chunk(const float* base_logits, const float* cand_logits, const int32_t* tokens,
                                  int64_t n_tokens, int64_t vocab, int64_t first_scored) {
  check_chunk_args(base_logits, cand_logits, tokens, n_tokens, vocab, first_scored);
  add_rows(score_rows(n_tokens, vocab, first_scored, [&](int64_t, int64_t i) {
    const float* b = base_logits + i * vocab;
    const float* c = cand_logits + i * vocab;
    const double lse_b = row_lse(b, vocab, "base logits", i);
    const double lse_c = row_lse(c, vocab, "candidate logits", i);
    double kld = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      const double lpb = static_cast<double>(b[j]) - lse_b;
      const double pb = std::exp(lpb);
      if (pb == 0) continue;  // 0·log 0 = 0
      const double lpc = static_cast<double>(c[j]) - lse_c;
      kld += pb * (lpb - lpc);
    }
    const int32_t tok = tokens[i + 1];
    return scored_row(kld, static_cast<double>(b[tok]) - lse_b, static_cast<double>(c[tok]) - lse_c, b, lse_b, c,
                      lse_c, vocab);
  }), first_scored);
}

void VerifyAccumulator::add_chunk(const BaseLogProbs& base, const float* cand_logits, const int32_t* tokens,
                                  int64_t n_tokens, int64_t vocab, int64_t first_scored) {
  check_chunk_args(base.rows, cand_logits, tokens, n_tokens, vocab, first_scored);
  add_rows(score_rows(n_tokens, vocab, first_scored, [&](int64_t r, int64_t i) {
    const float* b = base.rows + r * vocab;
    const float* c = cand_logits + i * vocab;
    for (int64_t j = 0; j < vocab; ++j)
      if (std::isnan(b[j]) || (b[j] > 0.0f && std::isinf(b[j])))
        fail("base log-probabilities row ", i, ": non-finite value at index ", j);
    const double lse_c = row_lse(c, vocab, "candidate logits", i);
    double kld = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      const double lpb = b[j];
      if (!(lpb > base.floor)) continue;
      const double pb = std::exp(lpb);
      if (pb == 0) continue;
      const double lpc = static_cast<double>(c[j]) - lse_c;
      kld += pb * (lpb - lpc);
    }
    const int32_t tok = tokens[i + 1];
    return scored_row(kld, b[tok], static_cast<double>(c[tok]) - lse_c, b, 0.0, c, lse_c, vocab);
  }), first_scored);
}

void VerifyAccumulator::add_rows(const std::vector<ScoredRow>& rows, int64_t first_scored) {
  double chunk_kld = 0;
  int64_t chunk_same = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const ScoredRow& r = rows[i];
    chunk_kld += r.kld;
    chunk_same += r.same_top ? 1 : 0;
    // Keep the kWorstTokens largest KLDs; a later position replaces an equal one only when larger.
    if (worst_.size() < kWorstTokens || r.kld > worst_.back().kld) {
      WorstToken w;
      w.chunk = n_chunks_;
      w.position = first_scored + static_cast<int64_t>(i);
      w.kld = r.kld;
      w.top_base = r.top_base;
      w.top_cand = r.top_cand;
      w.p_top_base = r.p_top_base;
      w.p_top_cand = r.p_top_cand;
      auto at = std::upper_bound(worst_.begin(), worst_.end(), r.kld,
                                 [](double k, const WorstToken& x) { return k > x.kld; });
      worst_.insert(at, std::move(w));
      if (worst_.size() > kWorstTokens) worst_.pop_back();
    }
    sum_nll_ += r.nll;
    sum_nll2_ += r.nll * r.nll;
    sum_nll_base_ += r.nll_base;
    sum_nll_base2_ += r.nll_base * r.nll_base;
    sum_nll_nll_base_ += r.nll * r.nll_base;
    sum_kld_ += r.kld;
    sum_kld2_ += r.kld * r.kld;
    sum_dp_ += r.dp;
    const double dp2 = r.dp * r.dp;
    sum_dp2_ += dp2;
    sum_dp4_ += dp2 * dp2;
    n_same_top_ += r.same_top ? 1 : 0;
    kld_values_.push_back(r.kld);
    dp_values_.push_back(r.dp);
  }
  count_ += static_cast<int64_t>(rows.size());
  ++n_chunks_;
  const Summary s = summarize({count_, n_same_top_, sum_nll_, sum_nll2_, sum_nll_base_, sum_nll_base2_,
                               sum_nll_nll_base_, sum_kld_, sum_kld2_, sum_dp_, sum_dp2_, sum_dp4_});
  ChunkProgress p;
  p.chunk = n_chunks_;
  p.tokens = count_;
  p.ppl_q = s.ppl_q;
  p.ln_ppl_ratio = s.ln_ppl_ratio;
  p.kld = s.kld;
  p.rms_dp = s.rms_delta_p;
  p.same_top = s.same_top;
  p.chunk_tokens = static_cast<int64_t>(rows.size());
  if (!rows.empty()) {
    p.chunk_kld = chunk_kld / static_cast<double>(rows.size());
    p.chunk_same_top = static_cast<double>(chunk_same) / static_cast<double>(rows.size());
  }
  chunks_.push_back(p);
}

void VerifyAccumulator::set_worst_tops(size_t i, int32_t top_base, double p_base, int32_t top_cand, double p_cand) {
  check(i < worst_.size(), "verify: worst position ", i, " out of range");
  worst_[i].top_base = top_base;
  worst_[i].p_top_base = p_base;
  worst_[i].top_cand = top_cand;
  worst_[i].p_top_cand = p_cand;
}

VerifyStats VerifyAccumulator::finish() const {
  VerifyStats st;
  st.n_tokens = count_;
  st.n_chunks = n_chunks_;
  st.chunks = chunks_;
  st.worst = worst_;
  const Summary s = summarize({count_, n_same_top_, sum_nll_, sum_nll2_, sum_nll_base_, sum_nll_base2_,
                               sum_nll_nll_base_, sum_kld_, sum_kld2_, sum_dp_, sum_dp2_, sum_dp4_});
  st.ppl_q = s.ppl_q;
  st.ppl_base = s.ppl_base;
  st.cor_ln_ppl = s.cor;
  st.ln_ppl_ratio = s.ln_ppl_ratio;
  st.ppl_ratio = s.ppl_ratio;
  st.ppl_diff = s.ppl_diff;
  st.kld = s.kld;
  st.delta_p = s.delta_p;
  st.rms_delta_p = s.rms_delta_p;
  st.same_top = s.same_top;
  std::vector<double> kld = kld_values_, dp = dp_values_;
  std::sort(kld.begin(), kld.end());
  std::sort(dp.begin(), dp.end());
  for (double q : kKldQuantiles) st.kld_q.push_back({q, kld.empty() ? kNaN : percentile_sorted(kld, q)});
  for (double q : kDeltaPQuantiles) st.delta_p_q.push_back({q, dp.empty() ? kNaN : percentile_sorted(dp, q)});
  st.kld_histogram = make_histogram(kld);
  return st;
}

// ---------------------------------------------------------------------------------------------

std::vector<RowSimilarity> row_similarities(const float* a, const float* b, int64_t n, int64_t d) {
  std::vector<RowSimilarity> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) {
    const float* x = a + i * d;
    const float* y = b + i * d;
    double xy = 0, xx = 0, yy = 0, e2 = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double u = x[j], v = y[j];
      xy += u * v;
      xx += u * u;
      yy += v * v;
      e2 += (u - v) * (u - v);
    }
    RowSimilarity& r = out[static_cast<size_t>(i)];
    if (xx == 0 && yy == 0)
      r.cosine = 1.0;
    else if (xx == 0 || yy == 0)
      r.cosine = 0.0;
    else
      r.cosine = xy / (std::sqrt(xx) * std::sqrt(yy));
    r.err2 = e2;
    r.ref2 = xx;
  }
  return out;
}

void HiddenStateComparison::add(int64_t layer, const float* base, const float* cand, int64_t n, int64_t H) {
  check(n >= 0 && H >= 1, "hidden-state comparison: layer ", layer, ": bad shape [", n, ", ", H, "]");
  check(n == 0 || (base != nullptr && cand != nullptr), "hidden-state comparison: layer ", layer, ": null data");
  add_rows(layer, H, row_similarities(base, cand, n, H));
}

void HiddenStateComparison::add_rows(int64_t layer, int64_t H, const std::vector<RowSimilarity>& rows) {
  check(H >= 1, "hidden-state comparison: layer ", layer, ": bad width ", H);
  Acc& a = layers_[layer];
  if (a.H == 0) a.H = H;
  check(a.H == H, "hidden-state comparison: layer ", layer, ": width ", H, " differs from the earlier ", a.H);
  for (const RowSimilarity& r : rows) {
    a.sum_cos += r.cosine;
    a.min_cos = std::min(a.min_cos, r.cosine);
    a.sum_err2 += r.err2;
    a.sum_ref2 += r.ref2;
  }
  a.rows += static_cast<int64_t>(rows.size());
}

std::vector<LayerSimilarity> HiddenStateComparison::finish() const {
  std::vector<LayerSimilarity> out;
  for (const auto& [layer, a] : layers_) {
    LayerSimilarity s;
    s.layer = layer;
    s.rows = a.rows;
    if (a.rows > 0) {
      s.mean_cosine = a.sum_cos / static_cast<double>(a.rows);
      s.min_cosine = a.min_cos;
      s.nmse = a.sum_ref2 > 0 ? a.sum_err2 / a.sum_ref2 : (a.sum_err2 == 0 ? 0.0 : INFINITY);
    }
    out.push_back(s);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

static std::string fmt_g(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

static std::string fmt_pct(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f %%", 100.0 * v);
  return buf;
}

std::vector<ThresholdResult> evaluate(const VerifyStats& s, const Thresholds& t) {
  std::vector<ThresholdResult> out;
  auto add = [&](const char* name, const char* metric, double limit, double value, bool upper) {
    ThresholdResult r;
    r.name = name;
    r.metric = metric;
    r.limit = limit;
    r.value = value;
    r.passed = !std::isnan(value) && (upper ? value <= limit : value >= limit);
    if (std::isnan(value))
      r.message = str(metric, " is undefined (", s.n_tokens, " tokens scored); ", name, " = ", fmt_g(limit),
                      " cannot pass");
    else
      r.message = str(metric, " ", fmt_g(value), upper ? "" : str(" (", fmt_pct(value), ")"),
                      r.passed ? (upper ? " <= " : " >= ") : (upper ? " > " : " < "), name, " ", fmt_g(limit),
                      r.passed ? " (pass)" : " (FAIL)");
    out.push_back(std::move(r));
  };
  if (t.max_kld) add("max_kld", "mean KLD", *t.max_kld, s.kld.value, true);
  if (t.min_top1) add("min_top1", "same top p", *t.min_top1, s.same_top.value, false);
  if (t.max_ppl_ratio) add("max_ppl_ratio", "PPL(Q)/PPL(base)", *t.max_ppl_ratio, s.ppl_ratio.value, true);
  if (t.max_route_mismatch) {
    add("max_route_mismatch", "route mismatch", *t.max_route_mismatch, s.route_mismatch, true);
    if (std::isnan(s.route_mismatch))
      out.back().message = str("route mismatch is undefined (no MoE layer of the candidate could be matched to the "
                               "base's experts); max_route_mismatch = ",
                               fmt_g(*t.max_route_mismatch), " cannot pass");
  }
  return out;
}

std::vector<std::string> check(const VerifyStats& s, const Thresholds& t) {
  std::vector<std::string> lines;
  if (s.n_tokens == 0) lines.push_back("no tokens were scored");
  for (const auto& r : evaluate(s, t))
    if (!r.passed) lines.push_back(r.message);
  return lines;
}

}  // namespace moetool
