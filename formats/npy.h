// formats/npy.h — NumPy .npy files (format version 1.0, little-endian, C order) for logits and
// other arrays that users load with numpy.load.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetool {

// Writes float32 data of `shape` atomically (temporary name, rename).
void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// Reads a float32 (or float64, converted) C-order .npy; returns data and fills shape.
std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape);

}  // namespace moetool
