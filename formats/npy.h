// formats/npy.h — NumPy .npy files (format version 1.0, little-endian, C order) for logits and
// other arrays that users load with numpy.load.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace moetool {

// Writes float32 data of `shape` atomically (temporary name, rename).
void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// A float32 .npy of a known shape written in pieces (elements appended in C order) to
// "<path>.tmp-<pid>" and renamed by finish(); removed if destroyed before. Holds one piece at a time.
class NpyF32Writer {
 public:
  NpyF32Writer(std::string path, std::vector<int64_t> shape);
  ~NpyF32Writer();
  NpyF32Writer(const NpyF32Writer&) = delete;
  NpyF32Writer& operator=(const NpyF32Writer&) = delete;
  void append(const float* data, size_t n);  // n values
  void finish();  // throws naming the file unless exactly the shape's element count was appended

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  uint64_t want_ = 0, have_ = 0;
};

// Reads a float32 (or float64, converted) C-order .npy; returns data and fills shape.
std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape);

}  // namespace moetool
