// cli/cmd_generate.cc — `moetool tokenize`, `moetool generate` and `moetool logits`: run the
// inference checker directly on a model.
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "formats/npy.h"
#include "engine/sampling.h"
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
    struct O {
      std::string model, prompt;
      int64_t n = 32;
      bool greedy = false;
      float temperature = 0.8f, top_p = 0.95f;
      uint64_t seed = 0;
      DeviceFlags dev;
    };
    auto o = std::make_shared<O>();
    cmd->add_option("MODEL", o->model, "Model directory")->required();
    cmd->add_option("--prompt", o->prompt, "Prompt text")->required();
    cmd->add_option("-n,--tokens", o->n, "Tokens to generate")->capture_default_str();
    cmd->add_flag("--greedy", o->greedy, "Always take the most likely token");
    cmd->add_option("--temperature", o->temperature, "Sampling temperature")->capture_default_str();
    cmd->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
    cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
    add_device_flags(cmd, o->dev);
    cmd->callback([o] {
      if (o->n < 0) fail("-n: expected a non-negative count, got ", o->n);
      const DeviceOptions dev = o->dev.resolve();
      auto tok = load_tokenizer(o->model);
      Engine eng(open_weights(o->model), true, dev);
      std::vector<int32_t> ids = tok->encode(o->prompt, true);
      // A prompt that spells out the BOS token itself must not get a second one (as llama.cpp).
      if (ids.size() >= 2 && tok->bos_id() && ids[0] == *tok->bos_id() && ids[1] == *tok->bos_id())
        ids.erase(ids.begin());
      if (ids.empty()) fail("--prompt: the prompt tokenizes to nothing");
      const int64_t maxpos = eng.config().max_position_embeddings;
      const int64_t total = static_cast<int64_t>(ids.size()) + o->n;
      if (maxpos > 0 && total > maxpos)
        fail("prompt (", ids.size(), " tokens) + ", o->n, " new tokens exceed the model's context of ", maxpos);
      KVCache cache = eng.new_cache(total);
      Sampler sampler({o->greedy, o->temperature, o->top_p, o->seed});
      std::vector<float> logits = eng.forward(ids.data(), static_cast<int64_t>(ids.size()), cache, nullptr, true);
      std::vector<int32_t> out = ids;
      // Print the prompt as given, then whatever each new token adds to the decoded text.
      std::string printed = tok->decode(out, /*skip_special=*/false);
      std::cout << o->prompt << std::flush;
      for (int64_t i = 0; i < o->n; ++i) {
        int32_t next = sampler.next(logits.data(), eng.config().vocab_size);
        out.push_back(next);
        const std::string now = tok->decode(out, false);
        if (now.size() >= printed.size() && now.compare(0, printed.size(), printed) == 0)
          std::cout << now.substr(printed.size()) << std::flush;
        printed = now;
        if (tok->eos_id() && next == *tok->eos_id()) break;
        if (i + 1 < o->n) logits = eng.forward(&next, 1, cache, nullptr, true);
      }
      std::cout << "\n";
    });
  }
  {
    auto* cmd = app.add_subcommand("logits", "Write teacher-forced logits [tokens, vocab] as float32 .npy");
    struct O {
      std::string model, tokens, text, out;
      DeviceFlags dev;
    };
    auto o = std::make_shared<O>();
    cmd->add_option("MODEL", o->model, "Model directory")->required();
    auto* t = cmd->add_option("--tokens", o->tokens, "Comma-separated token ids, e.g. 1,2,3");
    auto* x = cmd->add_option("--text", o->text, "A text file to tokenize (BOS added as the tokenizer does)");
    t->excludes(x);
    cmd->add_option("-o,--output", o->out, "Output .npy file")->required();
    add_device_flags(cmd, o->dev);
    cmd->callback([o] {
      if (o->tokens.empty() && o->text.empty()) fail("logits: give --tokens or --text");
      const DeviceOptions dev = o->dev.resolve();
      Engine eng(open_weights(o->model), true, dev);
      std::vector<int32_t> ids;
      if (!o->tokens.empty()) {
        ids = parse_token_list(o->tokens);
      } else {
        auto tok = load_tokenizer(o->model);
        ids = tok->encode(read_file(o->text), true);
      }
      const int64_t maxpos = eng.config().max_position_embeddings;
      if (maxpos > 0 && static_cast<int64_t>(ids.size()) > maxpos)
        fail("logits: ", ids.size(), " tokens exceed the model's context of ", maxpos);
      std::vector<float> lg = eng.logits(ids);
      write_npy_f32(o->out, lg.data(), {static_cast<int64_t>(ids.size()), eng.config().vocab_size});
      std::cerr << "wrote " << o->out << ": [" << ids.size() << ", " << eng.config().vocab_size
                << "] float32 (device " << device_name(dev.device) << ", " << precision_name(dev.precision) << ")\n";
    });
  }
}

}  // namespace moetool::cli
