// engine/calibrate_job.h — `moetool calibrate` as a library call: calibration text run through a
// model layer by layer (engine/calibrate.h) and the statistics saved for later passes; and the
// calibration chunks every job that calibrates cuts from a text file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/calibrate.h"
#include "formats/tokenizer.h"
#include "kernels/device.h"

namespace moetool {

// The text file `text_path` tokenized by `tok` and cut into chunks of `ctx` tokens that each start
// with BOS, at most max_chunks of them (0 = all). Throws when ctx exceeds the model's context of
// max_positions tokens (0: unknown), naming --ctx, or when the text has less than one chunk.
std::vector<std::vector<int32_t>> calibration_chunks(const Tokenizer& tok, int64_t max_positions,
                                                     const std::string& text_path, int64_t ctx, int64_t max_chunks);
// The chunks of several files (each as above, at most max_chunks per file), one file after another.
std::vector<std::vector<int32_t>> calibration_chunks(const Tokenizer& tok, int64_t max_positions,
                                                     const std::vector<std::string>& text_paths, int64_t ctx,
                                                     int64_t max_chunks);

namespace calibration {

struct Options {
  std::string model;   // model directory (or GGUF file)
  std::string text;    // calibration text file
  std::string output;  // statistics file to write (safetensors)
  int64_t ctx = 512, chunks = 0;               // tokens per chunk; at most this many chunks (0 = all)
  CalibrationOptions collect;                  // what to keep, and the progress callback
  DeviceOptions device;
  std::map<std::string, std::string> metadata;  // provenance for the file's metadata
};

struct Result {
  CalibrationStats stats;  // as saved
  std::vector<std::pair<int64_t, int64_t>> unrouted;  // (layer, expert) without a calibration token
};

// Calibrates and writes o.output. Throws moetool::Error for bad options or input.
Result run(const Options& o);

}  // namespace calibration
}  // namespace moetool
