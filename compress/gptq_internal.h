// compress/gptq_internal.h — the parts of GPTQ shared by its integer (compress/gptq.cc) and ggml
// block (compress/gptq_ggml.cc) forms (not a public API): the damped inverse-Hessian factor and the
// lazy batch update of the columns after a block.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "formats/ggml_types.h"

namespace moetool::gptq_detail {

// The upper Cholesky factor U of (H_perm + λI)⁻¹ (H_perm = H with rows and columns in `perm`
// order, its diagonal replaced by `diag`, n × n row-major), λ = damp · mean(diag); λ is raised ×10
// (up to 4 times) while a factorization fails. Throws naming `what` when it still fails.
struct Factor {
  std::vector<float> U;    // [n, n] upper triangular, float32 for the updates
  std::vector<double> Ud;  // [n] its diagonal in double
  double damp = 0, lambda = 0;
};
Factor factor_hessian(const double* H, int64_t n, const std::vector<double>& diag, const std::vector<int64_t>& perm,
                      double damp, std::string_view what);

// Dead columns (H_jj = 0, inputs always zero), as the reference handles them: `diag` gets H's
// diagonal with 1 in their place, `Wd` a copy of W [rows, n] with their weights zeroed. Returns
// their count. Throws naming `what` on a negative diagonal.
int64_t dead_columns(const float* W, int64_t rows, const double* H, int64_t n, std::vector<double>& diag,
                     std::vector<char>& dead, std::vector<float>& Wd, std::string_view what);

// Throws naming `what` on a non-finite weight of W [rows, cols] or entry of H [cols, cols].
void check_finite(const float* W, int64_t rows, int64_t cols, const double* H, std::string_view what);

// The checks every encoder over ggml blocks (GPTQ, AutoRound) makes of W [rows, cols] and H [cols,
// cols] for type t: a type with a level grid, a non-empty matrix of whole blocks, a dense-Hessian
// size, finite values. Throws naming `what` and `method` ("GPTQ", "AutoRound").
void check_ggml_matrix(const float* W, int64_t rows, int64_t cols, const double* H, GGMLType t,
                       std::string_view method, std::string_view what);

// W[r0 : r0+m, i2 : n] −= Err[m, i2−i1] · U[i1 : i2, i2 : n] (W row-major [·, n] in processing
// order, Err the block's scaled errors): plain loops when `small` (Eigen would start threads of its
// own inside an OpenMP region), Eigen's GEMM otherwise. Nothing when i2 = n.
void batch_update(float* W, int64_t n, int64_t r0, int64_t m, int64_t i1, int64_t i2, const float* Err,
                  const float* U, bool small);

}  // namespace moetool::gptq_detail
