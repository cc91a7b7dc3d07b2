// compress/lowrank_inputs.h — what `moetool svd` knows of one MoE layer's calibration: how often each
// expert was routed, and the Gram matrices XᵀX (double) of the inputs of its matrices — the MoE
// input rows routed to the expert (gate and up share them) and its intermediate activations (down).
// From calibration text (a layer sweep, one layer's Grams held at a time) or from saved
// `moetool calibrate --gram` statistics.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/calibrate.h"
#include "engine/layer_sweep.h"
#include "engine/weights.h"

namespace moetool::svd {

struct LayerInputs {
  std::vector<double> freq;                          // [E] routed tokens per expert
  std::map<int64_t, std::vector<double>> gram_in;    // expert → [H, H] (gate / up inputs)
  std::map<int64_t, std::vector<double>> gram_mid;   // expert → [I, I] (down inputs)
  // --targets all-linears: the layer's other linears, by linear_input_owner(role) → [in, in].
  std::map<Role, std::vector<double>> gram_linear;
};

// The linear whose input Gram a non-expert linear uses: k/v use q's (the same x), up gate's, the
// shared expert's up its gate's; every other role its own.
Role linear_input_owner(Role r);

class CalibrationInputs {
 public:
  // From text files (chunked like every pass: ctx tokens, at most `chunks` per file) or from a
  // statistics file (checked against the model; Grams required when `grams`).
  CalibrationInputs(std::shared_ptr<const WeightSource> w, const std::vector<std::string>& texts,
                    const std::string& stats, int64_t ctx, int64_t chunks, bool grams, const DeviceOptions& dev,
                    bool linears = false);
  ~CalibrationInputs();
  int64_t num_tokens() const { return tokens_; }
  // Layer l's inputs; layers are asked in increasing order (the text sweep advances to l).
  LayerInputs layer(int64_t l);

 private:
  std::shared_ptr<const WeightSource> w_;
  bool grams_, linears_;
  std::string stats_path_;
  std::optional<CalibrationStats> stats_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<LayerSweep> sweep_;
  int64_t next_ = 0, tokens_ = 0;
};

}  // namespace moetool::svd
