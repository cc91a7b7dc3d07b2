// convert/router_fit.cc — centroid and ridge routers, and the calibration routing probe (see
// router_fit.h).
#include "convert/router_fit.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace moetool {

namespace {
using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Indices of the k largest values of v[0..E) (ties: lower index first), as the engine chooses.
void top_k(const double* v, int64_t E, int64_t k, std::vector<int32_t>& idx) {
  idx.resize(static_cast<size_t>(E));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return v[a] != v[b] ? v[a] > v[b] : a < b;
  });
  idx.resize(static_cast<size_t>(k));
}
}  // namespace

std::vector<float> centroid_router(const float* gate, int64_t H, const NeuronGroups& groups) {
  const int64_t E = static_cast<int64_t>(groups.size());
  std::vector<float> R(static_cast<size_t>(E * H), 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    std::vector<double> acc(static_cast<size_t>(H), 0.0);
    for (int64_t i : groups[static_cast<size_t>(e)]) {
      const float* r = gate + i * H;
      double s = 0;
      for (int64_t h = 0; h < H; ++h) s += static_cast<double>(r[h]) * r[h];
      if (s <= 0) continue;
      const double inv = 1.0 / std::sqrt(s);
      for (int64_t h = 0; h < H; ++h) acc[static_cast<size_t>(h)] += r[h] * inv;
    }
    const double n = static_cast<double>(std::max<size_t>(1, groups[static_cast<size_t>(e)].size()));
    for (int64_t h = 0; h < H; ++h) R[static_cast<size_t>(e * H + h)] = static_cast<float>(acc[static_cast<size_t>(h)] / n);
  }
  return R;
}

RoutingProbe::RoutingProbe(std::vector<float> X, int64_t T, int64_t H, const float* A, int64_t I, const float* down,
                           const NeuronGroups& groups, const std::vector<int64_t>& shared)
    : X_(std::move(X)), T_(T), H_(H), E_(static_cast<int64_t>(groups.size())) {
  check(static_cast<int64_t>(X_.size()) == T * H, "routing probe: inputs have the wrong size");
  const int64_t E1 = E_ + 1;
  // Gathered down_proj columns per part (experts, then shared): [H, n_part].
  std::vector<MatF> D(static_cast<size_t>(E1));
  std::vector<const std::vector<int64_t>*> parts;
  for (const auto& g : groups) parts.push_back(&g);
  parts.push_back(&shared);
  for (int64_t p = 0; p < E1; ++p) {
    const auto& idx = *parts[static_cast<size_t>(p)];
    MatF d(H, static_cast<int64_t>(idx.size()));
    for (int64_t h = 0; h < H; ++h)
      for (size_t j = 0; j < idx.size(); ++j) d(h, static_cast<int64_t>(j)) = down[h * I + idx[j]];
    D[static_cast<size_t>(p)] = std::move(d);
  }
  gram_.assign(static_cast<size_t>(T * E1 * E1), 0.0);
  // Token blocks keep the per-part outputs at about 128 MB.
  const int64_t B = std::max<int64_t>(1, std::min<int64_t>(T, (int64_t{1} << 25) / std::max<int64_t>(1, E1 * H)));
  std::vector<MatF> U(static_cast<size_t>(E1));
  for (int64_t t0 = 0; t0 < T; t0 += B) {
    const int64_t b = std::min(B, T - t0);
    for (int64_t p = 0; p < E1; ++p) {
      const auto& idx = *parts[static_cast<size_t>(p)];
      if (idx.empty()) {
        U[static_cast<size_t>(p)] = MatF::Zero(b, H);
        continue;
      }
      MatF a(b, static_cast<int64_t>(idx.size()));
      for (int64_t r = 0; r < b; ++r)
        for (size_t j = 0; j < idx.size(); ++j) a(r, static_cast<int64_t>(j)) = A[(t0 + r) * I + idx[j]];
      U[static_cast<size_t>(p)].noalias() = a * D[static_cast<size_t>(p)].transpose();  // [b, H]
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < b; ++r) {
      double* g = gram_.data() + (t0 + r) * E1 * E1;
      for (int64_t p = 0; p < E1; ++p)
        for (int64_t q = p; q < E1; ++q) {
          const float* x = U[static_cast<size_t>(p)].data() + r * H;
          const float* y = U[static_cast<size_t>(q)].data() + r * H;
          double s = 0;
          for (int64_t h = 0; h < H; ++h) s += static_cast<double>(x[h]) * y[h];
          g[p * E1 + q] = g[q * E1 + p] = s;
        }
    }
  }
}

std::vector<double> RoutingProbe::output_norms() const {
  const int64_t E1 = E_ + 1;
  std::vector<double> y(static_cast<size_t>(T_ * E_));
  for (int64_t t = 0; t < T_; ++t)
    for (int64_t e = 0; e < E_; ++e)
      y[static_cast<size_t>(t * E_ + e)] = std::sqrt(std::max(0.0, gram_[static_cast<size_t>((t * E1 + e) * E1 + e)]));
  return y;
}

