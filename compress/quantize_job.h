// compress/quantize_job.h — `moetool quantize` as a library call: a Hugging Face checkpoint as a
// GGUF file llama.cpp runs (compress/quantize_gguf.h: ggml block types, llama-quantize's per-tensor
// rules, importance from a statistics file or from calibration run here) or as a GPTQ checkpoint
// transformers / vLLM load (compress/quantize_int.h: GPTQ, importance or RTN rounding, 2–8 bits) or
// as block FP8 (compress/quantize_fp8.h: DeepSeek-V3 / Qwen3 FP8 layout, no calibration), or as
// its BF16 model, DF11-coded (lossless) or plain (compress/quantize_df11.h).
// With `bpw` > 0 every expert's / linear's storage is chosen by the exact knapsack of
// compress/bit_alloc.h first; `dry_run` plans (and allocates) without writing.
//
// The options are the command line's: strings are parsed here and a bad one is an Error naming its
// flag (--type, --widths, --max-shard-size, ...), checked in the command's order. Nothing is
// printed: progress lines and the solved allocation go to callbacks, the rest is in the Result.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "compress/bit_alloc.h"
#include "compress/quantize_df11.h"
#include "compress/quantize_fp8.h"
#include "compress/quantize_gguf_gptq.h"
#include "compress/quantize_int.h"
#include "core/provenance.h"
#include "formats/gguf_export.h"

namespace moetool::quantize {

struct Options {
  std::string model;            // Hugging Face checkpoint directory
  std::string output;           // .gguf file (gguf) or directory (gptq, fp8)
  std::string format = "gguf";  // "gguf" | "gptq" | "compressed-tensors" | "fp8" | "df11" | "bf16"
  std::string fp8_block = "128x128";  // FP8: block rows x cols of one scale
  bool fp8_channel = false;           // FP8: per-channel scales as compressed-tensors float-quantized
  int64_t df11_block = 65536;         // DF11: values per independently decodable block
  // GGUF: file type, per-tensor overrides ("REGEX=TYPE"), general.name, --pure, statistics file.
  std::string type = "q8_0", embed_type, output_type, name;
  std::vector<std::string> tensor_types;
  bool pure = false;
  std::string imatrix;
  // Calibration text (GPTQ Hessians, GGUF importance, --bpw errors): chunks of ctx tokens, at most
  // `chunks` of them (0 = all).
  std::string calib_text;
  int64_t ctx = 256, chunks = 0;
  // GPTQ.
  // "gptq" | "imatrix" (alias "importance") | "rtn" | "autoround" (GGUF only); "" is the format's
  // default (method_of): gptq for GPTQ and compressed-tensors; for GGUF imatrix with --imatrix or
  // --calib-text, else rtn. GGUF with gptq / autoround: GPTQ or AutoRound over ggml blocks
  // (compress/quantize_gguf_gptq.h, compress/autoround_ggml.h).
  std::string method;
  int iters = 200;          // AutoRound: signed-gradient steps
  double lr = 0;            // AutoRound: initial step (0: 1/iters)
  int bits = 4;
  int base_bits = 0;              // a low-rank checkpoint's delta bases (0: --bits)
  std::vector<std::string> skip;  // regexes of modules / factors kept in float
  int64_t group_size = 128, min_tokens = 16, block_size = 128;
  int64_t pool_rows = 4096;  // coverage guard: pooled layer rows for low-coverage experts (0: RTN)
  bool asym = false, act_order = false, static_groups = false, no_sequential = false, fused_widths = false;
  double damp = 0.01;
  std::string max_shard;                // "5GB"; empty: one file
  std::string float_dtype = "source";  // source, f16, bf16, f32
  // Mixed precision: average bits per weight over the routed experts (all linears with bpw_all),
  // cost exponents and candidates ("2,3,4,8" for GPTQ, ggml types for GGUF). 0: uniform.
  double bpw = 0;
  bool bpw_all = false;
  double alpha = 1.0, beta = 1.0, gamma = 2.0;
  // Sensitivity of a unit: "kld" (end-to-end KLD, compress/bit_alloc_kld.h) or "output" (its
  // relative output error, costed with alpha/beta/gamma); tokens the KLDs use; no_alloc_check skips
  // measuring the solution against uniform widths.
  std::string sensitivity = "kld";
  int64_t kld_tokens = 8192;
  // Where the KLDs are measured: "float" (each unit alone) or "both" (alone, and again around the
  // uniform width of size nearest the budget, compress/bit_alloc_kld.h: two solutions, the check
  // keeps the better). Only with sensitivity "kld".
  std::string kld_anchor = "both";
  bool no_alloc_check = false;
  std::string widths = "2,3,4,8", gguf_types = "q4_0,q4_1,q5_0,q5_1,q4_k,q5_k,q6_k,q8_0";
  bool dry_run = false;
  bool force = false;      // replace an existing output
  Provenance provenance;   // version and command line for the output's metadata
  std::function<void(const std::string&)> progress;  // calibration / per-tensor / per-linear lines
  // Called once the --bpw allocation is solved, before anything is quantized.
  std::function<void(const Allocation&, const AllocOptions&)> on_allocation;
};

// The GPTQ sizes a dry run computes: every quantizable linear at its width.
struct GptqSizes {
  std::string method;
  int64_t params = 0;  // quantized weights
  uint64_t bytes = 0;  // their stored bytes
  double bpw() const { return params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0; }
};

struct Result {
  bool written = false;                 // false for a dry run
  std::optional<Allocation> allocation;  // with bpw > 0
  AllocOptions alloc_options;            // the budget, exponents and candidates it used
  // GGUF: the plan (written or not), and the file the importance came from ("" without).
  std::optional<GGUFExportPlan> gguf;
  std::string importance;
  std::optional<IntQuantReport> gptq;    // GPTQ, written
  std::optional<GptqSizes> gptq_sizes;   // GPTQ, dry run
  std::optional<FP8QuantReport> fp8;     // FP8 (planned only, on a dry run)
  std::optional<DF11Report> df11;        // DF11 or BF16 (planned only, on a dry run)
  // GGUF with method gptq: how each matrix was encoded, and the coverage warnings.
  std::vector<GGUFGPTQRecord> gguf_gptq;
  std::vector<std::string> warnings;
};

// The method the job runs (Options::method, or the format's default for "").
std::string method_of(const Options& o);

// Runs the job. Throws moetool::Error for bad options or input, naming the flag or the file.
Result run(const Options& o);

}  // namespace moetool::quantize
