// tests/convert_test_util.cc — see convert_test_util.h.
#include "tests/convert_test_util.h"

#include <filesystem>

#include "core/fs.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "engine/engine.h"
#include "verify/metrics.h"
#include "engine/text.h"

namespace moetool::testing {

std::string tinystories() { return shared_path("models/tinystories-656k"); }
std::string tinystories_calib() { return shared_path("data/tinystories-calib.txt"); }

std::string synth_dense(const TempDir& d, const std::string& family, uint64_t seed) {
  const std::string out = d.file("dense-" + family);
  if (std::filesystem::exists(out)) return out;
  SynthOptions so;
  so.family = family;
  so.preset = "tiny";
  so.seed = seed;
  synth_model(out, so);
  return out;
}

std::vector<std::vector<int32_t>> token_chunks(int64_t vocab, int n, int len, uint64_t seed) {
  std::vector<std::vector<int32_t>> c(static_cast<size_t>(n));
  uint64_t x = seed;
  for (auto& ch : c)
    for (int i = 0; i < len; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      ch.push_back(static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(vocab)));
    }
  return c;
}

std::vector<std::vector<int32_t>> tinystories_chunks(int n, int ctx) {
  auto tok = load_tokenizer(tinystories());
  return make_chunks(*tok, read_file(tinystories_calib()), ctx, n, true, tinystories_calib());
}

Agreement agreement(const std::string& base, const std::string& cand,
                    const std::vector<std::vector<int32_t>>& chunks) {
  Engine b(open_weights(base)), c(open_weights(cand));
  const int64_t V = b.config().vocab_size;
  VerifyAccumulator acc;
  for (const auto& ch : chunks) {
    const auto lb = b.logits(ch), lc = c.logits(ch);
    acc.add_chunk(lb.data(), lc.data(), ch.data(), static_cast<int64_t>(ch.size()), V, 0);
  }
  const VerifyStats s = acc.finish();
  return {s.kld.value, s.same_top.value};
}

void expect_clean(const std::string& out, const std::string& family) {
  Model m = Model::open(out);
  EXPECT_EQ(m.config().family, family);
  const auto inc = m.check();
  for (const auto& i : inc) ADD_FAILURE() << out << ": " << i.message();
  EXPECT_TRUE(inc.empty());
}

}  // namespace moetool::testing
