// bench/bench_cuda.cc — the CUDA backend's numbers: measured cuBLAS bf16 GEMM rate (the roof),
// teacher-forced logits throughput at a given context on checkpoints (synth bench presets: make them
// with `moetool synth --family llama --preset bench` and `--family mixtral`), achieved TFLOP/s
// against that roof, and SVD / randomized SVD time on the GPU against the CPU (LAPACK).
//
//   bench_cuda [--ctx 2048] [--dtype bf16|f32] [--reps 3] [--svd 4096] [--profile] [--verify] MODEL...
//
// --profile: where the forward pass spends its time (engine/engine_cuda.cc, MOETOOL_CUDA_PROFILE),
// measured on extra passes after the timed ones (the stream is synchronised per section).
// --verify: one `moetool verify` chunk (base in float32, candidate in --dtype, the same weights) on
// the GPU the way verify runs it now (logits and hidden states scored on the GPU, five numbers per
// position back) against the host path it replaced (every layer's hidden state and the logits
// copied to the host and scored there by the CPU).
//
// Prints one JSON object. Exits 2 with one line when no GPU is usable.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "kernels/backend_cuda.h"
#include "kernels/device.h"
#include "kernels/linalg.h"
#include "engine/engine.h"
#include "verify/hidden_compare.h"
#include "verify/metrics.h"
#include "verify/score_device.h"
#include "engine/weights.h"

using namespace moetool;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// verify's former observer: every layer's hidden state on the host (needs() = everything).
class HostHidden final : public LayerObserver {
 public:
  std::vector<std::vector<float>> h;
  void on_hidden(int64_t l, const float* x, int64_t n, int64_t H) override {
    if (h.size() <= static_cast<size_t>(l)) h.resize(static_cast<size_t>(l) + 1);
    h[static_cast<size_t>(l)].assign(x, x + n * H);
  }
};

// Best-of-5 bf16 GEMM (f32 accumulation) rate in TFLOP/s at M = N = K = s.
double gemm_bf16_tflops(int64_t s) {
  std::vector<uint16_t> h(static_cast<size_t>(s * s));
  for (size_t i = 0; i < h.size(); ++i) h[i] = shared::float_to_bf16(static_cast<float>((i * 2654435761u) % 1000) / 1000.0f);
  cuda::Buffer<uint16_t> a, b;
  a.upload(h.data(), h.size());
  b.upload(h.data(), h.size());
  cuda::Buffer<float> c(static_cast<size_t>(s * s));
  cuda::gemm_nt_bf16(s, s, s, a.get(), s, b.get(), c.get(), s);  // warm-up
  cuda::synchronize();
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    for (int i = 0; i < 10; ++i) cuda::gemm_nt_bf16(s, s, s, a.get(), s, b.get(), c.get(), s);
    cuda::synchronize();
    best = std::min(best, seconds_since(t0) / 10);
  }
  return 2.0 * static_cast<double>(s) * s * s / best / 1e12;
}

// Forward FLOPs of teacher-forced logits over n tokens: 2 · (active matmul parameters) per token
// plus causal attention (QKᵀ and PV: 2 · 2 · n²/2 · heads · head_dim per layer).
double forward_flops(const ModelConfig& c, int64_t n) {
  const double H = static_cast<double>(c.hidden_size), d = static_cast<double>(c.head_dim);
  double per_layer = H * c.num_heads * d * 2 + H * c.num_kv_heads * d * 2;  // q, o, k, v
  double ffn_dense = 3.0 * H * static_cast<double>(c.intermediate_size);
  double ffn_moe = c.moe ? 3.0 * H * static_cast<double>(c.moe->expert_intermediate) * c.moe->top_k +
                               3.0 * H * static_cast<double>(c.moe->shared_intermediate) + H * c.moe->num_experts
                         : 0.0;
  double total = 0;
  for (int64_t l = 0; l < c.num_layers; ++l)
    total += 2.0 * n * (per_layer + (c.moe && c.is_moe_layer(l) ? ffn_moe : ffn_dense)) +
             2.0 * 2.0 * (static_cast<double>(n) * n / 2) * c.num_heads * d;
  total += 2.0 * n * H * static_cast<double>(c.vocab_size);
  return total;
}

