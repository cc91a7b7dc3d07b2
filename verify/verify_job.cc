// verify/verify_job.cc — `moetool verify` as a library call (see verify_job.h): both engines run
// chunk by chunk, logits (and hidden states) scored as they come.
#include "verify/verify_job.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>

#include "core/error.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/checkpoint_files.h"
#include "formats/family.h"
#include "formats/model.h"
#include "verify/hidden_compare.h"
#include "verify/kld_file.h"
#include "verify/routing.h"
#include "verify/score_device.h"

namespace moetool::verify {
namespace {

bool is_kld_base_file(const std::string& p) {
  if (is_directory(p) || !file_exists(p)) return false;
  std::ifstream in(p, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return in.gcount() == 8 && std::memcmp(magic, "_logits_", 8) == 0;
}

// One line per chunk scored.
void progress(const Options& o, const VerifyAccumulator& acc, int64_t i, int64_t n) {
  if (o.progress) o.progress(str("[", i + 1, "/", n, "] chunk: ", acc.n_tokens(), " tokens scored"));
}

void decode_worst(std::vector<WorstToken>& worst, const std::vector<std::vector<int32_t>>& chunks,
                  const Tokenizer& tok);

// The candidate against a llama.cpp KL-divergence base file: its tokens, its scored positions.
void score_against_file(const Options& o, const Engine& cand, VerifyAccumulator& acc, VerifyReport& rep) {
  RunInfo& run = rep.run;
  const int64_t V = cand.config().vocab_size;
  KldBaseFile bf = KldBaseFile::open(o.base);
  if (bf.n_vocab() != V)
    fail(o.base, ": base logits have a vocabulary of ", bf.n_vocab(), " but ", o.candidate, " has ", V);
  const int64_t maxpos = cand.config().max_position_embeddings;
  if (maxpos > 0 && bf.n_ctx() > maxpos)
    fail(o.base, ": context ", bf.n_ctx(), " exceeds ", o.candidate, "'s context of ", maxpos);
  run.base_logits = o.base;
  run.n_ctx = bf.n_ctx();
  run.scored = ScoredPositions::kSecondHalf;
  const int64_t nch = o.chunks > 0 ? std::min(o.chunks, bf.n_chunk()) : bf.n_chunk();
  // llama.cpp stores the text tokens and puts BOS in the first position only when evaluating.
  std::optional<int32_t> bos;
  std::unique_ptr<Tokenizer> tok;
  if (file_exists(path_join(o.candidate, "tokenizer.json"))) {
    tok = load_tokenizer(o.candidate);
    bos = tok->bos_id();
  }
  std::vector<std::vector<int32_t>> chunks;
  for (int64_t c = 0; c < nch; ++c) {
    std::vector<int32_t> toks(bf.chunk_tokens(c), bf.chunk_tokens(c) + bf.n_ctx());
    if (bos) toks[0] = *bos;
    if (tok) chunks.push_back(toks);
    std::vector<float> lp = bf.log_probs(c);
    std::vector<float> cl = cand.logits(toks);
    acc.add_chunk(VerifyAccumulator::BaseLogProbs{lp.data()}, cl.data(), toks.data(), bf.n_ctx(), V, bf.first_row());
    progress(o, acc, c, nch);
  }
  rep.stats = acc.finish();
  if (tok) decode_worst(rep.stats.worst, chunks, *tok);
}

// True when the model has an MoE layer (a router to compare).
bool routes(const Engine& e) { return !e.config().moe_layer_ids().empty(); }

// Decodes the worst positions' context (a few tokens before, the actual next token, each model's top).
void decode_worst(std::vector<WorstToken>& worst, const std::vector<std::vector<int32_t>>& chunks,
                  const Tokenizer& tok) {
  constexpr int64_t kContext = 12;
  // Model vocabularies can be larger than their tokenizer's (padded embeddings): such ids print as
  // ⟨id N⟩ rather than failing the run.
  auto safe = [&](const std::vector<int32_t>& ids) {
    std::string o;
    for (int32_t id : ids) {
      try {
        o += tok.decode({id}, true);
      } catch (const Error&) {
        o += str("⟨id ", id, "⟩");
      }
    }
    return o;
  };
  // One token; one that decodes to nothing (a byte piece, a special token) shows its id.
  auto one = [&](int32_t id) {
    if (id < 0) return std::string();
    try {
      const std::string t = tok.decode({id});
      if (!t.empty()) return t;
    } catch (const Error&) {
    }
    return str("⟨id ", id, "⟩");
  };
  for (WorstToken& w : worst) {
    if (w.chunk < 0 || w.chunk >= static_cast<int64_t>(chunks.size())) continue;
    const auto& c = chunks[static_cast<size_t>(w.chunk)];
    if (w.position + 1 >= static_cast<int64_t>(c.size())) continue;
    const int64_t from = std::max<int64_t>(0, w.position + 1 - kContext);
    const std::vector<int32_t> ids(c.begin() + from, c.begin() + w.position + 1);
    try {
      w.context = tok.decode(ids, true);
    } catch (const Error&) {
      w.context = safe(ids);
    }
    w.next = one(c[static_cast<size_t>(w.position + 1)]);
    w.top_base_text = one(w.top_base);
    w.top_cand_text = one(w.top_cand);
  }
}

// The candidate against its base model on the text; fills the per-layer similarity (when hidden
// states are compared), the routing fidelity (when a model routes) and the worst positions' text.
void score_against_model(const Options& o, const Engine& cand, VerifyAccumulator& acc, VerifyReport& rep) {
  RunInfo& run = rep.run;
  if (o.text.empty()) fail("verify: --text FILE is required when BASE is a model");
  const int64_t V = cand.config().vocab_size;
  const Engine base(open_weights(o.base), true, o.device);
  if (base.config().vocab_size != V)
    fail(o.candidate, ": vocabulary of ", V, " tokens differs from the base's ", base.config().vocab_size, " (",
         o.base, ")");
  for (const Engine* e : {&base, &cand}) {
    const int64_t maxpos = e->config().max_position_embeddings;
    if (maxpos > 0 && o.ctx > maxpos)
      fail("--ctx ", o.ctx, " exceeds the context of ", e->weights().path(), " (", maxpos, " tokens)");
  }
  const ScoredPositions sp = parse_scored_positions(o.scored);
  run.scored = sp;
  run.n_ctx = o.ctx;
  auto tok = load_tokenizer(o.base);
  auto chunks = make_chunks(*tok, read_file(o.text), o.ctx, o.chunks, true, o.text);
  const bool hidden = o.hidden && base.config().num_layers == cand.config().num_layers &&
                      base.config().hidden_size == cand.config().hidden_size;
  HiddenStateComparison cmp;
  const bool routing = routes(base) || routes(cand);
  RoutingComparison rcmp(routing ? expert_mapping_from_metadata(checkpoint_metadata(o.candidate), o.candidate)
                                 : ExpertMapping{});
  std::unique_ptr<KldBaseWriter> bw;
  if (!o.save_base.empty()) {
    std::vector<int32_t> all;
    for (const auto& c : chunks) all.insert(all.end(), c.begin(), c.end());
    bw = std::make_unique<KldBaseWriter>(o.save_base, o.ctx, V, all);
  }
  // On the GPU the logits and hidden states stay there and are scored there (unless the base
  // logits are to be saved): only per-position statistics come back to the host.
  const bool on_gpu = o.device.device == Device::Cuda && !bw;
  const int64_t first = first_scored_row(sp, o.ctx);
  for (size_t i = 0; i < chunks.size(); ++i) {
    HiddenRecorder rec;
    HiddenComparer hc(rec, cmp);
    RoutingRecorder rrec(hidden ? &rec : nullptr);
    RoutingComparer rc(hidden ? &hc : nullptr, rrec, rcmp);
    LayerObserver* bo = routing ? static_cast<LayerObserver*>(&rrec) : hidden ? &rec : nullptr;
    LayerObserver* co = routing ? static_cast<LayerObserver*>(&rc) : hidden ? &hc : nullptr;
    if (on_gpu) {
      const float* bl = base.logits_on_device(chunks[i], bo);
      const float* cl = cand.logits_on_device(chunks[i], co);
      acc.add_rows(score_rows_on_device(bl, cl, chunks[i].data(), o.ctx, V, first), first);
      // The top tokens of this chunk's positions that made the worst list.
      for (size_t w = 0; w < acc.worst().size(); ++w) {
        const WorstToken& x = acc.worst()[w];
        if (x.chunk != static_cast<int64_t>(i) || x.top_base >= 0) continue;
        const RowTop tb = row_top_on_device(bl + x.position * V, V), tc = row_top_on_device(cl + x.position * V, V);
        acc.set_worst_tops(w, tb.id, tb.p, tc.id, tc.p);
      }
    } else {
      std::vector<float> bl = base.logits(chunks[i], bo);
      std::vector<float> cl = cand.logits(chunks[i], co);
      acc.add_chunk(bl.data(), cl.data(), chunks[i].data(), o.ctx, V, first);
      if (bw) bw->add_chunk(bl.data(), o.ctx);
    }
    if (routing) rc.finish_chunk();
    progress(o, acc, static_cast<int64_t>(i), static_cast<int64_t>(chunks.size()));
  }
  if (bw) bw->finish();
  if (hidden) rep.layers = cmp.finish();
  if (routing) rep.routing = rcmp.finish();
  rep.stats = acc.finish();
  decode_worst(rep.stats.worst, chunks, *tok);
  run.base_params = count_params(family_by_name(base.config().family), base.config()).total;
}

}  // namespace

Result run(const Options& o) {
  const auto t0 = std::chrono::steady_clock::now();
  Result r;
  VerifyReport& rep = r.report;
  rep.thresholds = o.thresholds;
  rep.run.base = o.base;
  rep.run.candidate = o.candidate;
  rep.run.text = o.text;
  rep.run.moetool_version = o.provenance.version;
  rep.run.command = o.provenance.command;
  Engine cand(open_weights(o.candidate), true, o.device);
  cand.set_dynamic_topk(o.dynamic_topk);
  VerifyAccumulator acc;
  if (is_kld_base_file(o.base)) {
    score_against_file(o, cand, acc, rep);
  } else {
    score_against_model(o, cand, acc, rep);
    rep.run.base_bytes = tensor_file_bytes(o.base);
  }
  rep.run.candidate_bytes = tensor_file_bytes(o.candidate);
  rep.stats.route_mismatch = rep.routing.mismatch;
  rep.run.dynamic_topk = o.dynamic_topk;
  rep.run.routed_pairs = cand.routing_counts().routed;
  rep.run.skipped_pairs = cand.routing_counts().skipped;
  rep.run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.missed = check(rep.stats, rep.thresholds);
  return r;
}

}  // namespace moetool::verify
