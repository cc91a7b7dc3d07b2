// tests/layer_sweep_test.cc — the layer sweep (engine/layer_sweep.h) on synthetic MoE checkpoints:
// its streams after every layer are the engine's whole-sequence hidden states and give its logits
// through Engine::head, observers see every layer once per chunk in order, a Keep run leaves the
// streams alone, and a re-run on an overlay engine reproduces the plain run bit for bit when nothing
// is overlaid and differs when a matrix is perturbed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "engine/engine.h"
#include "engine/layer_sweep.h"
#include "engine/overlay_weights.h"
#include "tests/test_util.h"

namespace moetool::testing {
namespace {

// Chunks of different lengths.
std::vector<std::vector<int32_t>> make_chunks(int64_t vocab) {
  return {random_tokens(17, vocab, 1), random_tokens(9, vocab, 2), random_tokens(24, vocab, 3)};
}

// A tiny synthetic checkpoint of `family`, an engine over it, one over an overlay of it (nothing
// overlaid yet) and the chunks.
struct Synth {
  TempDir td;
  std::shared_ptr<const WeightSource> w;
  std::shared_ptr<OverlayWeights> overlay;
  Engine eng, reng;
  std::vector<std::vector<int32_t>> chunks;
  Synth(const std::string& family, uint64_t seed)
      : w(synth_weights(td, family, seed)),
        overlay(std::make_shared<OverlayWeights>(w)),
        eng(w, /*keep_layers=*/false),
        reng(overlay, /*keep_layers=*/false),
        chunks(make_chunks(eng.config().vocab_size)) {}
};

float max_abs_diff(const float* a, const float* b, size_t n) {
  float d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Records the order of chunks and layers an observer is called for.
struct Trace final : SweepObserver {
  std::vector<std::pair<int64_t, size_t>> hidden;  // (layer, chunk) per on_hidden
  std::vector<int64_t> chunk_tokens;               // n per on_chunk
  int64_t routers = 0, last_first_token = -1;
  size_t chunk = 0;
  void on_chunk(size_t c, int64_t first_token, int64_t n) override {
    chunk = c;
    last_first_token = first_token;
    chunk_tokens.push_back(n);
  }
  void on_router(int64_t, const float*, const int32_t*, const float*, int64_t, int64_t, int64_t) override { ++routers; }
  void on_hidden(int64_t l, const float*, int64_t, int64_t) override { hidden.push_back({l, chunk}); }
};

// The last layer's residual stream of a whole-sequence forward pass.
struct LastHidden final : LayerObserver {
  int64_t last_layer = 0;
  std::vector<float> h;
  void on_hidden(int64_t l, const float* x, int64_t n, int64_t H) override {
    if (l == last_layer) h.assign(x, x + n * H);
  }
};

TEST(LayerSweep, StreamsAreTheForwardPassAndObserversSeeEveryLayerOncePerChunk) {
  for (const char* family : {"mixtral", "qwen2_moe"}) {
    SCOPED_TRACE(family);
    Synth sy(family, 21);
    const Engine& eng = sy.eng;
    const ModelConfig& c = eng.config();
    const auto& chunks = sy.chunks;
    LayerSweep sweep(eng, chunks);
    ASSERT_EQ(sweep.num_chunks(), 3u);
    EXPECT_EQ(sweep.num_tokens(), 17 + 9 + 24);
    EXPECT_EQ(sweep.chunk_offset(2), 17 + 9);
    Trace tr;
    for (int64_t l = 0; l < c.num_layers; ++l) sweep.run(l, &tr);
    // Every layer once per chunk, layers in order, chunks in order within a layer.
    ASSERT_EQ(tr.hidden.size(), static_cast<size_t>(c.num_layers) * 3);
    for (size_t i = 0; i < tr.hidden.size(); ++i) {
      EXPECT_EQ(tr.hidden[i].first, static_cast<int64_t>(i / 3));
      EXPECT_EQ(tr.hidden[i].second, i % 3);
      EXPECT_EQ(tr.chunk_tokens[i], static_cast<int64_t>(chunks[i % 3].size()));
    }
    EXPECT_EQ(tr.last_first_token, 17 + 9);
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < c.num_layers; ++l) moe_layers += c.is_moe_layer(l);
    EXPECT_GT(moe_layers, 0);
    EXPECT_EQ(tr.routers, moe_layers * 3);
    // The streams are the forward pass's hidden states; the head gives its logits.
    const int64_t H = c.hidden_size, V = c.vocab_size;
    for (size_t i = 0; i < chunks.size(); ++i) {
      LastHidden lh;
      lh.last_layer = c.num_layers - 1;
      const std::vector<float> ref = eng.logits(chunks[i], &lh);
      const auto n = static_cast<int64_t>(chunks[i].size());
      ASSERT_EQ(sweep.stream(i).size(), static_cast<size_t>(n * H));
      EXPECT_LT(max_abs_diff(sweep.stream(i).data(), lh.h.data(), lh.h.size()), 1e-5f);
      std::vector<float> logits(static_cast<size_t>(n * V));
      eng.head(sweep.stream(i).data(), n, logits.data());
      EXPECT_LT(max_abs_diff(logits.data(), ref.data(), ref.size()), 1e-4f);
    }
    sweep.release();
    EXPECT_TRUE(sweep.stream(0).empty());
  }
}

TEST(LayerSweep, KeepRunLeavesTheStreamsAndLayersRunInOrder) {
  Synth sy("mixtral", 22);
  const Engine& eng = sy.eng;
  LayerSweep sweep(eng, sy.chunks);
  const std::vector<float> before = sweep.stream(1);
  Trace tr;
  sweep.run(0, &tr, SweepStreams::Keep);
  EXPECT_TRUE(same_bits(sweep.stream(1), before));
  EXPECT_TRUE(same_bits(sweep.input(1), before));
  EXPECT_EQ(tr.hidden.size(), 3u);
  EXPECT_THROW(sweep.run(1, nullptr), Error);  // layer 0 is still next
  sweep.run(0, nullptr);
  EXPECT_FALSE(same_bits(sweep.stream(1), before));
  // No input kept by that Advance run: nothing to re-run from.
  EXPECT_THROW(sweep.input(0), Error);
  EXPECT_THROW(sweep.rerun(0, eng, nullptr), Error);
}

TEST(LayerSweep, OverlayRerunReproducesThePlainRunAndSeesAPerturbedMatrix) {
  Synth sy("qwen2_moe", 23);
  const Engine& reng = sy.reng;
  LayerSweep sweep(sy.eng, sy.chunks);
  const int64_t l = 0;
  const std::vector<float> in0 = sweep.stream(0);
  // An Advance run keeping the inputs of the chunks the first 20 tokens reach (chunks 0 and 1).
  sweep.run(l, nullptr, SweepStreams::Advance, 20);
  EXPECT_EQ(sweep.chunks_within(20), 2u);
  EXPECT_TRUE(same_bits(sweep.input(0), in0));
  EXPECT_THROW(sweep.input(2), Error);
  Trace tr;
  const auto out = sweep.rerun(l, reng, &tr, 20);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(tr.hidden.size(), 2u);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_TRUE(same_bits(out[i], sweep.stream(i))) << "chunk " << i;
  EXPECT_THROW(sweep.rerun(l, reng, nullptr), Error);  // chunk 2's input was not kept
  // One perturbed matrix: the o_proj scaled.
  auto o = sy.w->matrix(Role::O, l);
  Tensor t = Tensor::zeros(DType::F32, {o->rows(), o->cols()});
  o->to_dense(t.as<float>());
  for (int64_t i = 0; i < o->rows() * o->cols(); ++i) t.as<float>()[i] *= 1.5f;
  sy.overlay->set(Role::O, l, -1, make_dense_matrix(t, "scaled o_proj"));
  const auto pert = sweep.rerun(l, reng, nullptr, 20);
  for (size_t i = 0; i < pert.size(); ++i)
    EXPECT_GT(max_abs_diff(pert[i].data(), sweep.stream(i).data(), pert[i].size()), 1e-3f);
}

TEST(LayerSweep, RerunAdvanceMakesTheOverlayRunTheStreams) {
  Synth sy("mixtral", 24);
  const auto& chunks = sy.chunks;
  LayerSweep plain(sy.eng, chunks), seq(sy.eng, chunks);
  plain.run(0, nullptr);
  // Nothing overlaid: a Keep run then the re-run advancing equals the plain Advance run, bit for bit.
  seq.run(0, nullptr, SweepStreams::Keep);
  seq.rerun_advance(0, sy.reng);
  for (size_t i = 0; i < chunks.size(); ++i) EXPECT_TRUE(same_bits(seq.stream(i), plain.stream(i)));
  // Layer 1 with expert 0's down_proj zeroed: the streams follow the overlay.
  plain.run(1, nullptr);
  seq.run(1, nullptr, SweepStreams::Keep);
  auto d = sy.w->matrix(Role::ExpertDown, 1, 0);
  sy.overlay->set(Role::ExpertDown, 1, 0, make_dense_matrix(Tensor::zeros(DType::F32, {d->rows(), d->cols()}), "zero"));
  seq.rerun_advance(1, sy.reng);
  bool differs = false;
  for (size_t i = 0; i < chunks.size(); ++i) differs = differs || !same_bits(seq.stream(i), plain.stream(i));
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace moetool::testing
