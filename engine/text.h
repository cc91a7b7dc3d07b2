// engine/text.h — turning evaluation/calibration text into fixed-length token chunks, and finding
// the tokenizer that belongs to a model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "formats/tokenizer.h"

namespace moetool {

// The tokenizer of a model: tokenizer.json beside a Hugging Face checkpoint, or the tokenizer.ggml.*
// metadata of a GGUF file. Throws naming the model if there is none.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path);

// Tokenizes `text` (no special tokens added) and cuts it into chunks of `ctx` tokens; with `bos`,
// each chunk starts with the BOS token followed by ctx-1 text tokens. At most max_chunks chunks
// (0 = all). Throws if the text yields no complete chunk.
std::vector<std::vector<int32_t>> make_chunks(const Tokenizer& tok, const std::string& text, int64_t ctx,
                                              int64_t max_chunks, bool bos, const std::string& what);

}  // namespace moetool
