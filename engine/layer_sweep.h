// engine/layer_sweep.h — the layer sweep every calibration-driven pass runs: the calibration chunks
// are embedded once, then pushed through the model one decoder layer at a time (all chunks through
// layer l before layer l+1 is loaded), so only one layer's weights plus the chunks' residual streams
// are resident. Observers see every chunk of every layer; a layer can be run again from the same
// inputs on another engine over the same model with some matrices replaced (an OverlayWeights: a
// quantized or perturbed linear), its outputs handed back or made the new streams.
//
//   LayerSweep sweep(engine, chunks);
//   for (int64_t l = 0; l < L; ++l) {
//     sweep.run(l, &observer);                        // calibration: statistics of layer l, advance
//     // or: sweep.run(l, &obs, SweepStreams::Keep);  // inputs kept ...
//     //     sweep.rerun_advance(l, quantized_engine);  // ... and the next layer sees layer l quantized
//   }
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "engine/engine.h"

namespace moetool {

// An observer of a sweep: a layer's callbacks (LayerObserver) for one chunk after another, each
// chunk announced first.
class SweepObserver : public LayerObserver {
 public:
  // Chunk `chunk` is next; its tokens are `first_token` .. first_token + n − 1 of the whole
  // calibration set (the chunks laid end to end).
  virtual void on_chunk(size_t /*chunk*/, int64_t /*first_token*/, int64_t /*n*/) {}
};

// What a layer's run does to the streams.
enum class SweepStreams {
  Advance,  // the streams become the layer's outputs (the next layer's inputs)
  Keep,     // the streams stay the layer's inputs (run on a copy, chunk by chunk)
};

class LayerSweep {
 public:
  // Embeds every chunk with `engine` (which must outlive the sweep).
  LayerSweep(const Engine& engine, const std::vector<std::vector<int32_t>>& chunks);

  const Engine& engine() const { return eng_; }
  size_t num_chunks() const { return h_.size(); }
  int64_t num_tokens() const { return tokens_; }
  int64_t chunk_tokens(size_t i) const { return n_[i]; }
  // Index of chunk i's first token in the whole calibration set.
  int64_t chunk_offset(size_t i) const { return offset_[i]; }
  // The first chunks a token limit covers: chunks are taken while fewer than max_tokens tokens are
  // taken before them (so at least one, when there is one; every chunk for a limit beyond the set).
  size_t chunks_within(int64_t max_tokens) const;
  // Chunk i's residual stream h[n_i, H]: the input of the next layer to run (or of the layer run
  // last, when it ran with SweepStreams::Keep).
  const std::vector<float>& stream(size_t i) const { return h_[i]; }
  // Chunk i's input to the layer run last: its stream after a Keep run, the copy kept by an Advance
  // run (i < the chunks its keep_input_tokens covered).
  const std::vector<float>& input(size_t i) const;

  // Layer l of the sweep's engine over every chunk: the layer is loaded once, each chunk gets a
  // one-layer KV cache, `obs` (may be null) sees each chunk in order. Layers run in order: l is the
  // layer after the last one advanced over. An Advance run keeps a copy of the inputs of the chunks
  // chunks_within(keep_input_tokens) covers (0: none), for rerun() and input().
  void run(int64_t l, SweepObserver* obs, SweepStreams streams = SweepStreams::Advance,
           int64_t keep_input_tokens = 0);
  // Layer l again, on `engine` (the same model with some matrices replaced), from the inputs the
  // last run(l) had, over the chunks chunks_within(max_tokens) covers: `obs` sees them, and their
  // outputs [n_i, H] come back. The streams are unchanged.
  std::vector<std::vector<float>> rerun(int64_t l, const Engine& engine, SweepObserver* obs,
                                        int64_t max_tokens = std::numeric_limits<int64_t>::max()) const;
  // Layer l again on `engine` from the inputs the last run(l) had (a Keep run, or an Advance run that
  // kept every input), over every chunk: its outputs become the streams (sequential GPTQ: the next
  // layer is calibrated on this one quantized).
  void rerun_advance(int64_t l, const Engine& engine, SweepObserver* obs = nullptr);
  // Frees the streams (each left empty) and kept inputs: the sweep is done.
  void release();

 private:
  // Layer l on `engine` over chunk i's rows h[n_i, H] in place.
  void run_chunk(const Engine& engine, int64_t l, const LayerWeights& lw, size_t i, float* h,
                 SweepObserver* obs) const;
  // Checks that l is the layer run last and that its inputs of the first `chunks` chunks are here.
  void check_rerun(int64_t l, size_t chunks, const char* what) const;

  const Engine& eng_;
  std::vector<std::vector<float>> h_;       // per chunk [n_i, H]
  std::vector<std::vector<float>> kept_;    // per kept chunk [n_i, H]: inputs of an Advance run
  std::vector<int64_t> n_, offset_;
  int64_t tokens_ = 0;
  int64_t next_ = 0;                        // the layer whose inputs the streams hold
  int64_t last_ = -1;                       // the layer run last
  bool last_advanced_ = false;
};

}  // namespace moetool
