// kernels/linear_lowrank.h — a weight matrix stored low-rank (formats/lowrank.h): W = U·V, or
// W = base + U·V, multiplied through its factors — Y = (X·Vᵀ)·Uᵀ (+ X·baseᵀ) — without ever forming
// W (to_dense does, for the tools that need the dense matrix).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/tensor.h"
#include "kernels/linear.h"

namespace moetool {

// A WeightMatrix over U [rows, r], V [r, cols] and an optional base [rows, cols]. F32 tensors are
// used in place (zero-copy: a memory-mapped tensor keeps its mapping alive through Tensor::owner);
// other float dtypes (BF16, F16) are converted to float32 once, here. storage() is "lowrank(r=24)"
// or "lowrank(r=24)+base"; stored_bytes() counts U, V and the base fully in their stored dtypes — a
// factor or base shared by several matrices is counted by every matrix that uses it (true totals of
// a checkpoint are formats/inspect.h's job). lowrank() exposes the float32 factors. Throws naming
// `name` unless the tensors are 2-D floats of matching shapes.
std::shared_ptr<const WeightMatrix> make_lowrank_matrix(Tensor U, Tensor V, std::optional<Tensor> base,
                                                        const std::string& name);

}  // namespace moetool
