// engine/calibrate_job.cc — `moetool calibrate` as a library call (see calibrate_job.h).
#include "engine/calibrate_job.h"

#include <iterator>

#include "core/error.h"
#include "core/fs.h"
#include "engine/text.h"

namespace moetool {

std::vector<std::vector<int32_t>> calibration_chunks(const Tokenizer& tok, int64_t max_positions,
                                                     const std::string& text_path, int64_t ctx, int64_t max_chunks) {
  if (max_positions > 0 && ctx > max_positions) fail("--ctx ", ctx, " exceeds the model's context of ", max_positions);
  return make_chunks(tok, read_file(text_path), ctx, max_chunks, true, text_path);
}

std::vector<std::vector<int32_t>> calibration_chunks(const Tokenizer& tok, int64_t max_positions,
                                                     const std::vector<std::string>& text_paths, int64_t ctx,
                                                     int64_t max_chunks) {
  std::vector<std::vector<int32_t>> chunks;
  for (const auto& f : text_paths) {
    auto ch = calibration_chunks(tok, max_positions, f, ctx, max_chunks);
    chunks.insert(chunks.end(), std::make_move_iterator(ch.begin()), std::make_move_iterator(ch.end()));
  }
  return chunks;
}

namespace calibration {

Result run(const Options& o) {
  auto tok = load_tokenizer(o.model);
  Engine eng(open_weights(o.model), /*keep_layers=*/false, o.device);
  const auto chunks = calibration_chunks(*tok, eng.config().max_position_embeddings, o.text, o.ctx, o.chunks);
  Result r{calibrate(eng, chunks, o.collect), {}};
  r.stats.save(o.output, o.metadata);
  r.unrouted = r.stats.unrouted_experts();
  return r;
}

}  // namespace calibration
}  // namespace moetool
