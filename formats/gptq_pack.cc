// formats/gptq_pack.cc — IntQuantized ⇄ GPTQ v1 checkpoint tensors (see gptq_pack.h for the layout
// and the sources it was checked against).
#include "formats/gptq_pack.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace moetool {
namespace {

std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }

// Word w of the little-endian bit stream of n `bits`-bit values val(0 .. n−1).
template <class Val>
uint32_t stream_word(int64_t w, int64_t n, int bits, Val&& val) {
  const int64_t lo = 32 * w;
  const int64_t first = lo / bits, last = std::min<int64_t>((lo + 31) / bits, n - 1);
  uint32_t word = 0;
  for (int64_t i = first; i <= last; ++i) {
    const int64_t start = i * bits - lo;  // may be negative: the value began in the previous word
    const uint32_t v = val(i);
    word |= start >= 0 ? v << start : v >> (-start);
  }
  return word;
}

}  // namespace

void check_gptq_shape(int bits, int64_t rows, int64_t cols, int64_t ngroups, std::string_view what) {
  if (bits < 2 || bits > 8) fail(prefix(what), "GPTQ bits must be 2..8, got ", bits);
  if (rows <= 0 || cols <= 0) fail(prefix(what), "bad GPTQ matrix shape [", rows, ", ", cols, "]");
  if ((cols * bits) % 32 != 0)
    fail(prefix(what), "input dimension ", cols, " × ", bits, " bits is not a multiple of 32 (qweight packing)");
  if ((rows * bits) % 32 != 0)
    fail(prefix(what), "output dimension ", rows, " × ", bits, " bits is not a multiple of 32 (qzeros packing)");
  if (ngroups < 1 || ngroups > cols) fail(prefix(what), "GPTQ group count ", ngroups, " not in 1 .. ", cols);
}

void check_gptq_g_idx(const int32_t* g_idx, int64_t cols, int64_t ngroups, std::string_view what) {
  for (int64_t j = 0; j < cols; ++j)
    if (g_idx[j] < 0 || g_idx[j] >= ngroups)
      fail(prefix(what), "g_idx[", j, "] = ", g_idx[j], " is outside 0 .. ", ngroups - 1);
}

GPTQTensors gptq_pack(const IntQuantized& q) {
  const int bits = q.spec.bits;
  const int64_t rows = q.rows, cols = q.cols, ng = q.ngroups;
  check_gptq_shape(bits, rows, cols, ng, "gptq_pack");
  check(q.q.size() == static_cast<size_t>(rows * cols) && q.scales.size() == static_cast<size_t>(ng * rows) &&
            q.zeros.size() == q.scales.size() && q.g_idx.size() == static_cast<size_t>(cols),
        "gptq_pack: inconsistent IntQuantized sizes");
  check_gptq_g_idx(q.g_idx.data(), cols, ng, "gptq_pack");
  const uint32_t maxq = (1u << bits) - 1u;
  for (size_t k = 0; k < q.q.size(); ++k)
    if (q.q[k] > maxq) fail("gptq_pack: q[", k / cols, ", ", k % cols, "] = ", int(q.q[k]), " exceeds ", maxq);
  for (size_t k = 0; k < q.zeros.size(); ++k)
    if (q.zeros[k] < 1 || q.zeros[k] > static_cast<int32_t>(maxq) + 1)
      fail("gptq_pack: zero ", q.zeros[k], " of group ", k / rows, ", row ", k % rows, " cannot be stored in the v1 layout (",
           "it stores zero − 1 in ", bits, " bits: zero must be 1 .. ", maxq + 1, ")");

  GPTQTensors t;
  t.rows = rows, t.cols = cols, t.ngroups = ng, t.bits = bits;
  const int64_t wq = cols * bits / 32, wz = rows * bits / 32;
  t.qweight.resize(static_cast<size_t>(wq * rows));
  t.qzeros.resize(static_cast<size_t>(ng * wz));
  t.scales.resize(static_cast<size_t>(ng * rows));
  t.g_idx = q.g_idx;
#pragma omp parallel for schedule(static) if (rows * cols >= 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* qr = q.q.data() + r * cols;
    for (int64_t w = 0; w < wq; ++w)
      t.qweight[static_cast<size_t>(w * rows + r)] =
          static_cast<int32_t>(stream_word(w, cols, bits, [&](int64_t i) { return uint32_t{qr[i]}; }));
  }
  for (int64_t g = 0; g < ng; ++g) {
    const int32_t* zg = q.zeros.data() + g * rows;
    for (int64_t w = 0; w < wz; ++w)
      t.qzeros[static_cast<size_t>(g * wz + w)] = static_cast<int32_t>(
          stream_word(w, rows, bits, [&](int64_t r) { return static_cast<uint32_t>(zg[r] - 1); }));
  }
  for (size_t k = 0; k < t.scales.size(); ++k) {
    t.scales[k] = f32_to_f16(q.scales[k]);
    if (!std::isfinite(f16_to_f32(t.scales[k])))
      fail("gptq_pack: scale ", q.scales[k], " of group ", k / rows, ", row ", k % rows, " is not finite in f16");
  }
  return t;
}

