// compress/quantize_requant.cc — `moetool quantize` given a GGUF file: the options that need a Hugging Face
// checkpoint refused, importance found, the file requantized (see quantize_job_internal.h); and the
// GGUF pass's option and importance helpers that the checkpoint job shares.
#include <map>
#include <memory>
#include <set>

#include "compress/quantize_gguf.h"
#include "compress/quantize_job_internal.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/ggml_quants.h"
#include "formats/gguf_config.h"
#include "formats/gguf_requant.h"

namespace moetool::quantize {

// The GGUF pass's options from the command's: file type, overrides, name, provenance.
GGUFExportOptions gguf_options(const Options& o) {
  GGUFExportOptions eo;
  eo.file_type = parse_gguf_file_type(o.type, "--type").name;
  if (!o.embed_type.empty()) eo.embed_type = parse_gguf_tensor_type(o.embed_type, "--embed-type");
  if (!o.output_type.empty()) eo.output_type = parse_gguf_tensor_type(o.output_type, "--output-type");
  for (const auto& r : o.tensor_types) {
    const auto eq = r.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == r.size())
      fail("--tensor-type: expected REGEX=TYPE, got '", r, "'");
    eo.tensor_types.push_back({r.substr(0, eq), parse_gguf_tensor_type(r.substr(eq + 1), "--tensor-type " + r)});
  }
  eo.pure = o.pure;
  eo.overwrite = o.force;
  eo.name = o.name;
  eo.provenance = o.provenance.metadata();
  if (!o.dry_run) eo.progress = o.progress;
  return eo;
}

// Importance for the GGUF pass: the --imatrix statistics file, or calibration run here on the
// chunks (input second moments only); null without either.
std::shared_ptr<const CalibrationStats> gguf_statistics(const Options& o, int64_t num_layers,
                                                        const std::shared_ptr<const WeightSource>& weights,
                                                        const std::vector<std::vector<int32_t>>& chunks) {
  std::shared_ptr<const CalibrationStats> stats;
  if (!o.imatrix.empty()) {
    stats = std::make_shared<CalibrationStats>(CalibrationStats::load(o.imatrix));
  } else if (!chunks.empty()) {
    CalibrationOptions co;
    co.router = false;
    co.second_moments = true;
    co.progress = o.progress;
    Engine eng(weights, /*keep_layers=*/false);
    stats = std::make_shared<CalibrationStats>(calibrate(eng, chunks, co));
  }
  if (stats && static_cast<int64_t>(stats->layers.size()) != num_layers)
    fail(o.imatrix, ": statistics for ", stats->layers.size(), " layers, the model has ", num_layers);
  return stats;
}

// Σx² per input column of a linear, from the statistics (nullopt where it saw no token).
GGUFImportance importance_from(std::shared_ptr<const CalibrationStats> stats) {
  return [stats](Role r, int64_t l, int64_t e) -> std::optional<std::vector<float>> {
    if (r == Role::LmHead && l < 0 && !stats->layers.empty())  // kept with the last layer's inputs
      l = static_cast<int64_t>(stats->layers.size()) - 1;
    if (l < 0 || l >= static_cast<int64_t>(stats->layers.size())) return std::nullopt;
    const auto& in = stats->layers[static_cast<size_t>(l)].inputs;
    auto it = in.find(LinearKey{r, l, e});
    if (it == in.end() || it->second.count == 0) return std::nullopt;
    return std::vector<float>(it->second.sum_sq.begin(), it->second.sum_sq.end());
  };
}

namespace {

// The options a GGUF input cannot take, each refused naming itself (the rest: check_options).
void check_gguf_input(const Options& o) {
  const std::string why = ": needs a Hugging Face checkpoint (" + o.model + " is a GGUF file, which is requantized)";
  if (o.format != "gguf") fail("--format ", o.format, why);
  if (o.bpw > 0) fail("--bpw", why);
  const std::string m = method_of(o);
  if (m == "gptq" || m == "autoround") fail("--method ", m, why);
}

// "requantizing 7 tensors already quantized (Q8_0 → Q4_0: 6, Q8_0 → Q6_K: 1): ..." or "".
std::string requant_warning(const GGUFExportPlan& p) {
  std::map<std::string, int> pairs;
  int n = 0;
  for (const auto& t : p.tensors)
    if (t.source_type && ggml_is_quantized(*t.source_type) && t.type != *t.source_type) {
      ++pairs[str(ggml_type_name(*t.source_type), " -> ", ggml_type_name(t.type))];
      ++n;
    }
  if (!n) return "";
  std::string list;
  for (const auto& [k, c] : pairs) list += (list.empty() ? "" : ", ") + str(k, ": ", c);
  return str("requantizing ", n, " tensor", n == 1 ? "" : "s", " already quantized (", list,
             "): the first rounding error stays and this one adds to it; quantize from an F32/F16/BF16 GGUF or the "
             "Hugging Face checkpoint for the best quality (llama-quantize refuses this without --allow-requantize)");
}

}  // namespace

Result run_requantize(const Options& o) {
  check_gguf_input(o);
  check_options(o);
  const auto f = GGUFFile::open(o.model);
  const ModelConfig c = model_config_of_gguf(*f);
  GGUFExportOptions eo = gguf_options(o);
  Result r;
  r.written = !o.dry_run;
  if (method_of(o) != "rtn") {
    std::vector<std::vector<int32_t>> chunks;
    std::shared_ptr<const WeightSource> weights;
    if (!o.calib_text.empty()) {
      chunks = calibration_chunks(*load_tokenizer(o.model), c.max_position_embeddings, o.calib_text, o.ctx, o.chunks);
      weights = gguf_weights(o.model);
    }
    if (const auto stats = gguf_statistics(o, c.num_layers, weights, chunks)) {
      eo.importance = importance_from(stats);
      r.importance = o.imatrix.empty() ? o.calib_text : o.imatrix;
    }
  }
  r.gguf = plan_gguf_requantize(*f, eo);
  if (const std::string w = requant_warning(*r.gguf); !w.empty()) r.warnings.push_back(w);
  if (!o.dry_run) write_requantized_gguf(*f, *r.gguf, o.output, eo);
  return r;
}

}  // namespace moetool::quantize
