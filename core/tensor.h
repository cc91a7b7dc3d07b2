// core/tensor.h — a typed, shaped, contiguous row-major block of bytes. A Tensor is either a view
// into memory kept alive by `owner` (e.g. a memory-mapped checkpoint: zero-copy) or owns its bytes.
// Shapes follow safetensors / PyTorch order: shape[0] is the outermost (slowest) dimension.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace moetool {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s);        // product of dims; 1 for rank 0
std::string shape_str(const Shape& s);  // "[2048, 128]"

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  uint8_t* data = nullptr;           // contiguous row-major bytes (read-only when mapped)
  std::shared_ptr<const void> owner;  // keeps the memory alive (mapping or owned buffer)

  int64_t numel() const { return moetool::numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }

  // A new zero-filled tensor that owns its (64-byte aligned) memory.
  static Tensor zeros(DType dtype, Shape shape);
  // A new owned copy of this tensor's bytes.
  Tensor clone() const;
  // Rows [begin, end) of dimension 0, sharing memory (zero-copy).
  Tensor slice0(int64_t begin, int64_t end) const;
  // Same bytes, new shape with the same element count.
  Tensor reshaped(Shape s) const;
  // Converts (or copies) to an owned tensor of another float dtype.
  Tensor to(DType t) const;
  // Contents as float32 (copying, converting from any float dtype).
  std::vector<float> to_f32() const;

  template <class T>
  T* as() const { return reinterpret_cast<T*>(data); }
};

}  // namespace moetool
