// engine/layer_sweep.cc — calibration chunks pushed through a model layer by layer (see
// layer_sweep.h).
#include "engine/layer_sweep.h"

#include "core/error.h"

namespace moetool {

LayerSweep::LayerSweep(const Engine& engine, const std::vector<std::vector<int32_t>>& chunks) : eng_(engine) {
  const int64_t H = engine.config().hidden_size;
  h_.resize(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    const int64_t n = static_cast<int64_t>(chunks[i].size());
    n_.push_back(n);
    offset_.push_back(tokens_);
    tokens_ += n;
    h_[i].resize(static_cast<size_t>(n * H));
    engine.embed(chunks[i].data(), n, h_[i].data());
  }
}

size_t LayerSweep::chunks_within(int64_t max_tokens) const {
  size_t k = 0;
  for (int64_t t = 0; k < n_.size() && t < max_tokens; ++k) t += n_[k];
  return k;
}

const std::vector<float>& LayerSweep::input(size_t i) const {
  check(last_ >= 0, "layer sweep: no layer has run");
  if (!last_advanced_) return h_.at(i);
  check(i < kept_.size(), "layer sweep: the input of chunk ", i, " to layer ", last_, " was not kept");
  return kept_[i];
}

void LayerSweep::run_chunk(const Engine& engine, int64_t l, const LayerWeights& lw, size_t i, float* h,
                           SweepObserver* obs) const {
  KVCache kc = engine.new_cache(n_[i], l);  // this layer's rows only
  if (obs) obs->on_chunk(i, offset_[i], n_[i]);
  engine.run_layer(l, lw, h, n_[i], 0, kc, obs);
}

void LayerSweep::run(int64_t l, SweepObserver* obs, SweepStreams streams, int64_t keep_input_tokens) {
  check(l == next_, "layer sweep: layer ", l, " run where layer ", next_, " is next");
  const bool advance = streams == SweepStreams::Advance;
  kept_.clear();
  if (advance) kept_.resize(chunks_within(keep_input_tokens));
  auto lw = eng_.load_layer(l);
  std::vector<float> scratch;
  for (size_t i = 0; i < h_.size(); ++i) {
    if (i < kept_.size()) kept_[i] = h_[i];
    float* h = h_[i].data();
    if (!advance) {
      scratch = h_[i];
      h = scratch.data();
    }
    run_chunk(eng_, l, *lw, i, h, obs);
  }
  last_ = l;
  last_advanced_ = advance;
  if (advance) next_ = l + 1;
}

void LayerSweep::check_rerun(int64_t l, size_t chunks, const char* what) const {
  check(l == last_, "layer sweep: ", what, " of layer ", l, " after a run of layer ", last_);
  check(!last_advanced_ || chunks <= kept_.size(), "layer sweep: ", what, " of layer ", l, " over ", chunks,
        " chunks, whose inputs were kept for ", kept_.size());
}

std::vector<std::vector<float>> LayerSweep::rerun(int64_t l, const Engine& engine, SweepObserver* obs,
                                                  int64_t max_tokens) const {
  const size_t k = chunks_within(max_tokens);
  check_rerun(l, k, "re-run");
  auto lw = engine.load_layer(l);
  std::vector<std::vector<float>> out(k);
  for (size_t i = 0; i < k; ++i) {
    out[i] = input(i);
    run_chunk(engine, l, *lw, i, out[i].data(), obs);
  }
  return out;
}

void LayerSweep::rerun_advance(int64_t l, const Engine& engine, SweepObserver* obs) {
  check_rerun(l, h_.size(), "re-run");
  auto lw = engine.load_layer(l);
  for (size_t i = 0; i < h_.size(); ++i) {
    if (last_advanced_) h_[i] = std::move(kept_[i]);
    run_chunk(engine, l, *lw, i, h_[i].data(), obs);
  }
  kept_.clear();
  last_advanced_ = true;
  next_ = l + 1;
}

void LayerSweep::release() {
  for (auto& h : h_) h = {};
  kept_ = {};
}

}  // namespace moetool
