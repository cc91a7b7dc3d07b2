// compress/quantize_lowrank.cc — the factors of a low-rank checkpoint planned and their Hessians
// derived for the GPTQ pass (see quantize_lowrank.h).
#include "compress/quantize_lowrank.h"

#include <cblas.h>

#include <map>
#include <numeric>

#include "core/error.h"
#include "formats/gptq.h"

namespace moetool {

std::vector<FactorItem> plan_factors(const Model& m, const IntQuantOptions& o, std::vector<std::string>& warnings) {
  std::vector<FactorItem> out;
  if (!m.lowrank_layout()) return out;
  std::map<std::string, size_t> index;  // stored name → out
  const SkipRules skip(o.skip);
  const Checkpoint& ck = m.checkpoint();
  for (const auto& s : m.family().tensors(m.config())) {
    if (s.shape.size() != 2) continue;
    const auto lr = m.lowrank(s.role, s.layer, s.expert);
    if (!lr) continue;
    const std::pair<char, const std::string*> factors[] = {{'u', &lr->u}, {'v', &lr->v}, {'b', &lr->base}};
    for (const auto& [as, name] : factors) {
      if (name->empty()) continue;
      auto [it, fresh] = index.emplace(*name, out.size());
      if (fresh) {
        if (!ck.has(*name))
          fail(ck.dir(), ": factor '", *name, "' is already GPTQ-quantized (quantize a float low-rank checkpoint)");
        FactorItem f;
        f.name = *name;
        f.first_slot = s.name;
        f.layer = s.layer;
        f.rows = as == 'u' || as == 'b' ? lr->rows : lr->rank;
        f.cols = as == 'v' || as == 'b' ? lr->cols : lr->rank;
        f.dtype = ck.info(*name).dtype;
        IntQuantSpec sp = int_spec_for_cols(o.spec, f.cols);
        sp.bits = as == 'b' && o.base_bits > 0 ? o.base_bits : o.spec.bits;
        if (skip.match(*name)) {
          f.note = "kept in float (--skip)";
        } else if ((f.cols * sp.bits) % 32 != 0 || (f.rows * sp.bits) % 32 != 0) {
          f.note = str("kept in float: [", f.rows, ", ", f.cols, "] does not fit ", sp.bits,
                       "-bit packing (rows and inputs must be multiples of ", 32 / std::gcd(32, sp.bits),
                       "; svd --rank-multiple makes ranks fit)");
          warnings.push_back(str(*name, ": ", f.note));
        } else {
          f.bits = sp.bits;
        }
        out.push_back(std::move(f));
      }
      out[it->second].uses.push_back({s.role, s.expert, as, *lr});
    }
  }
  return out;
}

FactorMoments factor_moments(const Checkpoint& ck, const FactorItem& f, const ModuleMoments& moments) {
  FactorMoments fm;
  const int64_t n = f.cols;
  fm.H.assign(static_cast<size_t>(n * n), 0.0);
  std::vector<double> V, T;
  for (const auto& use : f.uses) {
    const auto [H, count] = moments(use.role, use.expert);
    if (!H || count == 0) continue;
    const int64_t in = use.lr.cols;
    if (static_cast<int64_t>(H->size()) != in * in)
      fail("quantize: ", use.lr.module, ": input moments of size ", H->size(), ", expected ", in, "×", in);
    fm.count += count;
    if (use.as != 'u') {
      for (size_t i = 0; i < fm.H.size(); ++i) fm.H[i] += (*H)[i];
      continue;
    }
    // U sees z = V·x: H_U += V H Vᵀ, V [r, in] as stored.
    const int64_t r = use.lr.rank;
    const auto v = ck.get(use.lr.v).to_f32();
    V.assign(v.begin(), v.end());
    T.assign(static_cast<size_t>(r * in), 0.0);
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<int>(r), static_cast<int>(in), 1.0, H->data(),
                static_cast<int>(in), V.data(), static_cast<int>(in), 0.0, T.data(), static_cast<int>(in));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(r), static_cast<int>(r), static_cast<int>(in),
                1.0, T.data(), static_cast<int>(in), V.data(), static_cast<int>(in), 1.0, fm.H.data(),
                static_cast<int>(r));
  }
  return fm;
}

}  // namespace moetool
