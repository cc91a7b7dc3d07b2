// kernels/cpu_ops.cc — CPU implementations of kernels/ops.h: OpenBLAS sgemm for large products,
// OpenMP across rows and heads for everything else.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/backend_shared.h"
#include "kernels/ops.h"
#include "kernels/simd_sum.h"

namespace moetool::ops {

namespace {
void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
              int64_t ldc, float alpha, float beta) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
              alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}
}  // namespace

// Large products run on the engine's OpenMP threads: each multiplies a slice of B's rows (C's
// columns, 16-aligned) with a single-threaded sgemm. OpenBLAS's own pool beside OpenMP's kept its
// workers spinning (sched_yield) between the engine's parallel regions: seconds of system time per
// 1 B-parameter forward on 2 cores. Every C element is still one sgemm dot product over all of K,
// so slicing does not change which products are summed, only which thread does it.
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  const int T = omp_get_max_threads();
  if (T < 2 || omp_in_parallel() || M * N * K < (int64_t{1} << 24) || N < 64 * T) {
    sgemm_nt(M, N, K, A, lda, B, ldb, C, ldc, alpha, beta);
    return;
  }
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
#pragma omp parallel num_threads(T)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t per = ((N + T - 1) / T + 15) / 16 * 16;
    const int64_t n0 = std::min(N, t * per), n1 = std::min(N, n0 + per);
    if (n1 > n0) sgemm_nt(M, n1 - n0, K, A, lda, B + n0 * ldb, ldb, C + n0, ldc, alpha, beta);
  }
  openblas_set_num_threads(blas_threads);
}

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta, C,
              static_cast<int>(ldc));
}

void rmsnorm(const float* x, const float* w, float* out, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n > 16)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float* oi = out + i * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xi[j]) * xi[j];
    const float r = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + eps);
    for (int64_t j = 0; j < d; ++j) oi[j] = w[j] * (xi[j] * r);
  }
}

void rope(float* x, int64_t n, int64_t H, int64_t d, int64_t stride, const int64_t* pos,
          const std::vector<float>& inv_freq, float scale) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
#pragma omp parallel for schedule(static) if (n > 4)
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      // Angle in float32 like transformers (inv_freq float32 · position float32).
      const float ang = static_cast<float>(pos[t]) * inv_freq[static_cast<size_t>(i)];
      c[static_cast<size_t>(i)] = std::cos(ang) * scale;
      s[static_cast<size_t>(i)] = std::sin(ang) * scale;
    }
    for (int64_t h = 0; h < H; ++h) {
      float* v = x + t * stride + h * d;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[static_cast<size_t>(i)] - b * s[static_cast<size_t>(i)];
        v[i + half] = b * c[static_cast<size_t>(i)] + a * s[static_cast<size_t>(i)];
      }
    }
  }
}

namespace {

using simd::dot8;
using simd::hsum8;

// Four dot8 sums (rows a, a + lda, …; outputs out, out + ldo, …) sharing the loads of b, each bit for
// bit equal to dot8 of its row.
inline void dot_pairs4(const float* a, int64_t lda, const float* b, int64_t n, float* out, int64_t ldo) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t e = 0;
  for (; e + 8 <= n; e += 8) {
    const __m256 bv = _mm256_loadu_ps(b + e);
    for (int i = 0; i < 4; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * lda + e), bv, acc[i]);
  }
  float tail[4] = {0, 0, 0, 0};
  for (; e < n; ++e)
    for (int i = 0; i < 4; ++i) tail[i] = std::fma(a[i * lda + e], b[e], tail[i]);
  for (int i = 0; i < 4; ++i) out[i * ldo] = hsum8(acc[i]) + tail[i];
}

}  // namespace

void attention(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
               float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk, int64_t dv, float scale,
               int64_t window) {
  const int64_t group = Hq / Hkv;
  const int64_t T = pos0 + n;
  // Blocks of query rows per head: scores[rows, span] (dot_pairs4), then softmax and ·V.
  const int64_t block = 64;
  const int64_t nblocks = (n + block - 1) / block;
#pragma omp parallel
  {
    std::vector<float> qs(static_cast<size_t>(block * dk)), sc(static_cast<size_t>(block * T)),
        o(static_cast<size_t>(block * dv));
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t h = 0; h < Hq; ++h) {
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t kh = h / group;
        const int64_t r0 = b * block, rows = std::min(block, n - r0);
        const int64_t last = pos0 + r0 + rows;  // keys 0 .. last-1 may be visible to this block
        const int64_t first = window > 0 ? std::max<int64_t>(0, pos0 + r0 - window + 1) : 0;
        const int64_t span = last - first;
        for (int64_t r = 0; r < rows; ++r)
          std::copy_n(q + (r0 + r) * q_stride + h * dk, dk, qs.data() + r * dk);
        // sc[r, j] = q_r · k_{first+j} for every pair (masked ones replaced below), four query rows per
        // key load; each pair's sum has one fixed order (simd::dot8), whatever the block's shape, so a
        // token's attention does not depend on how its sequence was cut into calls.
        for (int64_t r = 0; r < rows; r += 4) {
          const int64_t nr = std::min<int64_t>(4, rows - r);
          for (int64_t j = 0; j < span; ++j) {
            const float* kr = k + (first + j) * k_stride + kh * dk;
            if (nr == 4)
              dot_pairs4(qs.data() + r * dk, dk, kr, dk, sc.data() + r * span + j, span);
            else
              for (int64_t i = 0; i < nr; ++i) sc[static_cast<size_t>((r + i) * span + j)] = dot8(qs.data() + (r + i) * dk, kr, dk);
          }
        }
        for (int64_t r = 0; r < rows; ++r) {
          float* sr = sc.data() + r * span;
          const int64_t qpos = pos0 + r0 + r;
          for (int64_t j = 0; j < span; ++j) {
            const int64_t kp = first + j;
            sr[j] = (kp > qpos || (window > 0 && kp <= qpos - window)) ? -std::numeric_limits<float>::infinity()
                                                                       : sr[j] * scale;
          }
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < span; ++j) mx = std::max(mx, sr[j]);
          double sum = 0;
          for (int64_t j = 0; j < span; ++j) {
            const float e = std::exp(sr[j] - mx);
            sr[j] = e;
            sum += e;
          }
          const float inv = static_cast<float>(1.0 / sum);
          float* orow = o.data() + r * dv;
          std::fill_n(orow, dv, 0.0f);
          for (int64_t j = 0; j < span; ++j) {
            const float p = sr[j] * inv;
            if (p == 0.0f) continue;
            const float* vr = v + (first + j) * v_stride + kh * dv;
            for (int64_t e = 0; e < dv; ++e) orow[e] += p * vr[e];
          }
        }
        for (int64_t r = 0; r < rows; ++r) std::copy_n(o.data() + r * dv, dv, out + (r0 + r) * Hq * dv + h * dv);
      }
    }
  }
}

