// kernels/linear_bf16.h — a weight matrix multiplied the way the CUDA engine multiplies in bf16:
// weights and inputs rounded to bfloat16 (round to nearest even), products accumulated in float32.
// The CPU engine's `--dtype bf16` uses it so that CPU and GPU bf16 runs differ by summation order
// only, and so that a CPU run shows what a bf16 deployment of a model gives.
#pragma once

#include <memory>

#include "kernels/linear.h"

namespace moetool {

// A dense copy of m with every weight rounded to bf16; matmul rounds X to bf16 first.
// storage() is "bf16(<m's storage>)", stored_bytes() rows · cols · 2.
std::shared_ptr<const WeightMatrix> make_bf16_matrix(const WeightMatrix& m);

}  // namespace moetool
