// kernels/cuda/df11_cuda.cu — DF11-coded BF16 weights (formats/df11.h) decoded on the GPU
// (kernels/backend_cuda.h): one thread per coded block runs df11::decode_block and df11::block_hash
// of formats/df11_block.h — the decoder and hash the CPU runs — so only the coded bytes (~70 % of the
// BF16 ones) cross to the GPU and the decoded values are the CPU's bit for bit.
#include "formats/df11_block.h"
#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"

namespace moetool::cuda {

namespace {

constexpr int kDf11Threads = 64;  // blocks are long serial streams: few threads per CUDA block, many CUDA blocks

__global__ void k_df11_decode(const uint16_t* table, const int64_t* offsets, int64_t nb, const uint8_t* exp,
                              const uint8_t* sm, int64_t n, int64_t block, const uint64_t* hash, uint16_t* out,
                              int32_t* status) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= nb) return;
  const int64_t first = b * block, cnt = min(n - first, block);
  int32_t st = df11::decode_block(table, exp + offsets[b], exp + offsets[b + 1], sm + first, cnt, out + first);
  if (st == df11::kBlockOk && hash && df11::block_hash(out + first, cnt) != hash[b]) st = df11::kBlockBadHash;
  status[b] = st;
}

__global__ void k_bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = ggml::bf16_to_float(x[i]);
}

}  // namespace

void df11_decode(const uint16_t* table, const int64_t* offsets, int64_t nblocks, const uint8_t* exp, const uint8_t* sm,
                 int64_t n, int64_t block, const uint64_t* hash, uint16_t* out, int32_t* status) {
  if (nblocks == 0) return;
  k_df11_decode<<<blocks_for(nblocks, kDf11Threads), kDf11Threads, 0, context().stream>>>(
      table, offsets, nblocks, exp, sm, n, block, hash, out, status);
  check_launch("df11_decode");
}

std::vector<int32_t> df11_upload_decode(const uint16_t* table, const int64_t* offsets, int64_t nblocks,
                                        const uint8_t* exp, int64_t exp_bytes, const uint8_t* sm, int64_t n,
                                        int64_t block, const uint64_t* hash, uint16_t* out) {
  Buffer<uint16_t> t;
  Buffer<int64_t> off;
  Buffer<uint8_t> e, m;
  Buffer<uint64_t> h;
  Buffer<int32_t> st(static_cast<size_t>(nblocks));
  t.upload(table, size_t{1} << df11::kMaxCodeBits);
  off.upload(offsets, static_cast<size_t>(nblocks + 1));
  if (exp_bytes > 0) e.upload(exp, static_cast<size_t>(exp_bytes));
  m.upload(sm, static_cast<size_t>(n));
  if (hash) h.upload(hash, static_cast<size_t>(nblocks));
  df11_decode(t.get(), off.get(), nblocks, e.get(), m.get(), n, block, hash ? h.get() : nullptr, out, st.get());
  return st.to_host(static_cast<size_t>(nblocks));
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
  if (n == 0) return;
  k_bf16_to_f32<<<blocks_for(n), kThreads, 0, context().stream>>>(x, y, n);
  check_launch("bf16_to_f32");
}

}  // namespace moetool::cuda
