// engine/text.cc — chunking text for evaluation (see text.h).
#include "engine/text.h"

#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf.h"

namespace moetool {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path) {
  // A GGUF file carries its tokenizer in its metadata.
  if (model_path.size() > 5 && model_path.compare(model_path.size() - 5, 5, ".gguf") == 0 && !is_directory(model_path))
    return Tokenizer::from_gguf(*GGUFFile::open(model_path));
  const std::string dir = is_directory(model_path) ? model_path : model_path.substr(0, model_path.rfind('/') + 1);
  if (!file_exists(path_join(dir, "tokenizer.json")))
    fail(model_path, ": no tokenizer.json beside the model (needed to tokenize text)");
  return Tokenizer::from_hf_dir(dir);
}

std::vector<std::vector<int32_t>> make_chunks(const Tokenizer& tok, const std::string& text, int64_t ctx,
                                              int64_t max_chunks, bool bos, const std::string& what) {
  if (ctx < 2) fail(what, ": context length ", ctx, " is too short (expected at least 2)");
  const std::vector<int32_t> ids = tok.encode(text, /*add_special=*/false, /*parse_special=*/true);
  const bool add_bos = bos && tok.bos_id().has_value();
  const int64_t per = add_bos ? ctx - 1 : ctx;
  std::vector<std::vector<int32_t>> chunks;
  for (int64_t s = 0; s + per <= static_cast<int64_t>(ids.size()); s += per) {
    std::vector<int32_t> c;
    c.reserve(static_cast<size_t>(ctx));
    if (add_bos) c.push_back(*tok.bos_id());
    c.insert(c.end(), ids.begin() + s, ids.begin() + s + per);
    chunks.push_back(std::move(c));
    if (max_chunks > 0 && static_cast<int64_t>(chunks.size()) >= max_chunks) break;
  }
  if (chunks.empty())
    fail(what, ": the text has ", ids.size(), " tokens, fewer than one chunk of ", ctx,
         " (use a smaller --ctx or a longer text)");
  return chunks;
}

}  // namespace moetool
