// kernels/cuda/verify_cuda.cu — `moetool verify`'s per-row statistics on the GPU (kernels/backend_cuda.h):
// KLD, Δp, nll and same-top-1 of base/candidate logit rows, and the cosine/error of hidden-state rows,
// in double with the conventions of verify/metrics.h, so only a few numbers per position leave the GPU.
#include <cmath>

#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/reduce.cuh"

namespace moetool::cuda {

namespace {

// One block per scored row: max and first-index argmax of each row, then Σ exp in double for the
// log-sum-exps, then Σ p_base (log p_base − log p_cand) skipping p_base = 0 (verify/metrics.cc).
__global__ void k_score(const float* base, const float* cand, const int32_t* next, int64_t vocab, double* out) {
  __shared__ double shd[32];
  __shared__ float shm[32];
  __shared__ int64_t shi[32];
  const int64_t r = blockIdx.x;
  const float* b = base + r * vocab;
  const float* c = cand + r * vocab;
  float mb = -INFINITY, mc = -INFINITY;
  int64_t ib = vocab, ic = vocab;
  int bad_b = 0, bad_c = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float vb = b[j], vc = c[j];
    bad_b |= isnan(vb) || vb == INFINITY;
    bad_c |= isnan(vc) || vc == INFINITY;
    if (vb > mb || (vb == mb && j < ib)) {
      mb = vb;
      ib = j;
    }
    if (vc > mc || (vc == mc && j < ic)) {
      mc = vc;
      ic = j;
    }
  }
  bad_b = __syncthreads_or(bad_b);
  bad_c = __syncthreads_or(bad_c);
  block_argmax(mb, ib, shm, shi);
  block_argmax(mc, ic, shm, shi);
  int status = (bad_b ? kBaseNonFinite : 0) | (bad_c ? kCandNonFinite : 0);
  if (!bad_b && mb == -INFINITY) status |= kBaseAllNegInf;
  if (!bad_c && mc == -INFINITY) status |= kCandAllNegInf;
  double* o = out + r * kScoreFields;
  if (status) {
    if (threadIdx.x == 0) {
      for (int f = 0; f < kScoreFields; ++f) o[f] = 0.0;
      o[kScoreStatus] = status;
    }
    return;  // uniform across the block
  }
  double sb = 0, sc = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    sb += exp(static_cast<double>(b[j]) - mb);
    sc += exp(static_cast<double>(c[j]) - mc);
  }
  sb = block_sum(sb, shd);
  sc = block_sum(sc, shd);
  const double lse_b = mb + log(sb), lse_c = mc + log(sc);
  double kld = 0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const double lpb = static_cast<double>(b[j]) - lse_b;
    const double pb = exp(lpb);
    if (pb == 0) continue;  // 0 · log 0 = 0
    kld += pb * (lpb - (static_cast<double>(c[j]) - lse_c));
  }
  kld = block_sum(kld, shd);
  if (threadIdx.x == 0) {
    const int32_t t = next[r];
    const double lpb_t = static_cast<double>(b[t]) - lse_b, lpc_t = static_cast<double>(c[t]) - lse_c;
    o[kScoreKld] = kld;
    o[kScoreDeltaP] = exp(lpc_t) - exp(lpb_t);
    o[kScoreNll] = -lpc_t;
    o[kScoreNllBase] = -lpb_t;
    o[kScoreSameTop] = ib == ic ? 1.0 : 0.0;
    o[kScoreStatus] = 0.0;
  }
}

// One block per row: a·b, ‖a‖², ‖b‖², ‖a − b‖² in double (HiddenStateComparison's conventions).
__global__ void k_compare(const float* a, const float* b, int64_t d, double* out) {
  __shared__ double sh[32];
  const float* x = a + blockIdx.x * d;
  const float* y = b + blockIdx.x * d;
  double xy = 0, xx = 0, yy = 0, e2 = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const double u = x[j], v = y[j];
    xy += u * v;
    xx += u * u;
    yy += v * v;
    e2 += (u - v) * (u - v);
  }
  xy = block_sum(xy, sh);
  xx = block_sum(xx, sh);
  yy = block_sum(yy, sh);
  e2 = block_sum(e2, sh);
  if (threadIdx.x == 0) {
    double cos;
    if (xx == 0 && yy == 0)
      cos = 1.0;
    else if (xx == 0 || yy == 0)
      cos = 0.0;
    else
      cos = xy / (sqrt(xx) * sqrt(yy));
    double* o = out + 3 * blockIdx.x;
    o[0] = cos;
    o[1] = e2;
    o[2] = xx;
  }
}

}  // namespace

void score_logit_rows(const float* base, const float* cand, const int32_t* next, int64_t rows, int64_t vocab,
                      double* out) {
  check(vocab >= 1, "CUDA score_logit_rows: vocabulary of ", vocab);
  if (rows == 0) return;
  k_score<<<static_cast<unsigned>(rows), kThreads, 0, context().stream>>>(base, cand, next, vocab, out);
  check_launch("score_logit_rows");
}

void compare_rows(const float* a, const float* b, int64_t n, int64_t d, double* out) {
  check(d >= 1, "CUDA compare_rows: row width ", d);
  if (n == 0) return;
  k_compare<<<static_cast<unsigned>(n), kThreads, 0, context().stream>>>(a, b, d, out);
  check_launch("compare_rows");
}

}  // namespace moetool::cuda
