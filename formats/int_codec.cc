// formats/int_codec.cc — group-wise integer storage: spec checks, sizes and dequantization (see
// int_codec.h).
#include "formats/int_codec.h"

#include <string>

#include "core/error.h"

namespace moetool {
namespace {
std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }
}  // namespace

IntQuantSpec int_spec_for_cols(IntQuantSpec s, int64_t cols) {
  if (s.group_size > 0 && cols % s.group_size != 0) s.group_size = -1;
  return s;
}

void check_int_spec(const IntQuantSpec& s, int64_t rows, int64_t cols, std::string_view what) {
  if (s.bits < 2 || s.bits > 8) fail(prefix(what), "integer quantization needs 2..8 bits, got ", s.bits);
  if (s.group_size != -1 && s.group_size < 1)
    fail(prefix(what), "group size must be -1 (one group per row) or positive, got ", s.group_size);
  if (rows <= 0 || cols <= 0) fail(prefix(what), "bad matrix shape [", rows, ", ", cols, "]");
  if (s.group_size != -1 && cols % s.group_size != 0)
    fail(prefix(what), "input dimension ", cols, " is not a multiple of the group size ", s.group_size);
}

int64_t int_quant_ngroups(const IntQuantSpec& s, int64_t cols) {
  return s.group_size == -1 ? 1 : (cols + s.group_size - 1) / s.group_size;
}

void int_dequantize(const IntQuantized& q, float* W) {
  check(q.q.size() == static_cast<size_t>(q.rows * q.cols) &&
            q.scales.size() == static_cast<size_t>(q.ngroups * q.rows) && q.zeros.size() == q.scales.size() &&
            q.g_idx.size() == static_cast<size_t>(q.cols),
        "int_dequantize: inconsistent IntQuantized sizes");
  for (int32_t g : q.g_idx) check(g >= 0 && g < q.ngroups, "int_dequantize: g_idx ", g, " out of range");
  const int64_t rows = q.rows, cols = q.cols;
#pragma omp parallel for schedule(static) if (rows * cols >= 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* qr = q.q.data() + r * cols;
    float* wr = W + r * cols;
    for (int64_t j = 0; j < cols; ++j) {
      const size_t gi = static_cast<size_t>(q.g_idx[j] * rows + r);
      wr[j] = q.scales[gi] * static_cast<float>(static_cast<int32_t>(qr[j]) - q.zeros[gi]);
    }
  }
}

uint64_t int_quant_bytes(const IntQuantSpec& s, int64_t rows, int64_t cols) {
  const auto words = [](int64_t n, int bits) { return static_cast<uint64_t>((n * bits + 31) / 32); };
  const uint64_t ngroups = static_cast<uint64_t>(int_quant_ngroups(s, cols));
  return 4 * words(cols, s.bits) * static_cast<uint64_t>(rows)  // qweight
         + 4 * ngroups * words(rows, s.bits)                     // qzeros
         + 2 * ngroups * static_cast<uint64_t>(rows)             // scales
         + 4 * static_cast<uint64_t>(cols);                      // g_idx
}

double int_quant_bpw(const IntQuantSpec& s, int64_t rows, int64_t cols) {
  return rows > 0 && cols > 0 ? 8.0 * static_cast<double>(int_quant_bytes(s, rows, cols)) / (rows * cols) : 0.0;
}

}  // namespace moetool
