// engine/calibrate.h — calibration statistics for convert, prune, merge and quantize, collected
// layer by layer: all calibration tokens pass through layer l before layer l+1 is loaded, so only
// one layer's weights plus the calibration set's activations are resident (models larger than RAM
// work). Statistics are saved as a safetensors file (tensors + JSON metadata) so several passes
// reuse one run (`moetool calibrate`).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "engine/engine.h"

namespace moetool {

struct CalibrationOptions {
  bool router = true;             // router logits, selections, tokens / weight mass / output norms per expert
  bool hidden = false;            // residual stream before and after each FFN/MoE block [N, H]
  bool ffn_activations = false;   // FFN / expert intermediate activations (for co-activation)
  bool second_moments = true;     // Σx² per input column per linear (and per expert)
  bool gram = false;              // full XᵀX per linear (and per expert) — large: opt-in
  std::function<void(const std::string&)> progress;  // one line per layer
};

// Identifies one linear: role, layer, expert (-1 when not a routed expert).
struct LinearKey {
  Role role;
  int64_t layer = -1, expert = -1;
  bool operator<(const LinearKey& o) const {
    return std::tie(layer, role, expert) < std::tie(o.layer, o.role, o.expert);
  }
};

struct InputMoments {
  int64_t count = 0;               // rows (tokens) seen
  std::vector<double> sum_sq;      // [cols] Σx²
  std::vector<double> gram;        // [cols, cols] XᵀX, only when requested
};

struct LayerCalibration {
  bool moe = false;
  int64_t num_experts = 0, top_k = 0;
  std::vector<int64_t> tokens_per_expert;     // [E] how often each expert was selected
  std::vector<double> weight_mass;            // [E] Σ routing weights given to it
  std::vector<double> output_norm_sum;        // [E] Σ ‖expert output‖₂ over its routed tokens
  std::vector<double> weighted_output_norm;   // [E] Σ weight × ‖output‖₂ (REAP numerator)
  // [E] EASY-EP: Σ weight × ‖output‖₂ × max(1 − cos(h, h + Σ_routed weight·output), 0) over the expert's
  // tokens, h the residual stream entering the MoE block (a token's contribution: how far the routed
  // experts turn its hidden state).
  std::vector<double> easy_ep;
  std::vector<double> max_abs_output;         // [E] max |output| element over its tokens (super experts)
  std::vector<float> router_logits;           // [N, E]
  std::vector<int32_t> selections;            // [N, k]
  std::vector<float> routing_weights;         // [N, k]
  std::vector<float> hidden_before, ffn_out;  // [N, H] (opt-in)
  // Intermediate activations per expert (-1 = dense FFN): rows are the tokens routed there.
  std::map<int64_t, std::vector<float>> activations;    // expert -> [m, I]
  std::map<int64_t, std::vector<int32_t>> activation_tokens;  // expert -> [m] token index
  // Per linear (and routed expert) of this layer; the last layer's also holds the output head's
  // input (the final-normed hidden states) under LinearKey{Role::LmHead, L − 1, −1}.
  std::map<LinearKey, InputMoments> inputs;
};

struct CalibrationStats {
  std::string model_path;
  std::string fingerprint;  // weights_fingerprint() of the model calibrated ("" in older files)
  int64_t num_tokens = 0, num_chunks = 0, ctx = 0, hidden_size = 0;
  std::vector<LayerCalibration> layers;
  // Experts (layer, expert) that no calibration token was routed to — reported, never dropped.
  std::vector<std::pair<int64_t, int64_t>> unrouted_experts() const;
  void save(const std::string& path, const std::map<std::string, std::string>& metadata) const;
  static CalibrationStats load(const std::string& path);
};

// A digest of a model's shape and some of its weights (embedding rows, every router or attention
// norm): statistics are refused for a model whose digest differs.
std::string weights_fingerprint(const WeightSource& w);
// Throws one line naming `what` (the statistics file) when `st` was not collected on the model `w`:
// another layer count, hidden size, MoE layout or expert count, or — when the file has one — another
// fingerprint.
void check_stats_model(const CalibrationStats& st, const WeightSource& w, const std::string& what);

// Runs the calibration chunks through the model layer by layer.
CalibrationStats calibrate(const Engine& engine, const std::vector<std::vector<int32_t>>& chunks,
                           const CalibrationOptions& opt);

}  // namespace moetool
