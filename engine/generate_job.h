// engine/generate_job.h — `moetool generate` and `moetool logits` as library calls: a prompt
// continued with KV-cached decoding, and teacher-forced logits written as a .npy file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/sampling.h"
#include "kernels/device.h"

namespace moetool {
namespace generate {

struct Options {
  std::string model;   // model directory (or GGUF file) with its tokenizer
  std::string prompt;
  int64_t tokens = 32;  // new tokens at most (fewer when EOS comes first)
  SamplingOptions sampling{/*greedy=*/false, /*temperature=*/0.8f, /*top_p=*/0.95f, /*seed=*/0};
  DeviceOptions device;
};

// Continues the prompt (BOS added as the tokenizer does, once). Streams the text to `on_text`: the
// prompt as given, then whatever each new token adds to the decoded text. Returns every token id,
// the prompt's first. Throws for a negative count, an empty prompt or one too long for the model.
std::vector<int32_t> run(const Options& o, const std::function<void(const std::string&)>& on_text);

}  // namespace generate

namespace logits {

struct Options {
  std::string model;
  std::vector<int32_t> tokens;  // the tokens, or (when empty)
  std::string text;             // a text file to tokenize (BOS added as the tokenizer does)
  std::string output;           // .npy file to write
  DeviceOptions device;
  double dynamic_topk = 0;      // Engine::set_dynamic_topk (0: off)
  // With ctx > 0: the text cut into chunks of ctx tokens, BOS first in each (as verify does), at most
  // `chunks` of them (0: all), each run on its own; the output is [chunks · ctx, vocab].
  int64_t ctx = 0, chunks = 0;
};

struct Result {
  int64_t tokens = 0, vocab = 0;  // the shape written
  int64_t routed_pairs = 0, skipped_pairs = 0;  // (token, expert) computations; skipped by dynamic top-k
};

// Writes the teacher-forced logits [tokens, vocab] as float32 .npy (with ctx: chunk by chunk, one
// chunk's logits in memory). Throws when the tokens (a chunk) exceed the model's context.
Result run(const Options& o);

}  // namespace logits
}  // namespace moetool
