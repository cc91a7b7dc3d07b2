// cli/commands.h — registration of moetool's subcommands. Each command lives in its own
// cli/cmd_*.cc, parses options with CLI11, calls the library and returns an exit code
// (0 ok, 1 verification failed its thresholds, 2 bad input or usage).
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/fs.h"
#include "core/provenance.h"
#include "kernels/device.h"
#include "kernels/quant_dot.h"

namespace moetool::cli {

struct Context {
  Provenance provenance;  // command line and version for output metadata
  int exit_code = 0;      // set by the command that ran
};

// --device cpu|cuda|auto and --dtype f32|bf16 (arithmetic precision) on the commands that run the
// engine (logits, generate, verify, calibrate).
struct DeviceFlags {
  std::string device = "cpu", dtype = "f32", gpu_weights, dot = "int8";
  bool gpu_keep_quantized = false;
  // Resolves to a usable device: `cuda` without a usable GPU throws one line (exit 2); `auto` falls
  // back to the CPU. bf16 on the GPU multiplies bf16 weights and inputs on tensor cores; on the CPU
  // it emulates exactly that arithmetic (kernels/linear_bf16.h). Sets the process's --dot mode
  // (kernels/quant_dot.h).
  DeviceOptions resolve() const {
    set_quant_dot(parse_quant_dot(dot));
    DeviceOptions o;
    o.device = resolve_device(device);
    o.precision = parse_precision(dtype);
    if (!gpu_weights.empty()) o.gpu_weight_budget = static_cast<int64_t>(parse_byte_size(gpu_weights, "--gpu-weights"));
    o.gpu_keep_quantized = gpu_keep_quantized;
    return o;
  }
};
inline void add_device_flags(CLI::App* cmd, DeviceFlags& f) {
  cmd->add_option("--device", f.device, "Where the engine runs: cpu, cuda or auto (CUDA when a GPU is usable)")
      ->capture_default_str();
  cmd->add_option("--dtype", f.dtype,
                  "Arithmetic: f32, or bf16 (weights and matmul inputs rounded to bf16, float32 accumulation; "
                  "on the CPU an emulation of the GPU's bf16 arithmetic)")
      ->capture_default_str();
  cmd->add_option("--gpu-weights", f.gpu_weights,
                  "GPU memory for resident layer weights (e.g. 8GB); layers beyond it stream in per use "
                  "(default: resident while memory allows)");
  cmd->add_option("--dot", f.dot,
                  "How the CPU multiplies ggml-quantized weights (Q8_0 ... Q6_K): int8 (activations quantized to int8 "
                  "per 32 and integer dot products, as llama.cpp does; faster) or float (decoded weights times float "
                  "activations; exact)")
      ->check(CLI::IsMember({"int8", "float"}))
      ->capture_default_str();
  cmd->add_flag("--gpu-keep-quantized", f.gpu_keep_quantized,
                "Keep ggml-quantized (Q8_0 ... Q6_K) and GPTQ-int4 weights quantized in GPU memory and decode them per use "
                "(about 3.5x less memory; done anyway for layers whose decoded weights do not fit)");
}

// --json (with the command's help text) and -q,--quiet ("No progress lines").
void add_json_quiet_flags(CLI::App* cmd, bool& json, bool& quiet, const std::string& json_help);
// The closing flags of a command that runs the engine and prints a summary: --json, -q and the
// device flags.
struct EngineRunFlags {
  bool json = false, quiet = false;
  DeviceFlags dev;
};
void add_engine_run_flags(CLI::App* cmd, EngineRunFlags& f, const std::string& json_help);
// --ctx and --chunks (the text cut into chunks of ctx tokens, at most `chunks` of them), with
// their defaults shown; `cmd` may be an option group.
void add_chunk_options(CLI::App* cmd, int64_t& ctx, int64_t& chunks, const std::string& ctx_help,
                       const std::string& chunks_help);
// The progress callback of a job: each line on stderr, or none with --quiet.
std::function<void(const std::string&)> progress_sink(bool quiet);

// The `--version` text: version, whether the CUDA backend was built and which GPU it sees.
std::string version_string();

void add_inspect(CLI::App& app, Context& ctx);
void add_synth(CLI::App& app, Context& ctx);
void add_generate(CLI::App& app, Context& ctx);  // tokenize, generate, logits
void add_calibrate(CLI::App& app, Context& ctx);
void add_verify(CLI::App& app, Context& ctx);
void add_quantize(CLI::App& app, Context& ctx);
void add_convert(CLI::App& app, Context& ctx);  // convert upcycle, convert factorize
void add_prune(CLI::App& app, Context& ctx);
void add_merge(CLI::App& app, Context& ctx);
void add_svd(CLI::App& app, Context& ctx);
void add_run(CLI::App& app, Context& ctx);  // recipes

}  // namespace moetool::cli
