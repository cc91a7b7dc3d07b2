// formats/fp8.cc — block-FP8 quantization_config, dequantization and quantization (see fp8.h).
#include "formats/fp8.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moetool {

nlohmann::ordered_json FP8Config::to_json() const {
  nlohmann::ordered_json q;
  q["quant_method"] = "fp8";
  q["fmt"] = fmt;
  q["activation_scheme"] = activation_scheme;
  q["weight_block_size"] = {block_rows, block_cols};
  q["modules_to_not_convert"] = modules_to_not_convert;
  if (!quantizer.empty()) q["meta"] = {{"quantizer", nlohmann::ordered_json::array({quantizer})}};
  return q;
}

FP8Config FP8Config::from_json(const nlohmann::json& q, const std::string& what) {
  if (!q.is_object()) fail(what, ": quantization_config is not an object");
  const std::string method = q.value("quant_method", std::string());
  if (method != "fp8") fail(what, ": quantization_config.quant_method is '", method, "', expected 'fp8'");
  FP8Config c;
  try {
    c.fmt = q.value("fmt", std::string("e4m3"));
    c.activation_scheme = q.value("activation_scheme", std::string("dynamic"));
    if (q.contains("weight_block_size") && !q["weight_block_size"].is_null()) {
      const auto& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0)
        fail(what, ": quantization_config.weight_block_size is ", b.dump(), ", expected [rows, cols] of positive integers");
      c.block_rows = b[0].get<int64_t>();
      c.block_cols = b[1].get<int64_t>();
    }
    for (const char* key : {"modules_to_not_convert", "ignored_layers"})
      if (q.contains(key) && q[key].is_array())
        for (const auto& m : q[key]) c.modules_to_not_convert.push_back(m.get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    fail(what, ": quantization_config: ", e.what());
  }
  if (c.fmt != "e4m3" && c.fmt != "e5m2")
    fail(what, ": quantization_config.fmt is '", c.fmt, "', expected 'e4m3' or 'e5m2'");
  return c;
}

std::optional<FP8Config> fp8_config_of(const nlohmann::json& raw, const std::string& what) {
  if (!raw.is_object() || !raw.contains("quantization_config")) return std::nullopt;
  const auto& q = raw["quantization_config"];
  if (!q.is_object() || q.value("quant_method", std::string()) != "fp8") return std::nullopt;
  return FP8Config::from_json(q, what);
}

std::string fp8_scale_name(const std::string& weight_name) { return weight_name + "_scale_inv"; }

Shape fp8_scale_shape(int64_t rows, int64_t cols, int64_t br, int64_t bc) {
  return {(rows + br - 1) / br, (cols + bc - 1) / bc};
}

Tensor fp8_dequantize(const Tensor& q, const Tensor& scale, int64_t br, int64_t bc, const std::string& what) {
  if (q.dtype != DType::F8_E4M3 && q.dtype != DType::F8_E5M2)
    fail(what, ": expected an F8_E4M3 or F8_E5M2 weight, got ", dtype_name(q.dtype));
  if (q.shape.size() != 2) fail(what, ": expected a 2-D FP8 weight, got shape ", shape_str(q.shape));
  const int64_t rows = q.shape[0], cols = q.shape[1];
  const Shape want = fp8_scale_shape(rows, cols, br, bc);
  if (scale.shape != want)
    fail(what, ": its scales: expected shape ", shape_str(want), " (blocks of ", br, " x ", bc, " over ",
         shape_str(q.shape), "), got ", shape_str(scale.shape));
  if (scale.dtype != DType::F32 && scale.dtype != DType::BF16 && scale.dtype != DType::F16)
    fail(what, ": its scales: expected F32, BF16 or F16, got ", dtype_name(scale.dtype));
  const std::vector<float> s = scale.to_f32();
  // A 256-entry table of the code values (NaN codes stay NaN).
  float lut[256];
  for (int c = 0; c < 256; ++c)
    lut[c] = q.dtype == DType::F8_E4M3 ? f8e4m3_to_f32(static_cast<uint8_t>(c)) : f8e5m2_to_f32(static_cast<uint8_t>(c));
  Tensor out = Tensor::zeros(DType::F32, {rows, cols});
  const uint8_t* in = q.data;
  float* o = out.as<float>();
  const int64_t gc = want[1];
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
  for (int64_t i = 0; i < rows; ++i) {
    const float* srow = s.data() + (i / br) * gc;
    for (int64_t j = 0; j < cols; ++j) o[i * cols + j] = lut[in[i * cols + j]] * srow[j / bc];
  }
  return out;
}

FP8Quantized fp8_quantize(const float* W, int64_t rows, int64_t cols, int64_t br, int64_t bc) {
  const Shape g = fp8_scale_shape(rows, cols, br, bc);
  FP8Quantized r;
  r.q.resize(static_cast<size_t>(rows * cols));
  r.scale.resize(static_cast<size_t>(g[0] * g[1]));
#pragma omp parallel for schedule(dynamic) collapse(2) if (rows * cols > (1 << 16))
  for (int64_t bi = 0; bi < g[0]; ++bi)
    for (int64_t bj = 0; bj < g[1]; ++bj) {
      const int64_t i0 = bi * br, i1 = std::min(rows, i0 + br), j0 = bj * bc, j1 = std::min(cols, j0 + bc);
      float amax = 0.0f;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) amax = std::max(amax, std::fabs(W[i * cols + j]));
      // 448·(1/amax), not 448/amax: torch evaluates `448.0 / tensor` as reciprocal then product (two
      // roundings), and the scale bytes must be transformers'.
      const float m = amax > 0.0f ? 448.0f * (1.0f / amax) : 1.0f;
      r.scale[static_cast<size_t>(bi * g[1] + bj)] = 1.0f / m;
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) r.q[static_cast<size_t>(i * cols + j)] = f32_to_f8e4m3(W[i * cols + j] * m);
    }
  return r;
}

}  // namespace moetool