// Seconds of the attention kernels of one teacher-forced pass (all layers) at context n, on random
// Q/K/V of the model's shapes (standard attention; 0 for MLA).
double attention_seconds(const ModelConfig& c, int64_t n, bool bf16) {
  if (c.mla) return 0.0;
  const int64_t d = c.head_dim, Hq = c.num_heads, Hk = c.num_kv_heads;
  std::vector<float> h(static_cast<size_t>(n * Hq * d));
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
  cuda::Buffer<float> q, k, v, o(static_cast<size_t>(n * Hq * d));
  q.upload(h.data(), h.size());
  k.upload(h.data(), static_cast<size_t>(n * Hk * d));
  v.upload(h.data() + n * Hk * d, static_cast<size_t>(n * Hk * d));
  auto run = [&] {
    for (int64_t l = 0; l < c.num_layers; ++l)
      cuda::attention(q.get(), Hq * d, k.get(), Hk * d, v.get(), Hk * d, o.get(), n, 0, Hq, Hk, d, d,
                      1.0f / std::sqrt(static_cast<float>(d)), 0, bf16);
    cuda::synchronize();
  };
  run();
  const auto t0 = Clock::now();
  run();
  return seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int64_t ctx = 2048, reps = 3, svd_n = 4096;
    bool profile = false, verify = false;
    std::string dtype = "bf16";
    std::vector<std::string> models;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) fail(a, ": missing value");
        return argv[++i];
      };
      if (a == "--ctx") ctx = std::stoll(next());
      else if (a == "--reps") reps = std::stoll(next());
      else if (a == "--svd") svd_n = std::stoll(next());
      else if (a == "--dtype") dtype = next();
      else if (a == "--profile") profile = true;
      else if (a == "--verify") verify = true;
      else models.push_back(a);
    }
    if (!cuda_built() || cuda_device_count() == 0) fail("bench_cuda: no usable GPU: ", cuda_device_summary());
    cuda::init();
    nlohmann::ordered_json out;
    out["device"] = cuda_device_summary();
    const double roof = gemm_bf16_tflops(8192);
    out["cublas_bf16_gemm_tflops_8192"] = roof;
    const DeviceOptions dev{Device::Cuda, parse_precision(dtype)};
    for (const auto& path : models) {
      auto w = open_weights(path);
      Engine eng(w, true, dev);
      std::vector<int32_t> toks(static_cast<size_t>(ctx));
      std::mt19937 rng(1);
      for (auto& t : toks) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(eng.config().vocab_size));
      auto t0 = Clock::now();
      eng.logits(toks);  // first pass: uploads the weights
      const double first = seconds_since(t0);
      // Timed like a framework's forward pass: logits left in GPU memory; then with the copy to the host.
      auto median = [&](auto&& run) {
        std::vector<double> times;
        for (int64_t r = 0; r < reps; ++r) {
          const auto t = Clock::now();
          run();
          times.push_back(seconds_since(t));
        }
        std::sort(times.begin(), times.end());
        return times[times.size() / 2];
      };
      const double med = median([&] { eng.logits_in_place(toks); });
      const double med_host = median([&] { (void)eng.logits(toks); });
      const double flops = forward_flops(eng.config(), ctx);
      const double attn = attention_seconds(eng.config(), ctx, dev.precision == Precision::BF16);
      if (profile) {  // a second engine with per-section synchronisation; prints when destroyed
        setenv("MOETOOL_CUDA_PROFILE", "1", 1);
        {
          std::cerr << path << ": ";
          Engine prof(w, true, dev);
          prof.logits_in_place(toks);
          prof.logits_in_place(toks);
        }
        unsetenv("MOETOOL_CUDA_PROFILE");
      }
      nlohmann::ordered_json m;
      m["model"] = path;
      m["dtype"] = dtype;
      m["ctx"] = ctx;
      m["first_pass_s"] = first;
      m["median_s"] = med;
      m["median_with_host_copy_s"] = med_host;
      m["attention_s"] = attn;  // all layers' attention kernels alone, at this context
      m["tokens_per_s"] = static_cast<double>(ctx) / med;
      m["tflops"] = flops / med / 1e12;
      m["fraction_of_gemm_roof"] = flops / med / 1e12 / roof;
      if (verify) {  // one verify chunk, host path (before) and device path (now); best of `reps`
        Engine base(w, true, DeviceOptions{Device::Cuda, Precision::F32});
        const int64_t V = eng.config().vocab_size, H = eng.config().hidden_size;
        double host_s = 1e30, dev_s = 1e30, kld_host = 0, kld_dev = 0;
        for (int64_t r = 0; r < reps; ++r) {
          auto t = Clock::now();
          {
            HostHidden hb, hc;
            const auto bl = base.logits(toks, &hb);
            const auto cl = eng.logits(toks, &hc);
            HiddenStateComparison cmp;
            for (size_t l = 0; l < hb.h.size(); ++l)
              cmp.add(static_cast<int64_t>(l), hb.h[l].data(), hc.h[l].data(), ctx, H);
            VerifyAccumulator acc;
            acc.add_chunk(bl.data(), cl.data(), toks.data(), ctx, V, 0);
            kld_host = acc.finish().kld.value;
          }
          host_s = std::min(host_s, seconds_since(t));
          t = Clock::now();
          {
            HiddenRecorder rec;
            HiddenStateComparison cmp;
            HiddenComparer hc(rec, cmp);
            const float* bl = base.logits_on_device(toks, &rec);
            const float* cl = eng.logits_on_device(toks, &hc);
            VerifyAccumulator acc;
            acc.add_rows(score_rows_on_device(bl, cl, toks.data(), ctx, V, 0));
            kld_dev = acc.finish().kld.value;
          }
          dev_s = std::min(dev_s, seconds_since(t));
        }
        m["verify_chunk_host_path_s"] = host_s;
        m["verify_chunk_device_path_s"] = dev_s;
        m["verify_mean_kld_host_path"] = kld_host;
        m["verify_mean_kld_device_path"] = kld_dev;
      }
      out["models"].push_back(m);
    }
    if (svd_n > 0) {
      std::vector<float> A(static_cast<size_t>(svd_n * svd_n));
      std::mt19937 rng(2);
      std::normal_distribution<float> nd;
      for (auto& x : A) x = nd(rng);
      nlohmann::ordered_json s;
      s["n"] = svd_n;
      for (Device d : {Device::Cpu, Device::Cuda}) {
        auto t0 = Clock::now();
        linalg::svd(A.data(), svd_n, svd_n, d);
        s[std::string("full_s_") + device_name(d)] = seconds_since(t0);
        t0 = Clock::now();
        linalg::svd_randomized(A.data(), svd_n, svd_n, 256, 10, 2, 0, d);
        s[std::string("randomized_r256_s_") + device_name(d)] = seconds_since(t0);
      }
      out["svd"] = s;
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_cuda: " << e.what() << "\n";
    return 2;
  }
}
