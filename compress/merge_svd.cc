// compress/merge_svd.cc — Sub-MoE's joint-SVD merge of a group of experts (see merge_svd.h).
#include "compress/merge_svd.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/linalg.h"

namespace moetool {

JointSvd joint_svd(const std::vector<const float*>& W, int64_t out, int64_t in, int64_t rank, Device dev) {
  if (W.empty()) fail("merge: a joint SVD of an empty group");
  const auto n = static_cast<int64_t>(W.size());
  std::vector<float> A(static_cast<size_t>(out * n * in));  // [out, n·in]
  for (int64_t m = 0; m < n; ++m)
    for (int64_t r = 0; r < out; ++r)
      std::copy_n(W[static_cast<size_t>(m)] + r * in, in, A.begin() + r * n * in + m * in);
  const linalg::Svd s = linalg::svd(A.data(), out, n * in, dev);
  JointSvd j;
  j.out = out;
  j.in = in;
  j.rank = rank <= 0 ? s.k : std::min(rank, s.k);
  j.US.resize(static_cast<size_t>(out * j.rank));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < j.rank; ++c)
      j.US[static_cast<size_t>(r * j.rank + c)] = s.U[static_cast<size_t>(r * s.k + c)] * s.S[static_cast<size_t>(c)];
  for (int64_t m = 0; m < n; ++m) {
    std::vector<float> v(static_cast<size_t>(j.rank * in));
    for (int64_t c = 0; c < j.rank; ++c)
      std::copy_n(s.Vt.begin() + c * n * in + m * in, in, v.begin() + c * in);
    j.Vt.push_back(std::move(v));
  }
  return j;
}

namespace {

// US [out, r] · V [r, in], accumulated in double.
std::vector<float> product(const JointSvd& j, const std::vector<double>& V) {
  std::vector<float> W(static_cast<size_t>(j.out * j.in));
  std::vector<double> row(static_cast<size_t>(j.in));
  for (int64_t r = 0; r < j.out; ++r) {
    std::fill(row.begin(), row.end(), 0.0);
    for (int64_t c = 0; c < j.rank; ++c) {
      const double u = j.US[static_cast<size_t>(r * j.rank + c)];
      const double* v = V.data() + c * j.in;
      for (int64_t i = 0; i < j.in; ++i) row[static_cast<size_t>(i)] += u * v[i];
    }
    for (int64_t i = 0; i < j.in; ++i) W[static_cast<size_t>(r * j.in + i)] = static_cast<float>(row[static_cast<size_t>(i)]);
  }
  return W;
}

}  // namespace

std::vector<float> joint_svd_member(const JointSvd& j, size_t m) {
  const std::vector<float>& v = j.Vt.at(m);
  return product(j, std::vector<double>(v.begin(), v.end()));
}

std::vector<float> joint_svd_merge(const JointSvd& j, const std::vector<double>& w) {
  if (w.size() != j.Vt.size()) fail("merge: ", w.size(), " weights for a group of ", j.Vt.size());
  double total = 0;
  for (double x : w) {
    if (!(x >= 0) || !std::isfinite(x)) fail("merge: weight ", x, " (expected a finite value ≥ 0)");
    total += x;
  }
  if (!(total > 0)) fail("merge: all member weights are zero (no calibration token reached the group)");
  std::vector<double> V(static_cast<size_t>(j.rank * j.in), 0.0);
  for (size_t m = 0; m < w.size(); ++m)
    for (size_t i = 0; i < V.size(); ++i) V[i] += w[m] / total * j.Vt[m][i];
  return product(j, V);
}

ExpertMatrices subspace_merge(const std::vector<const ExpertMatrices*>& experts, const std::vector<double>& w,
                              double rank_fraction, Device dev) {
  if (experts.empty()) fail("merge: a subspace merge of an empty group");
  if (!(rank_fraction > 0 && rank_fraction <= 1)) fail("merge: --rank-fraction ", rank_fraction, " must be in (0, 1]");
  const ExpertMatrices& e0 = *experts[0];
  const auto n = static_cast<int64_t>(experts.size());
  auto one = [&](std::vector<float> ExpertMatrices::*field, int64_t out, int64_t in) {
    std::vector<const float*> W;
    for (const auto* e : experts) {
      if (e->I != e0.I || e->H != e0.H) fail("merge: experts of different shapes cannot be merged");
      W.push_back((e->*field).data());
    }
    const int64_t full = std::min(out, n * in);
    const auto r = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(rank_fraction * static_cast<double>(full))));
    return joint_svd_merge(joint_svd(W, out, in, r, dev), w);
  };
  ExpertMatrices out{e0.I, e0.H, {}, {}, {}};
  out.gate = one(&ExpertMatrices::gate, e0.I, e0.H);
  out.up = one(&ExpertMatrices::up, e0.I, e0.H);
  out.down = one(&ExpertMatrices::down, e0.H, e0.I);
  return out;
}

}  // namespace moetool
