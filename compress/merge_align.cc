// compress/merge_align.cc — neuron alignment and weighted averaging of experts (see merge_align.h).
#include "compress/merge_align.h"

#include <cmath>

#include <Eigen/Dense>

#include "core/error.h"
#include "kernels/assignment.h"

namespace moetool {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CMap = Eigen::Map<const RowMat>;

void check_expert(const ExpertMatrices& e, const char* what) {
  const auto n = static_cast<size_t>(e.I * e.H);
  if (e.I <= 0 || e.H <= 0 || e.gate.size() != n || e.up.size() != n || e.down.size() != n)
    fail("merge: ", what, " expert has inconsistent shapes (I ", e.I, ", H ", e.H, "; gate ", e.gate.size(), ", up ",
         e.up.size(), ", down ", e.down.size(), " values; expected ", n, " each)");
}

void check_same_shape(const ExpertMatrices& a, const ExpertMatrices& b) {
  if (a.I != b.I || a.H != b.H)
    fail("merge: experts of different shapes ([", a.I, ", ", a.H, "] vs [", b.I, ", ", b.H, "]) cannot be merged");
}

}  // namespace

std::vector<int64_t> align_neurons(const ExpertMatrices& leader, const ExpertMatrices& member) {
  check_expert(leader, "leader");
  check_expert(member, "member");
  check_same_shape(leader, member);
  const int64_t I = leader.I, H = leader.H;
  // S[i, j] = ⟨gate_L[i], gate_M[j]⟩ + ⟨up_L[i], up_M[j]⟩ + ⟨down_L[:, i], down_M[:, j]⟩   [I, I]
  const CMap gl(leader.gate.data(), I, H), gm(member.gate.data(), I, H);
  const CMap ul(leader.up.data(), I, H), um(member.up.data(), I, H);
  const CMap dl(leader.down.data(), H, I), dm(member.down.data(), H, I);
  // float32 GEMMs: the assignment needs the order of the similarities, which float keeps far beyond
  // the gaps that decide it (in double the whole alignment took ~1.5x as long at the bench shape).
  RowMat S = gl * gm.transpose();
  S.noalias() += ul * um.transpose();
  S.noalias() += dl.transpose() * dm;
  std::vector<double> cost(static_cast<size_t>(I * I));
  for (int64_t i = 0; i < I; ++i)
    for (int64_t j = 0; j < I; ++j) cost[static_cast<size_t>(i * I + j)] = -static_cast<double>(S(i, j));
  return solve_assignment(cost.data(), I);
}

ExpertMatrices permute_neurons(const ExpertMatrices& e, const std::vector<int64_t>& perm) {
  check_expert(e, "permuted");
  const int64_t I = e.I, H = e.H;
  if (static_cast<int64_t>(perm.size()) != I) fail("merge: a permutation of ", perm.size(), " neurons for an expert of ", I);
  std::vector<char> seen(static_cast<size_t>(I), 0);
  for (int64_t p : perm) {
    if (p < 0 || p >= I || seen[static_cast<size_t>(p)]) fail("merge: neuron order is not a permutation of 0..", I - 1);
    seen[static_cast<size_t>(p)] = 1;
  }
  ExpertMatrices out{I, H, std::vector<float>(e.gate.size()), std::vector<float>(e.up.size()),
                     std::vector<float>(e.down.size())};
  for (int64_t i = 0; i < I; ++i) {
    const int64_t s = perm[static_cast<size_t>(i)];
    std::copy_n(e.gate.begin() + s * H, H, out.gate.begin() + i * H);
    std::copy_n(e.up.begin() + s * H, H, out.up.begin() + i * H);
    for (int64_t h = 0; h < H; ++h) out.down[static_cast<size_t>(h * I + i)] = e.down[static_cast<size_t>(h * I + s)];
  }
  return out;
}

ExpertMatrices weighted_average(const std::vector<const ExpertMatrices*>& experts, const std::vector<double>& w) {
  if (experts.empty() || experts.size() != w.size())
    fail("merge: ", experts.size(), " experts with ", w.size(), " weights (expected one weight per expert, at least one)");
  double total = 0;
  for (size_t m = 0; m < experts.size(); ++m) {
    check_expert(*experts[m], "merged");
    check_same_shape(*experts[0], *experts[m]);
    if (!(w[m] >= 0) || !std::isfinite(w[m])) fail("merge: weight ", w[m], " of member ", m, " (expected a finite value ≥ 0)");
    total += w[m];
  }
  if (!(total > 0)) fail("merge: all member weights are zero (no calibration token reached the group)");
  const ExpertMatrices& e0 = *experts[0];
  ExpertMatrices out{e0.I, e0.H, {}, {}, {}};
  auto avg = [&](std::vector<float> ExpertMatrices::*field, std::vector<float>& dst) {
    const size_t n = (e0.*field).size();
    std::vector<double> acc(n, 0.0);
    for (size_t m = 0; m < experts.size(); ++m) {
      const double c = w[m] / total;
      const std::vector<float>& src = experts[m]->*field;
      for (size_t i = 0; i < n; ++i) acc[i] += c * src[i];
    }
    dst.resize(n);
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(acc[i]);
  };
  avg(&ExpertMatrices::gate, out.gate);
  avg(&ExpertMatrices::up, out.up);
  avg(&ExpertMatrices::down, out.down);
  return out;
}

std::vector<float> expert_forward(const ExpertMatrices& e, const float* x, int64_t n) {
  check_expert(e, "evaluated");
  const int64_t I = e.I, H = e.H;
  const CMap X(x, n, H), G(e.gate.data(), I, H), U(e.up.data(), I, H), D(e.down.data(), H, I);
  const Eigen::MatrixXd g = X.cast<double>() * G.cast<double>().transpose();  // [n, I]
  const Eigen::MatrixXd u = X.cast<double>() * U.cast<double>().transpose();
  Eigen::MatrixXd a(n, I);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < I; ++i) a(t, i) = g(t, i) / (1.0 + std::exp(-g(t, i))) * u(t, i);
  const Eigen::MatrixXd y = a * D.cast<double>().transpose();  // [n, H]
  std::vector<float> out(static_cast<size_t>(n * H));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) out[static_cast<size_t>(t * H + h)] = static_cast<float>(y(t, h));
  return out;
}

}  // namespace moetool
