// verify/score_device.cc — score_rows_on_device (verify/score_device.h).
#include "verify/score_device.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/backend_cuda.h"

namespace moetool {

namespace {

// The message verify/metrics.cc gives for a bad row, found on a host copy of that row.
[[noreturn]] void bad_row(const float* drow, int64_t vocab, const char* what, int64_t row, int status_nonfinite) {
  std::vector<float> x(static_cast<size_t>(vocab));
  cuda::download(x.data(), drow, x.size() * sizeof(float));
  if (status_nonfinite)
    for (int64_t j = 0; j < vocab; ++j) {
      const double v = x[static_cast<size_t>(j)];
      if (std::isnan(v) || v == INFINITY) fail("verify: ", what, " row ", row, ": non-finite value ", v, " at index ", j);
    }
  fail("verify: ", what, " row ", row, ": every value is -inf");
}

}  // namespace

std::vector<ScoredRow> score_rows_on_device(const float* base, const float* cand, const int32_t* tokens,
                                            int64_t n_tokens, int64_t vocab, int64_t first_scored) {
  check_chunk_args(base, cand, tokens, n_tokens, vocab, first_scored);
  const int64_t rows = n_tokens - 1 - first_scored;
  if (rows == 0) return {};
  cuda::Buffer<int32_t> dnext;  // the token each scored row predicts
  dnext.upload(tokens + first_scored + 1, static_cast<size_t>(rows));
  cuda::Buffer<double> dout(static_cast<size_t>(rows * cuda::kScoreFields));
  const float* b0 = base + first_scored * vocab;
  const float* c0 = cand + first_scored * vocab;
  cuda::score_logit_rows(b0, c0, dnext.get(), rows, vocab, dout.get());
  const std::vector<double> v = dout.to_host(static_cast<size_t>(rows * cuda::kScoreFields));
  std::vector<ScoredRow> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const double* f = v.data() + r * cuda::kScoreFields;
    const int st = static_cast<int>(f[cuda::kScoreStatus]);
    if (st) {
      const int64_t i = first_scored + r;
      if (st & (cuda::kBaseNonFinite | cuda::kBaseAllNegInf))
        bad_row(b0 + r * vocab, vocab, "base logits", i, st & cuda::kBaseNonFinite);
      bad_row(c0 + r * vocab, vocab, "candidate logits", i, st & cuda::kCandNonFinite);
    }
    ScoredRow& o = out[static_cast<size_t>(r)];
    o.kld = f[cuda::kScoreKld];
    o.dp = f[cuda::kScoreDeltaP];
    o.nll = f[cuda::kScoreNll];
    o.nll_base = f[cuda::kScoreNllBase];
    o.same_top = f[cuda::kScoreSameTop] != 0.0;
  }
  return out;
}

RowTop row_top_on_device(const float* drow, int64_t vocab) {
  std::vector<float> x(static_cast<size_t>(vocab));
  cuda::download(x.data(), drow, x.size() * sizeof(float));
  RowTop t;
  const auto it = std::max_element(x.begin(), x.end());  // the first maximum, as argmax_first
  t.id = static_cast<int32_t>(it - x.begin());
  double s = 0;
  for (float v : x) s += std::exp(static_cast<double>(v) - *it);
  t.p = 1.0 / s;
  return t;
}

}  // namespace moetool