void attention_bf16(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v,
                    int64_t v_stride, float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk,
                    int64_t dv, float scale, int64_t window) {
  const int64_t group = Hq / Hkv, T = pos0 + n, BN = shared::kAttnKeyTile;
  // K and V rounded once: [T, Hkv·dk], [T, Hkv·dv].
  std::vector<float> kr(static_cast<size_t>(T * Hkv * dk)), vr(static_cast<size_t>(T * Hkv * dv));
#pragma omp parallel for schedule(static) if (T > 64)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < Hkv * dk; ++i) kr[static_cast<size_t>(t * Hkv * dk + i)] = shared::round_bf16(k[t * k_stride + i]);
    for (int64_t i = 0; i < Hkv * dv; ++i) vr[static_cast<size_t>(t * Hkv * dv + i)] = shared::round_bf16(v[t * v_stride + i]);
  }
  const float sl2 = scale * 1.4426950408889634f;
  const float ninf = -std::numeric_limits<float>::infinity();
#pragma omp parallel
  {
    std::vector<float> qr(static_cast<size_t>(dk)), s(static_cast<size_t>(BN)), o(static_cast<size_t>(dv));
#pragma omp for schedule(dynamic, 8) collapse(2)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t kh = h / group, qpos = pos0 + i;
        for (int64_t e = 0; e < dk; ++e) qr[static_cast<size_t>(e)] = shared::round_bf16(q[i * q_stride + h * dk + e]);
        int64_t kb, ke;
        shared::key_range(qpos, qpos, window, &kb, &ke);
        float m = ninf, l = 0.0f;
        std::fill(o.begin(), o.end(), 0.0f);
        for (int64_t t0 = kb - kb % BN; t0 < ke; t0 += BN) {
          const int64_t tn = std::min(BN, ke - t0);
          float mx = ninf;
          for (int64_t j = 0; j < tn; ++j) {
            const int64_t kp = t0 + j;
            float acc = ninf;
            if (shared::key_visible(qpos, kp, window)) {
              const float* kk = kr.data() + kp * Hkv * dk + kh * dk;
              acc = 0.0f;
              for (int64_t e = 0; e < dk; ++e) acc += qr[static_cast<size_t>(e)] * kk[e];
              acc *= sl2;
            }
            s[static_cast<size_t>(j)] = acc;
            mx = std::max(mx, acc);
          }
          const float mnew = std::max(m, mx);
          const float alpha = mnew == ninf ? 1.0f : (m == ninf ? 0.0f : std::exp2(m - mnew));
          m = mnew;
          float sum = 0.0f;
          for (float& oe : o) oe *= alpha;
          for (int64_t j = 0; j < tn; ++j) {
            const float sj = s[static_cast<size_t>(j)];
            const float p = sj == ninf ? 0.0f : shared::round_bf16(std::exp2(sj - mnew));
            sum += p;
            if (p == 0.0f) continue;
            const float* vv = vr.data() + (t0 + j) * Hkv * dv + kh * dv;
            for (int64_t e = 0; e < dv; ++e) o[static_cast<size_t>(e)] += p * vv[e];
          }
          l = l * alpha + sum;
        }
        const float inv = 1.0f / l;
        float* orow = out + i * Hq * dv + h * dv;
        for (int64_t e = 0; e < dv; ++e) orow[e] = o[static_cast<size_t>(e)] * inv;
      }
  }
}

void silu_mul(const float* g, const float* u, float* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void softmax_rows(float* x, int64_t n, int64_t d) {
#pragma omp parallel for schedule(static) if (n > 16)
  for (int64_t i = 0; i < n; ++i) {
    float* r = x + i * d;
    float mx = *std::max_element(r, r + d);
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      r[j] = std::exp(r[j] - mx);
      s += r[j];
    }
    const float inv = static_cast<float>(1.0 / s);
    for (int64_t j = 0; j < d; ++j) r[j] *= inv;
  }
}

void axpy(int64_t n, float a, const float* x, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace moetool::ops
