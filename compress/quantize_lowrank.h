// compress/quantize_lowrank.h — `quantize --format gptq` of a low-rank checkpoint (formats/lowrank.h,
// written by `moetool svd`): every stored factor (U, V, a shared basis, a delta base) is a linear of
// its own and is stored as GPTQ tensors "<factor>.qweight/.qzeros/.scales/.g_idx" under its own name;
// config.json keeps its "lowrank" block (names and aliases unchanged). GPTQ needs each factor's input
// second moments, and they follow from the factored module's: a module M computes
// y = U·(V·x) (+ base·x), so with H_M = Σ x xᵀ over M's calibration inputs
//   V and base see x:        H += H_M
//   U sees z = V·x:          H += V · H_M · Vᵀ   (V as stored, in float)
// summed over every module that uses the factor (a shared basis: all experts of the layer).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/quantize_int.h"
#include "formats/lowrank.h"
#include "formats/model.h"

namespace moetool {

// One factored module that uses a factor, and as what.
struct FactorUse {
  Role role = Role::ExpertGate;
  int64_t expert = -1;
  char as = 'u';  // 'u', 'v' or 'b' (base)
  LowRankLinear lr;
};

// One stored factor tensor of the output.
struct FactorItem {
  std::string name;         // stored tensor name, e.g. "model.layers.0.….experts.3.w1.weight_u"
  std::string first_slot;   // the family-table weight name of its first user (where it is planned)
  int64_t layer = -1, rows = 0, cols = 0;
  DType dtype = DType::F32;  // stored dtype in the source
  int bits = 0;              // 0: kept in float (note says why)
  std::string note;
  std::vector<FactorUse> uses;
};

// Every stored factor of m's factored modules, in table order, with its width: bases at
// o.base_bits (0: o.spec.bits), U and V at o.spec.bits; a factor matched by o.skip, or whose shape
// the packing does not fit (e.g. a rank not a multiple of 32/bits), stays float (a warning says so).
// Throws when a factor is itself stored GPTQ-quantized already.
std::vector<FactorItem> plan_factors(const Model& m, const IntQuantOptions& o, std::vector<std::string>& warnings);

// H [cols, cols] and its token count for a factor, from its users' input moments:
// moments(role, expert) gives a module's input Gram Σ x xᵀ ([in, in], symmetric) and count, or a
// null pointer when the module saw no calibration input.
struct FactorMoments {
  std::vector<double> H;
  int64_t count = 0;
};
using ModuleMoments = std::function<std::pair<const std::vector<double>*, int64_t>(Role role, int64_t expert)>;
FactorMoments factor_moments(const Checkpoint& ck, const FactorItem& f, const ModuleMoments& moments);

}  // namespace moetool
