// core/tensor.cc — Tensor helpers (see tensor.h).
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace moetool {

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (int64_t d : t.shape) check(d >= 0, "tensor shape ", shape_str(t.shape), " has a negative dimension");
  size_t n = t.nbytes();
  size_t alloc = (n + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) fail("out of memory allocating ", n, " bytes for a tensor of shape ", shape_str(t.shape));
  std::memset(p, 0, alloc);
  t.data = static_cast<uint8_t*>(p);
  t.owner = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = zeros(dtype, shape);
  if (nbytes()) std::memcpy(t.data, data, nbytes());
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  check(!shape.empty() && begin >= 0 && begin <= end && end <= shape[0], "slice [", begin, ", ", end,
        ") out of range for tensor of shape ", shape_str(shape));
  Tensor t = *this;
  t.shape[0] = end - begin;
  const size_t row = shape[0] ? nbytes() / static_cast<size_t>(shape[0]) : 0;
  t.data = data + row * static_cast<size_t>(begin);
  return t;
}

Tensor Tensor::reshaped(Shape s) const {
  check(moetool::numel(s) == numel(), "cannot reshape ", shape_str(shape), " to ", shape_str(s));
  Tensor t = *this;
  t.shape = std::move(s);
  return t;
}

Tensor Tensor::to(DType to_type) const {
  Tensor t = zeros(to_type, shape);
  convert(dtype, data, to_type, t.data, static_cast<size_t>(numel()));
  return t;
}

std::vector<float> Tensor::to_f32() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  moetool::to_f32(dtype, data, v.data(), v.size());
  return v;
}

}  // namespace moetool
