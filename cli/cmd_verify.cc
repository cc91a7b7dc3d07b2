// cli/cmd_verify.cc — `moetool verify BASE CANDIDATE`: KL divergence, top-1 agreement,
// perplexities and per-layer hidden-state similarity of a candidate against its base on real
// text, with thresholds for CI (exit 1 when one is missed) and report files.
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "verify/hidden_compare.h"
#include "verify/kld_file.h"
#include "verify/metrics.h"
#include "verify/report.h"
#include "verify/score_device.h"
#include "engine/text.h"

namespace moetool::cli {

namespace {

bool is_kld_base_file(const std::string& p) {
  if (is_directory(p) || !file_exists(p)) return false;
  std::ifstream in(p, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in.gcount() == 8 && std::memcmp(magic, "_logits_", 8) == 0;
}

}  // namespace

void add_verify(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("verify", "Compare a candidate model with its base on text (KLD, top-1, PPL)");
  struct O {
    std::string base, cand, text, report, junit, scored = "all-after-first", save_base;
    int64_t ctx = 512, chunks = 0;
    std::optional<double> max_kld, min_top1, max_ppl_ratio;
    bool json = false, quiet = false, no_hidden = false;
    DeviceFlags dev;
  };
  auto o = std::make_shared<O>();
  cmd->add_option("BASE", o->base, "Base model directory, or a llama.cpp KL-divergence base-logits file")->required();
  cmd->add_option("CANDIDATE", o->cand, "Candidate model directory")->required();
  cmd->add_option("--text", o->text, "Evaluation text file (not needed with a base-logits file)");
  cmd->add_option("--ctx", o->ctx, "Tokens per chunk")->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "Evaluate at most this many chunks (0 = all)")->capture_default_str();
  cmd->add_option("--scored", o->scored,
                  "Scored positions: all-after-first (every prediction in the chunk) or second-half "
                  "(llama.cpp's convention)")
      ->capture_default_str();
  cmd->add_option("--max-kld", o->max_kld, "Fail (exit 1) if mean KLD exceeds this");
  cmd->add_option("--min-top1", o->min_top1, "Fail (exit 1) if the same-top-1 fraction is below this");
  cmd->add_option("--max-ppl-ratio", o->max_ppl_ratio, "Fail (exit 1) if PPL(candidate)/PPL(base) exceeds this");
  cmd->add_option("--report", o->report, "Write report.json, report.md and report.html into this directory");
  cmd->add_option("--junit", o->junit, "Write a JUnit XML file (one test case per threshold)");
  cmd->add_option("--save-base", o->save_base, "Also write the base logits as a llama.cpp KL-divergence base file");
  cmd->add_flag("--no-hidden", o->no_hidden, "Skip the per-layer hidden-state comparison");
  cmd->add_flag("--json", o->json, "Print the report as JSON instead of text");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress lines");
  add_device_flags(cmd, o->dev);
  cmd->callback([o, &ctx] {
    const auto t0 = std::chrono::steady_clock::now();
    const DeviceOptions dev = o->dev.resolve();
    VerifyReport rep;
    rep.thresholds = {o->max_kld, o->min_top1, o->max_ppl_ratio};
    rep.run.base = o->base;
    rep.run.candidate = o->cand;
    rep.run.text = o->text;
    rep.run.moetool_version = ctx.provenance.version;
    rep.run.command = ctx.provenance.command;
    Engine cand(open_weights(o->cand), true, dev);
    const int64_t V = cand.config().vocab_size;
    VerifyAccumulator acc;
    auto progress = [&](int64_t i, int64_t n) {
      if (!o->quiet)
        std::cerr << "[" << i + 1 << "/" << n << "] chunk: " << acc.n_tokens() << " tokens scored\n";
    };

    if (is_kld_base_file(o->base)) {
      KldBaseFile bf = KldBaseFile::open(o->base);
      if (bf.n_vocab() != V)
        fail(o->base, ": base logits have a vocabulary of ", bf.n_vocab(), " but ", o->cand, " has ", V);
      const int64_t maxpos = cand.config().max_position_embeddings;
      if (maxpos > 0 && bf.n_ctx() > maxpos)
        fail(o->base, ": context ", bf.n_ctx(), " exceeds ", o->cand, "'s context of ", maxpos);
      rep.run.base_logits = o->base;
      rep.run.n_ctx = bf.n_ctx();
      rep.run.scored = ScoredPositions::kSecondHalf;
      const int64_t nch = o->chunks > 0 ? std::min(o->chunks, bf.n_chunk()) : bf.n_chunk();
      // llama.cpp stores the text tokens and puts BOS in the first position only when evaluating.
      std::optional<int32_t> bos;
      if (file_exists(path_join(o->cand, "tokenizer.json"))) bos = load_tokenizer(o->cand)->bos_id();
      for (int64_t c = 0; c < nch; ++c) {
        std::vector<int32_t> toks(bf.chunk_tokens(c), bf.chunk_tokens(c) + bf.n_ctx());
        if (bos) toks[0] = *bos;
        std::vector<float> lp = bf.log_probs(c);
        std::vector<float> cl = cand.logits(toks);
        acc.add_chunk(VerifyAccumulator::BaseLogProbs{lp.data()}, cl.data(), toks.data(), bf.n_ctx(), V,
                      bf.first_row());
        progress(c, nch);
      }
    } else {
      if (o->text.empty()) fail("verify: --text FILE is required when BASE is a model");
      Engine base(open_weights(o->base), true, dev);
      if (base.config().vocab_size != V)
        fail(o->cand, ": vocabulary of ", V, " tokens differs from the base's ", base.config().vocab_size,
             " (", o->base, ")");
      for (const Engine* e : {&base, &cand}) {
        const int64_t maxpos = e->config().max_position_embeddings;
        if (maxpos > 0 && o->ctx > maxpos)
          fail("--ctx ", o->ctx, " exceeds the context of ", e->weights().path(), " (", maxpos, " tokens)");
      }
      const ScoredPositions sp = parse_scored_positions(o->scored);
      rep.run.scored = sp;
      rep.run.n_ctx = o->ctx;
      auto tok = load_tokenizer(o->base);
      auto chunks = make_chunks(*tok, read_file(o->text), o->ctx, o->chunks, true, o->text);
      const bool hidden = !o->no_hidden && base.config().num_layers == cand.config().num_layers &&
                          base.config().hidden_size == cand.config().hidden_size;
      HiddenStateComparison cmp;
      std::unique_ptr<KldBaseWriter> bw;
      if (!o->save_base.empty()) {
        std::vector<int32_t> all;
        for (const auto& c : chunks) all.insert(all.end(), c.begin(), c.end());
        bw = std::make_unique<KldBaseWriter>(o->save_base, o->ctx, V, all);
      }
      // On the GPU the logits and hidden states stay there and are scored there (unless the base
      // logits are to be saved): only per-position statistics come back to the host.
      const bool on_gpu = dev.device == Device::Cuda && !bw;
      for (size_t i = 0; i < chunks.size(); ++i) {
        HiddenRecorder rec;
        HiddenComparer hc(rec, cmp);
        if (on_gpu) {
          const float* bl = base.logits_on_device(chunks[i], hidden ? &rec : nullptr);
          const float* cl = cand.logits_on_device(chunks[i], hidden ? &hc : nullptr);
          acc.add_rows(score_rows_on_device(bl, cl, chunks[i].data(), o->ctx, V, first_scored_row(sp, o->ctx)));
        } else {
          std::vector<float> bl = base.logits(chunks[i], hidden ? &rec : nullptr);
          std::vector<float> cl = cand.logits(chunks[i], hidden ? &hc : nullptr);
          acc.add_chunk(bl.data(), cl.data(), chunks[i].data(), o->ctx, V, first_scored_row(sp, o->ctx));
          if (bw) bw->add_chunk(bl.data(), o->ctx);
        }
        progress(static_cast<int64_t>(i), static_cast<int64_t>(chunks.size()));
      }
      if (bw) bw->finish();
      if (hidden) rep.layers = cmp.finish();
    }
    rep.stats = acc.finish();
    rep.run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o->json) {
      auto j = to_json(rep);
      j["run"]["device"] = device_name(dev.device);
      j["run"]["dtype"] = precision_name(dev.precision);
      std::cout << j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    } else {
      std::cout << to_text(rep);
      if (!o->quiet)
        std::cerr << "device: " << device_name(dev.device) << " (" << precision_name(dev.precision) << ")\n";
    }
    if (!o->report.empty()) write_report_dir(o->report, rep);
    if (!o->junit.empty()) write_file_atomic(o->junit, to_junit(rep));
    const auto missed = check(rep.stats, rep.thresholds);
    for (const auto& m : missed) std::cerr << "moetool: verification failed: " << m << "\n";
    if (!missed.empty()) ctx.exit_code = 1;
  });
}

}  // namespace moetool::cli
