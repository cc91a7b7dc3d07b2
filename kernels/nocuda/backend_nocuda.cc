// kernels/nocuda/backend_nocuda.cc — kernels/backend_cuda.h and the CUDA half of kernels/linalg.h
// in builds without nvcc: every entry point throws one line saying the backend is not built
// (callers check cuda_built() / cuda_device_count() first, so this is reached only by misuse).
#include "core/error.h"
#include "kernels/backend_cuda.h"
#include "kernels/linalg.h"

namespace moetool {
namespace {
[[noreturn]] void not_built(const char* what) {
  fail(what, ": the CUDA backend is not built into this moetool (nvcc was not found at configure time)");
}
}  // namespace

namespace cuda {
void init() { not_built("cuda::init"); }
void* alloc(size_t) { not_built("cuda::alloc"); }
void release(void*) noexcept {}
void upload(void*, const void*, size_t) { not_built("cuda::upload"); }
void download(void*, const void*, size_t) { not_built("cuda::download"); }
void copy(void*, const void*, size_t) { not_built("cuda::copy"); }
void copy_2d(float*, int64_t, const float*, int64_t, int64_t, int64_t) { not_built("cuda::copy_2d"); }
void zero(void*, size_t) { not_built("cuda::zero"); }
void synchronize() { not_built("cuda::synchronize"); }
size_t free_memory() { not_built("cuda::free_memory"); }
size_t total_memory() { not_built("cuda::total_memory"); }
void gemm_nt_f32(int64_t, int64_t, int64_t, const float*, int64_t, const float*, float*, int64_t, float) {
  not_built("cuda::gemm_nt_f32");
}
void gemm_nt_bf16(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, float*, int64_t, float) {
  not_built("cuda::gemm_nt_bf16");
}
void gemm_nt_bf16_batched(int64_t, int64_t, int64_t, int64_t, const uint16_t*, int64_t, int64_t, const uint16_t*,
                          int64_t, float*, int64_t, int64_t, float) {
  not_built("cuda::gemm_nt_bf16_batched");
}
void pad_groups(const int32_t*, const int32_t*, const int32_t*, int64_t, int64_t, int64_t, int64_t, int32_t*, int32_t*) {
  not_built("cuda::pad_groups");
}
void gemm_cm_f32(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                 float, float) {
  not_built("cuda::gemm_cm_f32");
}
void to_bf16(const float*, uint16_t*, int64_t) { not_built("cuda::to_bf16"); }
void rmsnorm(const float*, const float*, float*, int64_t, int64_t, float) { not_built("cuda::rmsnorm"); }
void rope(float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const float*, int64_t, float) {
  not_built("cuda::rope");
}
void deinterleave(float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t) { not_built("cuda::deinterleave"); }
void attention(const float*, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, int64_t,
               int64_t, int64_t, int64_t, float, int64_t, bool) {
  not_built("cuda::attention");
}
bool attention_tc_supported(int64_t, int64_t) { return false; }
void silu_mul(const float*, const float*, float*, int64_t) { not_built("cuda::silu_mul"); }
void silu_mul_bf16(const float*, const float*, uint16_t*, int64_t) { not_built("cuda::silu_mul_bf16"); }
void gather_rows_bf16(const float*, const int32_t*, int64_t, int64_t, uint16_t*) { not_built("cuda::gather_rows_bf16"); }
void combine_rows(const float*, const int32_t*, const float*, int64_t, int64_t, int64_t, float*) {
  not_built("cuda::combine_rows");
}
void add_bias(float*, const float*, int64_t, int64_t) { not_built("cuda::add_bias"); }
void add(float*, const float*, int64_t) { not_built("cuda::add"); }
void clamp(float*, int64_t, float) { not_built("cuda::clamp"); }
void gated_add(float*, const float*, const float*, int64_t, int64_t) { not_built("cuda::gated_add"); }
void route(const shared::RouteParams&, const float*, const float*, int64_t, float*, int32_t*, float*) {
  not_built("cuda::route");
}
void gather_rows(const float*, const int32_t*, int64_t, int64_t, float*) { not_built("cuda::gather_rows"); }
void scatter_add_rows(const float*, const int32_t*, const float*, int64_t, int64_t, float*) {
  not_built("cuda::scatter_add_rows");
}
void group_by_expert(const int32_t*, const float*, int64_t, int64_t, int64_t, int32_t*, int32_t*, int32_t*, float*) {
  not_built("cuda::group_by_expert");
}
void score_logit_rows(const float*, const float*, const int32_t*, int64_t, int64_t, double*) {
  not_built("cuda::score_logit_rows");
}
void compare_rows(const float*, const float*, int64_t, int64_t, double*) { not_built("cuda::compare_rows"); }
void dequant_blocks(BlockType, const uint8_t*, int64_t, int64_t, float*) { not_built("cuda::dequant_blocks"); }
void dequant_blocks(BlockType, const uint8_t*, int64_t, int64_t, uint16_t*) { not_built("cuda::dequant_blocks"); }
void dequant_gptq_int4(const int32_t*, const int32_t*, const float*, const int32_t*, int64_t, int64_t, float*) {
  not_built("cuda::dequant_gptq_int4");
}
void dequant_gptq_int4(const int32_t*, const int32_t*, const float*, const int32_t*, int64_t, int64_t, uint16_t*) {
  not_built("cuda::dequant_gptq_int4");
}
void gemv_blocks(BlockType, const uint8_t*, int64_t, int64_t, const float*, const uint16_t*, int64_t, float*, float,
                 bool) {
  not_built("cuda::gemv_blocks");
}
void gemv_gptq_int4(const int32_t*, const int32_t*, const float*, const int32_t*, int64_t, int64_t, const float*,
                    const uint16_t*, int64_t, float*, float, bool) {
  not_built("cuda::gemv_gptq_int4");
}
void df11_decode(const uint16_t*, const int64_t*, int64_t, const uint8_t*, const uint8_t*, int64_t, int64_t,
                 const uint64_t*, uint16_t*, int32_t*) {
  not_built("cuda::df11_decode");
}
std::vector<int32_t> df11_upload_decode(const uint16_t*, const int64_t*, int64_t, const uint8_t*, int64_t,
                                        const uint8_t*, int64_t, int64_t, const uint64_t*, uint16_t*) {
  not_built("cuda::df11_upload_decode");
}
void bf16_to_f32(const uint16_t*, float*, int64_t) { not_built("cuda::bf16_to_f32"); }

}  // namespace cuda

namespace linalg::detail {
Svd cuda_svd(const float*, int64_t, int64_t) { not_built("linalg::svd"); }
std::vector<Svd> cuda_svd_batched(const float*, int64_t, int64_t, int64_t) { not_built("linalg::svd_batched"); }
void cuda_range_finder(const float*, int64_t, int64_t, const float*, int64_t, int64_t, std::vector<float>&,
                       std::vector<float>&) {
  not_built("linalg::svd_randomized");
}
void cuda_eigh(const float*, int64_t, std::vector<float>&, std::vector<float>&) { not_built("linalg::eigh"); }
std::vector<float> cuda_cholesky(const float*, int64_t) { not_built("linalg::cholesky"); }
}  // namespace linalg::detail

}  // namespace moetool
