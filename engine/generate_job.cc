// engine/generate_job.cc — `moetool generate` and `moetool logits` as library calls (see
// generate_job.h).
#include "engine/generate_job.h"

#include "core/error.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/npy.h"

namespace moetool {
namespace generate {

std::vector<int32_t> run(const Options& o, const std::function<void(const std::string&)>& on_text) {
  if (o.tokens < 0) fail("-n: expected a non-negative count, got ", o.tokens);
  auto tok = load_tokenizer(o.model);
  Engine eng(open_weights(o.model), true, o.device);
  std::vector<int32_t> ids = tok->encode(o.prompt, true);
  // A prompt that spells out the BOS token itself must not get a second one (as llama.cpp).
  if (ids.size() >= 2 && tok->bos_id() && ids[0] == *tok->bos_id() && ids[1] == *tok->bos_id())
    ids.erase(ids.begin());
  if (ids.empty()) fail("--prompt: the prompt tokenizes to nothing");
  const int64_t maxpos = eng.config().max_position_embeddings;
  const int64_t total = static_cast<int64_t>(ids.size()) + o.tokens;
  if (maxpos > 0 && total > maxpos)
    fail("prompt (", ids.size(), " tokens) + ", o.tokens, " new tokens exceed the model's context of ", maxpos);
  KVCache cache = eng.new_cache(total);
  Sampler sampler(o.sampling);
  std::vector<float> logits = eng.forward(ids.data(), static_cast<int64_t>(ids.size()), cache, nullptr, true);
  std::vector<int32_t> out = ids;
  // The prompt as given, then whatever each new token adds to the decoded text.
  std::string printed = tok->decode(out, /*skip_special=*/false);
  on_text(o.prompt);
  for (int64_t i = 0; i < o.tokens; ++i) {
    int32_t next = sampler.next(logits.data(), eng.config().vocab_size);
    out.push_back(next);
    const std::string now = tok->decode(out, false);
    if (now.size() >= printed.size() && now.compare(0, printed.size(), printed) == 0)
      on_text(now.substr(printed.size()));
    printed = now;
    if (tok->eos_id() && next == *tok->eos_id()) break;
    if (i + 1 < o.tokens) logits = eng.forward(&next, 1, cache, nullptr, true);
  }
  return out;
}

}  // namespace generate

namespace logits {

namespace {
// --ctx: the text's chunks, each run alone, streamed into the .npy.
Result run_chunked(const Options& o, Engine& eng) {
  if (!o.tokens.empty()) fail("logits --ctx cuts --text into chunks; give --text, not --tokens");
  const int64_t maxpos = eng.config().max_position_embeddings;
  if (maxpos > 0 && o.ctx > maxpos) fail("logits --ctx ", o.ctx, ": exceeds the model's context of ", maxpos);
  const auto chunks = make_chunks(*load_tokenizer(o.model), read_file(o.text), o.ctx, o.chunks, true, o.text);
  const int64_t V = eng.config().vocab_size, n = static_cast<int64_t>(chunks.size()) * o.ctx;
  NpyF32Writer w(o.output, {n, V});
  for (const auto& c : chunks) {
    const std::vector<float> lg = eng.logits(c);
    w.append(lg.data(), lg.size());
  }
  w.finish();
  return {n, V, eng.routing_counts().routed, eng.routing_counts().skipped};
}
}  // namespace

Result run(const Options& o) {
  if (o.ctx < 0) fail("logits --ctx ", o.ctx, ": expected a positive token count");
  if (o.chunks < 0) fail("logits --chunks ", o.chunks, ": expected 0 (all) or a positive count");
  if (o.chunks > 0 && o.ctx == 0) fail("logits --chunks needs --ctx");
  Engine eng(open_weights(o.model), true, o.device);
  eng.set_dynamic_topk(o.dynamic_topk);
  if (o.ctx > 0) return run_chunked(o, eng);
  std::vector<int32_t> ids = o.tokens;
  if (ids.empty()) ids = load_tokenizer(o.model)->encode(read_file(o.text), true);
  const int64_t maxpos = eng.config().max_position_embeddings;
  if (maxpos > 0 && static_cast<int64_t>(ids.size()) > maxpos)
    fail("logits: ", ids.size(), " tokens exceed the model's context of ", maxpos);
  const std::vector<float> lg = eng.logits(ids);
  Result r{static_cast<int64_t>(ids.size()), eng.config().vocab_size, eng.routing_counts().routed,
           eng.routing_counts().skipped};
  write_npy_f32(o.output, lg.data(), {r.tokens, r.vocab});
  return r;
}

}  // namespace logits
}  // namespace moetool
