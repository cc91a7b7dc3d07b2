// engine/gpu_weights.cc — the CUDA engine's weights on the GPU (engine/gpu_weights.h).
#include "engine/gpu_weights.h"

#include <optional>

#include "core/dtype.h"
#include "formats/df11.h"
#include "formats/ggml_types.h"

namespace moetool {

// The GPU's decoder for a ggml type, if it has one.
static std::optional<cuda::BlockType> gpu_block_type(int ggml_type) {
  switch (static_cast<GGMLType>(ggml_type)) {
    case GGMLType::Q8_0: return cuda::BlockType::Q8_0;
    case GGMLType::Q4_0: return cuda::BlockType::Q4_0;
    case GGMLType::Q4_1: return cuda::BlockType::Q4_1;
    case GGMLType::Q5_0: return cuda::BlockType::Q5_0;
    case GGMLType::Q5_1: return cuda::BlockType::Q5_1;
    case GGMLType::Q4_K: return cuda::BlockType::Q4_K;
    case GGMLType::Q5_K: return cuda::BlockType::Q5_K;
    case GGMLType::Q6_K: return cuda::BlockType::Q6_K;
    default: return std::nullopt;
  }
}

// Quantized storage the GPU decodes itself (ggml Q8_0 … Q6_K blocks, 4-bit GPTQ): only the stored
// bytes cross to the GPU, into g's quantized buffers; they are dequantized there to the values the
// CPU's decoders give (kernels/backend_shared.h), rounded to bf16 on a bf16 engine as the host path
// does. Returns false (g untouched) for any other storage.
static bool upload_packed(const WeightMatrix& m, GpuMatrix& g) {
  const PackedWeight* pw = m.packed();
  if (!pw) return false;
  const int64_t R = m.rows(), C = m.cols();
  if (pw->kind == PackedWeight::Kind::Ggml) {
    const auto bt = gpu_block_type(pw->ggml_type);
    if (!bt) return false;
    g.block_type = *bt;
    g.blocks.upload(pw->blocks, static_cast<size_t>(pw->bytes));
    g.packing = GpuMatrix::Packing::Blocks;
    return true;
  }
  if (pw->bits != 4 || R % 8 != 0 || C % 8 != 0) return false;
  const int64_t G = pw->ngroups;
  std::vector<float> scales(static_cast<size_t>(G * R));
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = f16_to_f32(pw->scales[i]);
  g.qweight.upload(pw->qweight, static_cast<size_t>(C / 8 * R));
  g.qzeros.upload(pw->qzeros, static_cast<size_t>(G * R / 8));
  g.g_idx.upload(pw->g_idx, static_cast<size_t>(C));
  g.scales.upload(scales.data(), scales.size());
  g.packing = GpuMatrix::Packing::Gptq;
  return true;
}

template <class T>
static void decode_packed_to(const GpuMatrix& W, T* out) {
  if (W.packing == GpuMatrix::Packing::Blocks)
    cuda::dequant_blocks(W.block_type, W.blocks.get(), W.rows, W.cols, out);
  else
    cuda::dequant_gptq_int4(W.qweight.get(), W.qzeros.get(), W.scales.get(), W.g_idx.get(), W.cols, W.rows, out);
}
void decode_packed(const GpuMatrix& W, float* out) { decode_packed_to(W, out); }
void decode_packed(const GpuMatrix& W, uint16_t* out) { decode_packed_to(W, out); }

// The decodable stored form of m on the GPU, dequantized there into g's dense buffer (keep = false)
// or kept as it is, decoded per use (keep = true). False for other storage.
static bool decode_on_gpu(const WeightMatrix& m, Precision p, bool keep, GpuMatrix& g) {
  GpuMatrix q;
  q.rows = m.rows();
  q.cols = m.cols();
  if (!upload_packed(m, keep ? g : q)) return false;
  if (keep) return true;
  if (p == Precision::BF16) {
    g.bf16.resize(static_cast<size_t>(q.rows * q.cols));
    decode_packed(q, g.bf16.get());
  } else {
    g.f32.resize(static_cast<size_t>(q.rows * q.cols));
    decode_packed(q, g.f32.get());
  }
  return true;  // q's buffers are freed stream-ordered, after the decode
}

// DF11 storage (PackedWeight::Kind::Df11): the coded tensors cross to the GPU and are decoded there
// (cuda::df11_decode, the CPU's block decoder and hash) into g's dense BF16 buffer — widened to
// float32 on a float32 engine, as the CPU widens the decoded BF16 — at upload, whatever keep_packed
// says: the engine uploads a layer at a time, so this is DFloat11's per-layer decode. A corrupt
// block is the CPU's error naming the matrix and block. False (g untouched) for other storage.
static bool decode_df11(const WeightMatrix& m, Precision p, GpuMatrix& g) {
  const PackedWeight* pw = m.packed();
  if (!pw || pw->kind != PackedWeight::Kind::Df11) return false;
  const int64_t n = m.rows() * m.cols(), nb = pw->df11_nblocks;
  df11_check_blocks(pw->df11_offsets, nb, pw->df11_exp_bytes, n, pw->df11_block, pw->what);
  const std::vector<uint16_t> table = df11_decode_table(pw->df11_lengths, pw->what);  // 128 KiB, host-built
  Buffer<uint16_t> out(static_cast<size_t>(n));
  const std::vector<int32_t> st =
      cuda::df11_upload_decode(table.data(), pw->df11_offsets, nb, pw->df11_exp, pw->df11_exp_bytes, pw->df11_sm, n,
                               pw->df11_block, pw->df11_hash, out.get());
  for (int64_t b = 0; b < nb; ++b)
    if (st[static_cast<size_t>(b)] != df11::kBlockOk) df11_block_error(pw->what, b);
  if (p == Precision::BF16) {
    g.bf16 = std::move(out);
  } else {
    g.f32.resize(static_cast<size_t>(n));
    cuda::bf16_to_f32(out.get(), g.f32.get(), n);
  }
  return true;
}

// Low-rank storage (WeightMatrix::lowrank): its factors on the GPU, float32 or rounded to bf16 as
// the dense path rounds W, so W is never formed. False (g untouched) for any other storage.
static bool upload_lowrank(const WeightMatrix& m, Precision p, GpuMatrix& g) {
  const LowRankFactors* f = m.lowrank();
  if (!f) return false;
  const int64_t R = m.rows(), C = m.cols(), r = f->rank;
  auto up = [&](const float* src, int64_t n, Buffer<float>& b32, Buffer<uint16_t>& b16) {
    if (p == Precision::BF16) {
      std::vector<uint16_t> hb(static_cast<size_t>(n));
      for (size_t i = 0; i < hb.size(); ++i) hb[i] = shared::float_to_bf16(src[i]);
      b16.upload(hb.data(), hb.size());
    } else {
      b32.upload(src, static_cast<size_t>(n));
    }
  };
  up(f->U, R * r, g.u32, g.u16);
  up(f->V, r * C, g.v32, g.v16);
  if (f->base) up(f->base, R * C, g.base32, g.base16);
  g.rank = r;
  return true;
}

// Bytes m takes on the GPU in precision p: decoded, or (packed) in its stored form where the GPU
// decodes that.
static uint64_t gpu_bytes(const Mat& m, Precision p, bool packed) {
  if (!m) return 0;
  if (const LowRankFactors* f = m->lowrank())
    return static_cast<uint64_t>(f->rank * (m->rows() + m->cols()) + (f->base ? m->rows() * m->cols() : 0)) *
           (p == Precision::BF16 ? 2 : 4);
  if (packed)
    if (const PackedWeight* pw = m->packed()) {
      if (pw->kind == PackedWeight::Kind::Ggml) {
        if (gpu_block_type(pw->ggml_type)) return pw->bytes;
      } else if (pw->bits == 4 && m->rows() % 8 == 0 && m->cols() % 8 == 0) {
        // qweight: 4 bits a weight; qzeros: 4 bits and scales: 4 bytes per (group, output); g_idx
        return static_cast<uint64_t>(m->rows() * m->cols() / 2 + pw->ngroups * m->rows() * 4.5 + m->cols() * 4);
      }
    }
  return static_cast<uint64_t>(m->rows() * m->cols()) * (p == Precision::BF16 ? 2 : 4);
}

std::unique_ptr<GpuMatrix> upload_matrix(const Mat& m, Precision p, UploadCounts* counts, bool keep_packed) {
  if (!m) return nullptr;
  auto g = std::make_unique<GpuMatrix>();
  g->rows = m->rows();
  g->cols = m->cols();
  g->bf16_math = p == Precision::BF16;
  if (decode_df11(*m, p, *g)) {
    if (counts) ++counts->decoded;
    return g;
  }
  if (decode_on_gpu(*m, p, keep_packed, *g)) {
    if (counts) ++(keep_packed ? counts->packed : counts->decoded);
    return g;
  }
  if (upload_lowrank(*m, p, *g)) return g;
  // Any other storage (dense, quantized) becomes float32 on the host first: the CPU's own
  // decode, so both devices multiply by identical weights.
  std::vector<float> host(static_cast<size_t>(g->rows * g->cols));
  m->to_dense(host.data());
  if (p == Precision::BF16) {
    std::vector<uint16_t> hb(host.size());
    for (size_t i = 0; i < host.size(); ++i) hb[i] = shared::float_to_bf16(host[i]);
    g->bf16.upload(hb.data(), hb.size());
  } else {
    g->f32.upload(host.data(), host.size());
  }
  return g;
}

Buffer<float> upload_vec(const std::vector<float>& v) {
  Buffer<float> b;
  if (!v.empty()) b.upload(v.data(), v.size());
  return b;
}

namespace {
// Moves bf16 experts of one shape into one stacked buffer, each expert then a view into it (one
// projection at a time, so the copy costs at most one projection's memory on top).
void stack_experts(std::vector<std::unique_ptr<GpuMatrix>>& v, Buffer<uint16_t>& all) {
  if (v.empty()) return;
  for (const auto& m : v)
    if (!m || !m->bf16.get() || m->rows != v[0]->rows || m->cols != v[0]->cols) return;
  const int64_t per = v[0]->rows * v[0]->cols;
  all.resize(static_cast<size_t>(per) * v.size());
  for (size_t e = 0; e < v.size(); ++e) {
    uint16_t* dst = all.get() + static_cast<int64_t>(e) * per;
    cuda::copy(dst, v[e]->bf16.get(), static_cast<size_t>(per) * sizeof(uint16_t));
    v[e]->bf16 = Buffer<uint16_t>();  // freed (stream-ordered, after the copy)
    v[e]->bf16_view = dst;
  }
}
}  // namespace

std::shared_ptr<GpuLayer> upload_layer(const LayerWeights& lw, Precision p, bool keep_packed, UploadCounts* counts) {
  auto g = std::make_shared<GpuLayer>();
  g->attn_norm = upload_vec(lw.attn_norm);
  g->ffn_norm = upload_vec(lw.ffn_norm);
  g->q_bias = upload_vec(lw.q_bias);
  g->k_bias = upload_vec(lw.k_bias);
  g->v_bias = upload_vec(lw.v_bias);
  g->o_bias = upload_vec(lw.o_bias);
  g->q_norm = upload_vec(lw.q_norm);
  g->k_norm = upload_vec(lw.k_norm);
  g->qa_norm = upload_vec(lw.qa_norm);
  g->kva_norm = upload_vec(lw.kva_norm);
  g->q = upload_matrix(lw.q, p, counts, keep_packed);
  g->k = upload_matrix(lw.k, p, counts, keep_packed);
  g->v = upload_matrix(lw.v, p, counts, keep_packed);
  g->o = upload_matrix(lw.o, p, counts, keep_packed);
  g->qa = upload_matrix(lw.qa, p, counts, keep_packed);
  g->qb = upload_matrix(lw.qb, p, counts, keep_packed);
  g->kva = upload_matrix(lw.kva, p, counts, keep_packed);
  g->kvb = upload_matrix(lw.kvb, p, counts, keep_packed);
  g->moe = lw.moe;
  g->gate = upload_matrix(lw.gate, p, counts, keep_packed);
  g->up = upload_matrix(lw.up, p, counts, keep_packed);
  g->down = upload_matrix(lw.down, p, counts, keep_packed);
  g->gate_bias = upload_vec(lw.gate_bias);
  g->up_bias = upload_vec(lw.up_bias);
  g->down_bias = upload_vec(lw.down_bias);
  // The router decides discrete expert choices: kept in float32 whatever the precision, so bf16
  // rounding cannot flip a near-tie the CPU engine resolves the other way.
  g->router = upload_matrix(lw.router, Precision::F32, counts);
  g->router_bias = upload_vec(lw.router_bias);
  for (const auto& m : lw.eg) g->eg.push_back(upload_matrix(m, p, counts, keep_packed));
  for (const auto& m : lw.eu) g->eu.push_back(upload_matrix(m, p, counts, keep_packed));
  for (const auto& m : lw.ed) g->ed.push_back(upload_matrix(m, p, counts, keep_packed));
  stack_experts(g->eg, g->eg_all);
  stack_experts(g->eu, g->eu_all);
  stack_experts(g->ed, g->ed_all);
  g->sg = upload_matrix(lw.sg, p, counts, keep_packed);
  g->su = upload_matrix(lw.su, p, counts, keep_packed);
  g->sd = upload_matrix(lw.sd, p, counts, keep_packed);
  g->shared_gate = upload_matrix(lw.shared_gate, Precision::F32, counts);
  for (const GpuMatrix* m : {g->q.get(), g->k.get(), g->v.get(), g->o.get(), g->qa.get(), g->qb.get(), g->kva.get(),
                             g->kvb.get(), g->gate.get(), g->up.get(), g->down.get(), g->router.get(), g->sg.get(),
                             g->su.get(), g->sd.get(), g->shared_gate.get()})
    if (m) g->bytes += m->bytes();
  for (const auto* v : {&g->eg, &g->eu, &g->ed})
    for (const auto& m : *v) g->bytes += m->bytes();
  g->bytes += (g->eg_all.size() + g->eu_all.size() + g->ed_all.size()) * sizeof(uint16_t);
  return g;
}

uint64_t layer_gpu_bytes(const LayerWeights& lw, Precision p, bool packed) {
  uint64_t b = 0;
  for (const Mat* m : lw.matrices())
    b += lw.float32_always(m) ? gpu_bytes(*m, Precision::F32, false) : gpu_bytes(*m, p, packed);
  return b;
}

}  // namespace moetool
