// cli/cmd_calibrate.cc — `moetool calibrate MODEL --text FILE -o STATS`: run calibration text
// through the model layer by layer and save the statistics later passes consume.
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/calibrate.h"
#include "engine/text.h"

namespace moetool::cli {

void add_calibrate(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("calibrate", "Collect calibration statistics (router, experts, input moments)");
  struct O {
    std::string model, text, out;
    int64_t ctx = 512, chunks = 0;
    bool hidden = false, acts = false, gram = false, no_router = false, json = false, quiet = false;
    DeviceFlags dev;
  };
  auto o = std::make_shared<O>();
  cmd->add_option("MODEL", o->model, "Model directory")->required();
  cmd->add_option("--text", o->text, "Calibration text file")->required();
  cmd->add_option("-o,--output", o->out, "Statistics file to write (safetensors)")->required();
  cmd->add_option("--ctx", o->ctx, "Tokens per chunk")->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "Use at most this many chunks (0 = all)")->capture_default_str();
  cmd->add_flag("--hidden", o->hidden, "Also keep hidden states before/after each FFN block");
  cmd->add_flag("--activations", o->acts, "Also keep FFN/expert intermediate activations (co-activation)");
  cmd->add_flag("--gram", o->gram, "Also accumulate full input Gram matrices XᵀX per linear (large)");
  cmd->add_flag("--no-router", o->no_router, "Skip router logits and selections");
  cmd->add_flag("--json", o->json, "Print a JSON summary");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress lines");
  add_device_flags(cmd, o->dev);
  cmd->callback([o, &ctx] {
    const DeviceOptions dev = o->dev.resolve();
    auto tok = load_tokenizer(o->model);
    Engine eng(open_weights(o->model), /*keep_layers=*/false, dev);
    const int64_t maxpos = eng.config().max_position_embeddings;
    if (maxpos > 0 && o->ctx > maxpos) fail("--ctx ", o->ctx, " exceeds the model's context of ", maxpos);
    auto chunks = make_chunks(*tok, read_file(o->text), o->ctx, o->chunks, true, o->text);
    CalibrationOptions co;
    co.router = !o->no_router;
    co.hidden = o->hidden;
    co.ffn_activations = o->acts;
    co.gram = o->gram;
    if (!o->quiet) co.progress = [](const std::string& l) { std::cerr << l << "\n"; };
    CalibrationStats st = calibrate(eng, chunks, co);
    st.save(o->out, ctx.provenance.metadata());
    const auto unrouted = st.unrouted_experts();
    for (const auto& [l, e] : unrouted)
      std::cerr << "moetool: warning: layer " << l << " expert " << e << " received no calibration token\n";
    if (o->json) {
      nlohmann::ordered_json j;
      j["output"] = o->out;
      j["tokens"] = st.num_tokens;
      j["chunks"] = st.num_chunks;
      j["ctx"] = st.ctx;
      j["device"] = device_name(dev.device);
      if (dev.device == Device::Cuda) j["dtype"] = precision_name(dev.precision);
      auto u = nlohmann::json::array();
      for (const auto& [l, e] : unrouted) u.push_back({{"layer", l}, {"expert", e}});
      j["unrouted_experts"] = u;
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "wrote " << o->out << ": " << st.num_tokens << " tokens in " << st.num_chunks << " chunks, "
                << unrouted.size() << " experts without calibration tokens\n";
    }
  });
}

}  // namespace moetool::cli