double RoutingProbe::error_for(const std::vector<std::vector<int32_t>>& sel, const std::vector<std::vector<float>>& w,
                               int64_t k) const {
  const int64_t E1 = E_ + 1;
  double num = 0, den = 0;
  std::vector<double> c(static_cast<size_t>(E1));
  for (int64_t t = 0; t < T_; ++t) {
    const double* g = gram_.data() + t * E1 * E1;
    std::fill(c.begin(), c.end(), 1.0);  // dense − MoE coefficient of each part
    c[static_cast<size_t>(E_)] = 0.0;    // the shared part is always exact
    for (int64_t i = 0; i < k; ++i)
      c[static_cast<size_t>(sel[static_cast<size_t>(t)][static_cast<size_t>(i)])] -=
          static_cast<double>(k) * w[static_cast<size_t>(t)][static_cast<size_t>(i)];
    for (int64_t p = 0; p < E1; ++p)
      for (int64_t q = 0; q < E1; ++q) {
        num += c[static_cast<size_t>(p)] * c[static_cast<size_t>(q)] * g[p * E1 + q];
        den += g[p * E1 + q];
      }
  }
  return den > 0 ? num / den : 0.0;
}

std::vector<double> RoutingProbe::logits(const std::vector<float>& R) const {
  check(static_cast<int64_t>(R.size()) == E_ * H_, "routing probe: router has the wrong size");
  const Eigen::Map<const MatF> X(X_.data(), T_, H_), W(R.data(), E_, H_);
  const MatF Z = X * W.transpose();  // [T, E]
  return std::vector<double>(Z.data(), Z.data() + T_ * E_);
}

double RoutingProbe::error_at(const std::vector<double>& Z, double scale, int64_t k) const {
  std::vector<std::vector<int32_t>> sel;
  std::vector<std::vector<float>> w;
  route(Z, scale, k, sel, w);
  return error_for(sel, w, k);
}

void RoutingProbe::routing(const std::vector<float>& R, int64_t k, std::vector<std::vector<int32_t>>& sel,
                           std::vector<std::vector<float>>& w) const {
  route(logits(R), 1.0, k, sel, w);
}

void RoutingProbe::route(const std::vector<double>& Z, double scale, int64_t k, std::vector<std::vector<int32_t>>& sel,
                         std::vector<std::vector<float>>& w) const {
  sel.assign(static_cast<size_t>(T_), {});
  w.assign(static_cast<size_t>(T_), std::vector<float>(static_cast<size_t>(k)));
  std::vector<double> z(static_cast<size_t>(E_));
  for (int64_t t = 0; t < T_; ++t) {
    for (int64_t e = 0; e < E_; ++e) z[static_cast<size_t>(e)] = Z[static_cast<size_t>(t * E_ + e)] * scale;
    top_k(z.data(), E_, k, sel[static_cast<size_t>(t)]);
    // Renormalised softmax over the chosen experts = softmax restricted to them.
    const auto& st = sel[static_cast<size_t>(t)];
    auto& wt = w[static_cast<size_t>(t)];
    const double mx = z[static_cast<size_t>(st[0])];
    double sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += (wt[static_cast<size_t>(i)] = static_cast<float>(std::exp(z[static_cast<size_t>(st[static_cast<size_t>(i)])] - mx)));
    for (auto& x : wt) x = static_cast<float>(x / sum);
  }
}

double RoutingProbe::recon_error(const std::vector<float>& R, double scale, int64_t k) const {
  return error_at(logits(R), scale, k);
}

double RoutingProbe::oracle_error(int64_t k) const {
  const std::vector<double> y = output_norms();
  std::vector<std::vector<int32_t>> sel(static_cast<size_t>(T_));
  std::vector<std::vector<float>> w(static_cast<size_t>(T_), std::vector<float>(static_cast<size_t>(k), 1.0f / static_cast<float>(k)));
  for (int64_t t = 0; t < T_; ++t) top_k(y.data() + t * E_, E_, k, sel[static_cast<size_t>(t)]);
  return error_for(sel, w, k);
}

std::pair<double, double> RoutingProbe::best_scale(const std::vector<float>& R, int64_t k) const {
  const std::vector<double> Z = logits(R);
  double s1 = 0, s2 = 0;
  for (double z : Z) {
    s1 += z;
    s2 += z * z;
  }
  const double n = static_cast<double>(std::max<size_t>(1, Z.size()));
  const double sd = std::sqrt(std::max(0.0, s2 / n - (s1 / n) * (s1 / n)));
  if (!(sd > 0)) return {1.0, error_at(Z, 1.0, k)};
  double best_s = 1.0 / sd, best_e = error_at(Z, best_s, k);
  for (int j = -24; j <= 10; ++j) {
    const double s = std::pow(2.0, j / 2.0) / sd;
    const double e = error_at(Z, s, k);
    if (e < best_e) {
      best_e = e;
      best_s = s;
    }
  }
  return {best_s, best_e};
}

}  // namespace moetool
