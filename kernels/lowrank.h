// kernels/lowrank.h — truncated SVD of one weight matrix W [rows = out, cols = in] into factors
// U [rows, r] · V [r, cols], plain (minimises ‖W − Ŵ‖_F) or truncation-aware / whitened (SVD-LLM,
// ASVD: minimises ‖(W − Ŵ)·Xᵀ‖_F on calibration inputs X [N, cols] through their Gram G = XᵀX = S·Sᵀ).
// The whitened SVD factors W·S ≈ Ur Σr Vrᵀ and folds S back, W ≈ (Ur Σr)·(Vrᵀ S⁻¹), so U·V multiplies
// raw inputs. The whitening is done in double on the CPU; the SVD of the float32 W·S runs through
// kernels/linalg.h (LAPACK or cuSOLVER, exact or randomized). The math core of `moetool svd`.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/device.h"

namespace moetool::lowrank {

struct SvdOptions {
  double damp = 0.01;                        // whitening: G + damp·mean(diag G)·I before factoring
  int64_t oversample = 10, power_iters = 4;  // randomized range finder
  double exact_above = 0.25;                 // exact LAPACK SVD when max_rank > exact_above · min(rows, cols)
  uint64_t seed = 0;
  Device device = Device::Cpu;               // passed to linalg::* (CUDA paths exist there)
};

// The whitening of a Gram matrix: S [n, n] with S·Sᵀ = G_damped (clamped, on the eigen path). S is
// lower triangular from the Cholesky factor of G_damped, or — when Cholesky fails or finds a pivot
// L_ii² below kPivotFloor·max diag (numerically singular, e.g. rank-deficient inputs with no
// damping) — S = Q·Λ^{1/2} from G_damped = Q Λ Qᵀ with eigenvalues clamped at max(λ_max·1e-6, tiny).
struct Whitening {
  static constexpr double kPivotFloor = 1e-10;  // relative to max diag(G_damped)
  static constexpr double kEigenFloor = 1e-6;   // clamp of the eigen path, relative to λ_max

  int64_t n = 0;
  bool cholesky = true;     // false: eigen fallback
  double delta = 0;         // the damping added to the diagonal: damp·mean(diag G)
  std::vector<double> S;    // [n, n] row-major (lower triangular when cholesky)
  std::vector<double> eig;  // [n] the clamped eigenvalues Λ (eigen path only; S = Q·diag(√eig))

  // In place on the rows of M [m, n] (row-major): M ← M · S⁻¹ (for V = Vrᵀ S⁻¹), and M ← M · S.
  void apply_inverse(double* M, int64_t m) const;
  void apply(double* M, int64_t m) const;
};

// Whitening of gram [n, n] (row-major, symmetric; double). damp ≥ 0. Throws moetool::Error (one line)
// on non-finite entries, an asymmetric or negative-diagonal gram, or one whose damped form has no
// positive eigenvalue (e.g. all zeros).
Whitening whiten(const double* gram, int64_t n, double damp);

// The (whitened) singular spectrum of one matrix, enough to form factors at any rank ≤ max_rank
// and to give the truncation error at each rank without recomputing.
class Decomposition {
 public:
  Decomposition() = default;
  // Assembled by decompose(): Ur [rows, k] (orthonormal columns, without σ), sigma [k] descending,
  // V [k, cols] (Vrᵀ, or Vrᵀ·S⁻¹ when whitened), total the energy below. Checks the sizes agree.
  Decomposition(int64_t rows, int64_t cols, bool whitened, double total, std::vector<double> sigma,
                std::vector<float> Ur, std::vector<float> V);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t max_rank() const { return static_cast<int64_t>(sigma_.size()); }
  bool whitened() const { return whitened_; }
  // [max_rank] of W (plain) or W·S (whitened), descending.
  const std::vector<double>& singular_values() const { return sigma_; }
  // ‖W‖_F² (plain) or ‖W·S‖_F² = tr(W G Wᵀ) (whitened), computed in double from W (not from σ).
  double total_energy() const { return total_; }
  // Squared truncation error at rank r (0 ≤ r ≤ max_rank): total_energy − Σ_{i<r} σ_i², clamped ≥ 0.
  // Plain: ‖W − Ŵ_r‖_F². Whitened: ‖(W − Ŵ_r)·S‖_F² = tr((W−Ŵ)G(W−Ŵ)ᵀ) with G the damped Gram.
  double error2(int64_t r) const;
  // Factors at rank r ≤ max_rank: U [rows, r] = Ur·diag(σ) and V [r, cols] (= Vrᵀ·S⁻¹ when
  // whitened), so U·V ≈ W acting on raw inputs. float32 row-major.
  void factors(int64_t r, std::vector<float>& U, std::vector<float>& V) const;

 private:
  int64_t rows_ = 0, cols_ = 0;
  bool whitened_ = false;
  double total_ = 0;
  std::vector<double> sigma_;  // [k]
  std::vector<double> tail_;   // [k + 1] error2 by rank, precomputed
  std::vector<float> Ur_;      // [rows, k]
  std::vector<float> V_;       // [k, cols]
};

// W [rows, cols]; gram: nullptr (plain SVD) or [cols, cols] row-major double XᵀX of the inputs this
// matrix multiplies (symmetric). max_rank in 1..min(rows, cols). Throws (one line) on max_rank out
// of range, non-finite input, a gram whose damped form cannot be factored.
Decomposition decompose(const float* W, int64_t rows, int64_t cols, const double* gram, int64_t max_rank,
                        const SvdOptions& opt = {});
// The same with a whitening computed once (matrices that multiply the same inputs, e.g. an expert's
// gate and up projections, share it); wh.n must equal cols. opt.damp is not used (wh has its own).
Decomposition decompose_whitened(const float* W, int64_t rows, int64_t cols, const Whitening& wh, int64_t max_rank,
                                 const SvdOptions& opt = {});

}  // namespace moetool::lowrank
