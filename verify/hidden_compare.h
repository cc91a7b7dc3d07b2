// verify/hidden_compare.h — the observers behind `moetool verify`'s per-layer hidden-state
// comparison: HiddenRecorder keeps a base model's residual stream after each layer, HiddenComparer
// compares a candidate's with it (HiddenStateComparison). On a CUDA engine the recorded rows stay in
// GPU memory and are compared there, so only three numbers per row come back to the host.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend_cuda.h"
#include "engine/engine.h"
#include "verify/metrics.h"

namespace moetool {

class HiddenRecorder final : public LayerObserver {
 public:
  unsigned needs() const override { return kObserveHidden; }
  void on_hidden(int64_t layer, const float* h, int64_t n, int64_t H) override;
  // Keeps a device copy while GPU memory allows (else returns false: the engine calls on_hidden).
  bool on_hidden_device(int64_t layer, const float* dh, int64_t n, int64_t H) override;

  // Layer l's rows [n, H] on the host, or null (absent, or kept on the device).
  const std::vector<float>* host_rows(int64_t l) const;
  // Layer l's rows [n, H] in GPU memory, or null.
  const float* device_rows(int64_t l) const;
  int64_t rows(int64_t l) const;  // n of layer l (0 when absent)

 private:
  struct Layer {
    std::vector<float> host;
    cuda::Buffer<float> dev;
    int64_t n = 0, H = 0;
  };
  Layer& slot(int64_t l);
  std::vector<Layer> layers_;
};

class HiddenComparer final : public LayerObserver {
 public:
  HiddenComparer(const HiddenRecorder& base, HiddenStateComparison& cmp) : base_(base), cmp_(cmp) {}
  unsigned needs() const override { return kObserveHidden; }
  void on_hidden(int64_t layer, const float* h, int64_t n, int64_t H) override;
  bool on_hidden_device(int64_t layer, const float* dh, int64_t n, int64_t H) override;

 private:
  const HiddenRecorder& base_;
  HiddenStateComparison& cmp_;
};

}  // namespace moetool
