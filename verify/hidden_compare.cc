// verify/hidden_compare.cc — HiddenRecorder and HiddenComparer (verify/hidden_compare.h).
#include "verify/hidden_compare.h"

#include <algorithm>

#include "core/error.h"

namespace moetool {

HiddenRecorder::Layer& HiddenRecorder::slot(int64_t l) {
  check(l >= 0, "hidden-state recorder: layer ", l);
  if (layers_.size() <= static_cast<size_t>(l)) layers_.resize(static_cast<size_t>(l) + 1);
  return layers_[static_cast<size_t>(l)];
}

void HiddenRecorder::on_hidden(int64_t l, const float* h, int64_t n, int64_t H) {
  Layer& s = slot(l);
  s.host.assign(h, h + n * H);
  s.n = n;
  s.H = H;
}

bool HiddenRecorder::on_hidden_device(int64_t l, const float* dh, int64_t n, int64_t H) {
  const size_t bytes = static_cast<size_t>(n * H) * sizeof(float);
  // Leave room for the forward pass that follows (a quarter of the GPU or 2 GiB, whichever is less).
  const size_t reserve = std::min<size_t>(cuda::total_memory() / 4, size_t{2} << 30);
  if (cuda::free_memory() < bytes + reserve) return false;
  Layer& s = slot(l);
  s.dev.resize(static_cast<size_t>(n * H));
  cuda::copy(s.dev.get(), dh, bytes);
  s.host.clear();
  s.n = n;
  s.H = H;
  return true;
}

const std::vector<float>* HiddenRecorder::host_rows(int64_t l) const {
  if (l < 0 || static_cast<size_t>(l) >= layers_.size()) return nullptr;
  const Layer& s = layers_[static_cast<size_t>(l)];
  return s.n > 0 && !s.dev.get() ? &s.host : nullptr;
}

const float* HiddenRecorder::device_rows(int64_t l) const {
  if (l < 0 || static_cast<size_t>(l) >= layers_.size()) return nullptr;
  return layers_[static_cast<size_t>(l)].dev.get();
}

int64_t HiddenRecorder::rows(int64_t l) const {
  if (l < 0 || static_cast<size_t>(l) >= layers_.size()) return 0;
  return layers_[static_cast<size_t>(l)].n;
}

void HiddenComparer::on_hidden(int64_t l, const float* h, int64_t n, int64_t H) {
  check(base_.rows(l) == n, "hidden-state comparison: layer ", l, ": the base recorded ", base_.rows(l),
        " rows, the candidate has ", n);
  if (const auto* b = base_.host_rows(l)) {
    cmp_.add(l, b->data(), h, n, H);
    return;
  }
  const float* db = base_.device_rows(l);
  check(db != nullptr, "hidden-state comparison: layer ", l, " was not recorded for the base");
  std::vector<float> b(static_cast<size_t>(n * H));
  cuda::download(b.data(), db, b.size() * sizeof(float));
  cmp_.add(l, b.data(), h, n, H);
}

bool HiddenComparer::on_hidden_device(int64_t l, const float* dh, int64_t n, int64_t H) {
  const float* db = base_.device_rows(l);
  if (!db) return false;  // the base's rows are on the host: compared there
  check(base_.rows(l) == n, "hidden-state comparison: layer ", l, ": the base recorded ", base_.rows(l),
        " rows, the candidate has ", n);
  cuda::Buffer<double> d(static_cast<size_t>(3 * n));
  cuda::compare_rows(db, dh, n, H, d.get());
  const std::vector<double> v = d.to_host(static_cast<size_t>(3 * n));
  std::vector<RowSimilarity> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows[static_cast<size_t>(i)] = {v[3 * i], v[3 * i + 1], v[3 * i + 2]};
  cmp_.add_rows(l, H, rows);
  return true;
}

}  // namespace moetool
