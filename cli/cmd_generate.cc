// cli/cmd_generate.cc — `moetool tokenize`, `moetool generate` and `moetool logits`: run the
// inference engine directly on a model (the jobs are engine/generate_job.h).
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "engine/generate_job.h"
#include "engine/text.h"

namespace moetool::cli {

namespace {

std::vector<int32_t> parse_token_list(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(item, &used);
      if (used != item.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(item);
      out.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      fail("--tokens: expected comma-separated integers, got '", item, "'");
    }
  }
  if (out.empty()) fail("--tokens: no token ids given");
  return out;
}

}  // namespace

void add_generate(CLI::App& app, Context& ctx) {
  {
    auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text with the model's tokenizer");
    auto model = std::make_shared<std::string>();
    auto text = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    auto no_special = std::make_shared<bool>(false);
    cmd->add_option("MODEL", *model, "Model directory (with tokenizer.json)")->required();
    cmd->add_option("--text", *text, "Text to tokenize")->required();
    cmd->add_flag("--no-special", *no_special, "Do not add BOS/EOS");
    cmd->add_flag("--json", *json, "Print ids and token strings as JSON");
    cmd->callback([=] {
      auto tok = load_tokenizer(*model);
      auto ids = tok->encode(*text, !*no_special);
      if (*json) {
        nlohmann::ordered_json j;
        j["ids"] = ids;
        std::vector<std::string> pieces;
        for (auto id : ids) pieces.push_back(tok->token_text(id));
        j["tokens"] = pieces;
        std::cout << j.dump(2) << "\n";
      } else {
        for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
        std::cout << "\n";
      }
    });
  }
  {
    auto* cmd = app.add_subcommand("generate", "Continue a prompt with the model (KV-cached decoding)");
    struct Flags : generate::Options {
      DeviceFlags dev;
    };
    auto o = std::make_shared<Flags>();
    cmd->add_option("MODEL", o->model, "Model directory")->required();
    cmd->add_option("--prompt", o->prompt, "Prompt text")->required();
    cmd->add_option("-n,--tokens", o->tokens, "Tokens to generate")->capture_default_str();
    cmd->add_flag("--greedy", o->sampling.greedy, "Always take the most likely token");
    cmd->add_option("--temperature", o->sampling.temperature, "Sampling temperature")->capture_default_str();
    cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass")->capture_default_str();
    cmd->add_option("--seed", o->sampling.seed, "Sampling seed")->capture_default_str();
    add_device_flags(cmd, o->dev);
    cmd->callback([o] {
      o->device = o->dev.resolve();
      generate::run(*o, [](const std::string& text) { std::cout << text << std::flush; });
      std::cout << "\n";
    });
  }
  {
    auto* cmd = app.add_subcommand("logits", "Write teacher-forced logits [tokens, vocab] as float32 .npy");
    struct Flags : logits::Options {
      std::string token_list;
      DeviceFlags dev;
    };
    auto o = std::make_shared<Flags>();
    cmd->add_option("MODEL", o->model, "Model directory")->required();
    auto* t = cmd->add_option("--tokens", o->token_list, "Comma-separated token ids, e.g. 1,2,3");
    auto* x = cmd->add_option("--text", o->text, "A text file to tokenize (BOS added as the tokenizer does)");
    t->excludes(x);
    cmd->add_option("-o,--output", o->output, "Output .npy file")->required();
    cmd->add_option("--ctx", o->ctx,
                    "Cut --text into chunks of this many tokens (BOS first in each, as verify), each run alone: "
                    "output [chunks x ctx, vocab]");
    cmd->add_option("--chunks", o->chunks, "With --ctx: at most this many chunks (0 = all)");
    cmd->add_option("--dynamic-topk", o->dynamic_topk,
                    "Skip a token's second and later experts whose normalised routing weight is below this (CPU)");
    add_device_flags(cmd, o->dev);
    cmd->callback([o] {
      if (o->token_list.empty() && o->text.empty()) fail("logits: give --tokens or --text");
      o->device = o->dev.resolve();
      if (!o->token_list.empty()) o->tokens = parse_token_list(o->token_list);
      const logits::Result r = logits::run(*o);
      std::cerr << "wrote " << o->output << ": [" << r.tokens << ", " << r.vocab << "] float32 (device "
                << device_name(o->device.device) << ", " << precision_name(o->device.precision)
                << (o->device.device == Device::Cpu ? std::string(", ") + quant_dot_name(quant_dot()) + " dot" : "")
                << ")\n";
      if (o->dynamic_topk > 0)
        std::cerr << "dynamic top-k " << o->dynamic_topk << ": " << r.skipped_pairs << " of " << r.routed_pairs
                  << " expert computations skipped\n";
    });
  }
}

}  // namespace moetool::cli