IntQuantized gptq_unpack(int bits, int64_t rows, int64_t cols, const int32_t* qweight, const int32_t* qzeros,
                         const uint16_t* scales, const int32_t* g_idx, int64_t ngroups, std::string_view what) {
  check_gptq_shape(bits, rows, cols, ngroups, what);
  check_gptq_g_idx(g_idx, cols, ngroups, what);
  IntQuantized q;
  q.spec.bits = bits;
  q.spec.group_size = ngroups == 1 ? -1 : (cols + ngroups - 1) / ngroups;
  q.rows = rows, q.cols = cols, q.ngroups = ngroups;
  q.q.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(ngroups * rows));
  q.zeros.resize(q.scales.size());
  q.g_idx.assign(g_idx, g_idx + cols);
  const int64_t wz = rows * bits / 32;
  bool sym = true;
  for (int64_t g = 0; g < ngroups; ++g)
    for (int64_t r = 0; r < rows; ++r) {
      const size_t k = static_cast<size_t>(g * rows + r);
      q.scales[k] = f16_to_f32(scales[k]);
      if (!std::isfinite(q.scales[k]))
        fail(prefix(what), "scales[", g, ", ", r, "] is ", q.scales[k], " (must be finite)");
      q.zeros[k] = static_cast<int32_t>(gptq_stream_get(qzeros + g * wz, 1, r, bits)) + 1;
      sym = sym && q.zeros[k] == (1 << (bits - 1));
    }
  q.spec.sym = sym;
#pragma omp parallel for schedule(static) if (rows * cols >= 65536)
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* qr = q.q.data() + r * cols;
    for (int64_t i = 0; i < cols; ++i) qr[i] = static_cast<uint8_t>(gptq_stream_get(qweight + r, rows, i, bits));
  }
  return q;
}

IntQuantized gptq_unpack(const GPTQTensors& t, std::string_view what) {
  check_gptq_shape(t.bits, t.rows, t.cols, t.ngroups, what);
  check(t.qweight.size() == static_cast<size_t>(t.cols * t.bits / 32 * t.rows) &&
            t.qzeros.size() == static_cast<size_t>(t.ngroups * (t.rows * t.bits / 32)) &&
            t.scales.size() == static_cast<size_t>(t.ngroups * t.rows) && t.g_idx.size() == static_cast<size_t>(t.cols),
        prefix(what), "inconsistent GPTQ tensor sizes");
  return gptq_unpack(t.bits, t.rows, t.cols, t.qweight.data(), t.qzeros.data(), t.scales.data(), t.g_idx.data(),
                     t.ngroups, what);
}

}  // namespace moetool
