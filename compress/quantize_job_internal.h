// compress/quantize_job_internal.h — what the two halves of `moetool quantize` share: the job over
// a Hugging Face checkpoint (quantize_job.cc) and the requantizing of a GGUF file
// (quantize_requant.cc). Not part of the library's interface.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "compress/quantize_job.h"
#include "engine/calibrate_job.h"
#include "engine/weights.h"
#include "formats/gguf_export.h"

namespace moetool::quantize {

// The options checked in the command's order, before anything is read (a bad one is an Error naming
// its flag).
void check_options(const Options& o);

// The GGUF pass's options from the command's: file type, overrides, name, provenance, progress.
GGUFExportOptions gguf_options(const Options& o);

// Importance for the GGUF pass: the --imatrix statistics file, or calibration run here on `chunks`
// with `weights` (input second moments only); null without either. Statistics for another number of
// layers than `num_layers` are an error naming the file.
std::shared_ptr<const CalibrationStats> gguf_statistics(const Options& o, int64_t num_layers,
                                                        const std::shared_ptr<const WeightSource>& weights,
                                                        const std::vector<std::vector<int32_t>>& chunks);

// Σx² per input column of a linear, from the statistics (nullopt where it saw no token).
GGUFImportance importance_from(std::shared_ptr<const CalibrationStats> stats);

// `quantize` with a GGUF file as MODEL (o.model): its tensors re-encoded into another GGUF file type
// (compress/quantize_gguf.h plan_gguf_requantize), importance from --imatrix or --calib-text (the
// GGUF model run as stored). Options that need a Hugging Face checkpoint (other formats, --bpw, GPTQ
// or AutoRound rounding) are refused naming the option. Warns when already quantized tensors are
// requantized (their first rounding error stays).
Result run_requantize(const Options& o);

}  // namespace moetool::quantize
