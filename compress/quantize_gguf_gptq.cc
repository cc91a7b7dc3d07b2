// compress/quantize_gguf_gptq.cc — GPTQ over ggml blocks for a whole GGUF export, layer by layer
// (see quantize_gguf_gptq.h).
#include "compress/quantize_gguf_gptq.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "compress/expert_pool.h"
#include "compress/hessian_collect.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "engine/layer_sweep.h"
#include "engine/overlay_weights.h"
#include "engine/weights.h"
#include "formats/ggml_quants.h"
#include "kernels/linear.h"
#include "kernels/ops.h"

namespace moetool {

GGUFGPTQSpool::GGUFGPTQSpool(std::string path) : path_(std::move(path)) {
  f_ = std::fopen(path_.c_str(), "w+b");
  if (!f_) fail(path_, ": cannot create the GPTQ spool file (", std::strerror(errno), ")");
}

GGUFGPTQSpool::~GGUFGPTQSpool() {
  if (f_) std::fclose(f_);
  std::remove(path_.c_str());
}

void GGUFGPTQSpool::put(const std::string& tensor, int64_t expert, const std::vector<uint8_t>& bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (std::fseek(f_, static_cast<long>(end_), SEEK_SET) != 0 || std::fwrite(bytes.data(), 1, bytes.size(), f_) != bytes.size())
    fail(path_, ": cannot write the GPTQ spool file (", std::strerror(errno), ")");
  index_[{tensor, expert}] = {end_, bytes.size()};
  end_ += bytes.size();
}

std::optional<std::vector<uint8_t>> GGUFGPTQSpool::get(const std::string& tensor, int64_t expert) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find({tensor, expert});
  if (it == index_.end()) return std::nullopt;
  std::vector<uint8_t> b(static_cast<size_t>(it->second.second));
  if (std::fflush(f_) != 0 || std::fseek(f_, static_cast<long>(it->second.first), SEEK_SET) != 0 ||
      std::fread(b.data(), 1, b.size(), f_) != b.size())
    fail(path_, ": cannot read the GPTQ spool file back (tensor ", tensor, ")");
  return b;
}

namespace {

// One matrix to encode: a plan tensor, or one routed expert of a stacked one.
struct Job {
  const GGUFTensorPlan* t;
  Role role;          // the checkpoint role of the matrix
  int64_t layer, expert;
};

// The matrices GPTQ encodes, per layer (index num_layers: the output head / tied embedding).
std::vector<std::vector<Job>> jobs_of(const Model& m, const GGUFExportPlan& plan, const GGUFGPTQOptions& o) {
  const ModelConfig& c = m.config();
  std::vector<std::vector<Job>> jobs(static_cast<size_t>(c.num_layers + 1));
  for (const auto& t : plan.tensors) {
    if (!t.quantizable || !gptq_ggml_supports(t.type) || t.ne.size() < 2 || t.ne[0] % ggml_block_size(t.type) != 0)
      continue;
    if (t.layer < 0) {  // an untied output head (not a tied embedding: see the header)
      if (t.role == Role::LmHead && o.head) jobs.back().push_back({&t, t.role, -1, -1});
      continue;
    }
    if (t.experts > 0)
      for (int64_t e = 0; e < t.experts; ++e) jobs[static_cast<size_t>(t.layer)].push_back({&t, t.role, t.layer, e});
    else
      jobs[static_cast<size_t>(t.layer)].push_back({&t, t.role, t.layer, -1});
  }
  return jobs;
}

struct Encoded {
  const Job* job = nullptr;
  GGUFGPTQRecord rec;
  std::string warning;
  std::shared_ptr<const WeightMatrix> matrix;  // decoded view for the sequential re-run
};

// One job encoded from its moments (null: none) and written to the spool.
Encoded encode(const Model& m, const Job& j, const Moments* mo, int64_t own, int64_t pooled, bool keep,
               const GGUFGPTQOptions& o, GGUFGPTQSpool& spool) {
  Encoded out;
  out.job = &j;
  GGUFGPTQRecord& r = out.rec;
  r.tensor = j.t->name, r.expert = j.expert, r.type = j.t->type, r.tokens = own, r.pooled = pooled;
  const Tensor w = j.layer < 0 ? m.weight(j.role) : m.weight(j.role, j.layer, j.expert);
  const int64_t rows = w.shape.at(0), cols = w.shape.at(1);
  const std::vector<float> W = w.to_f32();
  const std::string what = j.expert >= 0 ? str(j.t->name, " expert ", j.expert) : j.t->name;
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  const char* name = o.method == GGUFGPTQOptions::Method::AutoRound ? "AutoRound" : "GPTQ";
  if (!mo) {
    bytes->resize(static_cast<size_t>(rows) * ggml_row_size(j.t->type, cols));
    quantize_rows(j.t->type, W.data(), bytes->data(), rows, cols, nullptr, what);
    r.method = str("ggml (", own, " calibration tokens)");
    out.warning = str(what, ": ", own, " calibration tokens and no pooled rows: ggml's rounding, not ", name);
  } else {
    const char* method = o.method == GGUFGPTQOptions::Method::AutoRound ? "autoround" : "gptq";
    GPTQStats st;
    if (o.method == GGUFGPTQOptions::Method::AutoRound)
      *bytes = autoround_quantize_ggml(W.data(), rows, cols, mo->H.data(), mo->count, j.t->type, o.autoround, nullptr, what);
    else
      *bytes = gptq_quantize_ggml(W.data(), rows, cols, mo->H.data(), mo->count, j.t->type, o.gptq, &st, what);
    r.method = pooled ? str(method, " (pooled Hessian)") : std::string(method);
    std::vector<float> Wq(W.size());
    dequantize_rows(j.t->type, bytes->data(), Wq.data(), rows, cols);
    r.rel_error = relative_output_error(W.data(), Wq.data(), rows, cols, mo->H);
    if (pooled)
      out.warning = str(what, ": ", own, " calibration tokens (< ", std::max<int64_t>(o.min_tokens, 1),
                        "): Hessian from them plus ", pooled, " pooled tokens of layer ", j.layer);
    if (st.damp_used > o.gptq.damp * 1.0001)
      out.warning = str(what, ": Hessian not positive definite at damp ", o.gptq.damp, ", used ", st.damp_used);
  }
  spool.put(j.t->name, j.expert, *bytes);
  if (keep) {  // decoded once to f32: the re-run's GEMMs stay BLAS calls, not decode regions between them
    Tensor dec = Tensor::zeros(DType::F32, {rows, cols});
    dequantize_rows(j.t->type, bytes->data(), dec.as<float>(), rows, cols);
    out.matrix = make_dense_matrix(dec, what);
  }
  return out;
}

// The jobs of one layer (or of the head), in parallel over matrices when there are many.
std::vector<Encoded> encode_layer(const Model& m, const WeightSource& base, const std::vector<Job>& jobs,
                                  HessianCollector& col, const ExpertPool* pool, bool keep, const GGUFGPTQOptions& o,
                                  GGUFGPTQSpool& spool) {
  std::vector<Encoded> done(jobs.size());
  const bool outer = jobs.size() >= 8 && omp_get_max_threads() > 1;
  std::string err;
#pragma omp parallel for schedule(dynamic, 1) if (outer)
  for (size_t i = 0; i < jobs.size(); ++i) {
    try {
      const Job& j = jobs[i];
      const Role key_role = j.layer < 0 ? Role::LmHead : input_role(j.role);
      const Moments* mo = nullptr;
      if (auto f = col.moments.find(HessianKey{key_role, j.layer, j.expert}); f != col.moments.end()) mo = &f->second;
      const int64_t own = mo ? mo->count : 0, need = std::max<int64_t>(o.min_tokens, 1);
      Moments pooled;
      if (own < need && j.expert >= 0 && pool && pool->rows() > 0) {
        pooled.H = pooled_hessian(*pool, base, j.role, j.layer, j.expert);
        if (mo)
          for (size_t k = 0; k < pooled.H.size(); ++k) pooled.H[k] += mo->H[k];
        pooled.count = own + pool->rows();
        mo = &pooled;
      } else if (own < need) {
        mo = nullptr;
      }
      done[i] = encode(m, j, mo, own, mo == &pooled ? pool->rows() : 0, keep, o, spool);
    } catch (const std::exception& e) {
#pragma omp critical(moetool_gguf_gptq_err)
      if (err.empty()) err = e.what();
    }
  }
  if (!err.empty()) throw Error(err);
  return done;
}

// The output head's inputs: the final-normed streams after the last layer.
void collect_head(const Model& m, const LayerSweep& sweep, HessianCollector& col) {
  const ModelConfig& c = m.config();
  const std::vector<float> g = m.weight(Role::FinalNorm).to_f32();
  const int64_t H = c.hidden_size;
  for (size_t i = 0; i < sweep.num_chunks(); ++i) {
    const std::vector<float>& h = sweep.stream(i);
    const int64_t n = static_cast<int64_t>(h.size()) / H;
    std::vector<float> x(h.size());
    ops::rmsnorm(h.data(), g.data(), x.data(), n, H, static_cast<float>(c.rms_norm_eps));
    col.add(HessianKey{Role::LmHead, -1, -1}, x.data(), n, H);
  }
}

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::string fmt_err(double e) { return e < 0 ? std::string("-") : str(std::round(e * 1e5) / 1e5); }

}  // namespace

namespace {

// The matrices of every plan encoded over one calibration sweep (each layer's Hessians collected once,
// every plan's jobs of that layer encoded from them into its own spool); sequential only with a single
// plan (the next layer then runs on that plan's encoding). labels[k] prefixes plan k's progress lines.
std::vector<GGUFGPTQResult> encode_plans(const Model& m, const std::vector<const GGUFExportPlan*>& plans,
                                         const std::vector<std::string>& spool_paths, const std::vector<std::string>& labels,
                                         const std::vector<std::vector<int32_t>>& chunks, const GGUFGPTQOptions& o) {
  const std::string what = str("quantize ", m.checkpoint().dir());
  if (chunks.empty())
    fail(what, ": method ", o.method == GGUFGPTQOptions::Method::AutoRound ? "autoround" : "gptq",
         " needs calibration text (--calib-text)");
  check(!o.sequential || plans.size() == 1, "encode_plans: sequential calibration follows a single plan");
  const ModelConfig& c = m.config();
  int64_t tokens = 0;
  for (const auto& ch : chunks) tokens += static_cast<int64_t>(ch.size());
  std::vector<GGUFGPTQResult> res(plans.size());
  std::vector<std::vector<std::vector<Job>>> jobs;
  for (size_t k = 0; k < plans.size(); ++k) {
    res[k].spool = std::make_shared<GGUFGPTQSpool>(spool_paths[k]);
    res[k].calib_tokens = tokens;
    jobs.push_back(jobs_of(m, *plans[k], o));
  }

  auto base = safetensors_weights(m);
  auto overlay = std::make_shared<OverlayWeights>(base);
  Engine eng(base, /*keep_layers=*/false);
  Engine qeng(overlay, /*keep_layers=*/false);
  LayerSweep sweep(eng, chunks);
  auto report = [&](size_t k, std::vector<Encoded>& done, int64_t l) {
    for (auto& d : done) {
      const auto& r = d.rec;
      if (!d.warning.empty()) res[k].warnings.push_back(d.warning);
      if (o.progress)
        o.progress(str(labels[k], "[", l + 1, "/", c.num_layers + 1, "] ", r.tensor,
                       r.expert >= 0 ? str(" expert ", r.expert) : "", " ", lower(ggml_type_name(r.type)), " ",
                       r.method, r.tokens ? str(", ", r.tokens, " tokens") : "",
                       r.rel_error >= 0 ? str(", rel. output error ", fmt_err(r.rel_error)) : ""));
      res[k].records.push_back(r);
    }
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    HessianCollector col(/*diag_only=*/false, *base, l);
    ExpertPool pool(o.pool_rows);
    if (o.pool_rows > 0 && c.moe && c.is_moe_layer(l)) col.pool = &pool;
    sweep.run(l, &col, o.sequential ? SweepStreams::Keep : SweepStreams::Advance);
    col.symmetrize_all();
    for (size_t k = 0; k < plans.size(); ++k) {
      std::vector<Encoded> done =
          encode_layer(m, *base, jobs[k][static_cast<size_t>(l)], col, col.pool, o.sequential, o, *res[k].spool);
      report(k, done, l);
      if (!o.sequential) continue;
      for (const auto& d : done)
        if (d.matrix) overlay->set(d.job->role, l, d.job->expert, d.matrix);
      sweep.rerun_advance(l, qeng);
      overlay->drop_layer(l);
    }
  }
  bool head = false;
  for (const auto& j : jobs) head = head || !j.back().empty();
  if (head) {
    HessianCollector col(/*diag_only=*/false, *base, -1);
    collect_head(m, sweep, col);
    col.symmetrize_all();
    for (size_t k = 0; k < plans.size(); ++k) {
      std::vector<Encoded> done = encode_layer(m, *base, jobs[k].back(), col, nullptr, false, o, *res[k].spool);
      report(k, done, c.num_layers);
    }
  }
  sweep.release();
  return res;
}

}  // namespace

GGUFGPTQResult gptq_encode_gguf(const Model& m, const GGUFExportPlan& plan, const std::string& spool_path,
                                const std::vector<std::vector<int32_t>>& chunks, const GGUFGPTQOptions& o) {
  return std::move(encode_plans(m, {&plan}, {spool_path}, {""}, chunks, o).front());
}

std::optional<std::vector<uint8_t>> GGUFCandidateEncodings::get(size_t k, Role role, int64_t layer,
                                                                int64_t expert) const {
  if (k >= spools.size() || !spools[k]) return std::nullopt;
  const auto it = names.find({role, layer});
  if (it == names.end()) return std::nullopt;
  return spools[k]->get(it->second, expert);
}

GGUFCandidateEncodings encode_gguf_candidates(const Model& m, const GGUFExportPlan& plan,
                                              const std::vector<std::optional<GGMLType>>& types,
                                              const std::string& spool_prefix,
                                              const std::vector<std::vector<int32_t>>& chunks, GGUFGPTQOptions o) {
  GGUFCandidateEncodings enc;
  o.sequential = false;
  for (const auto& t : plan.tensors)
    if (t.quantizable && (t.layer >= 0 || t.role == Role::LmHead)) enc.names[{t.role, t.layer}] = t.name;
  // One plan per candidate with a level grid: every quantizable matrix at that type.
  std::vector<GGUFExportPlan> plans;
  std::vector<size_t> cand;
  std::vector<std::string> paths, labels;
  for (size_t k = 0; k < types.size(); ++k) {
    if (!types[k] || !gptq_ggml_supports(*types[k])) continue;
    GGUFExportPlan p = plan;
    for (auto& t : p.tensors)
      if (t.quantizable && (t.layer >= 0 || t.role == Role::LmHead)) t.type = *types[k];
    plans.push_back(std::move(p));
    cand.push_back(k);
    paths.push_back(str(spool_prefix, ".", k));
    labels.push_back(str("--bpw candidate ", lower(ggml_type_name(*types[k])), ": "));
  }
  enc.spools.assign(types.size(), nullptr);
  if (plans.empty()) return enc;
  std::vector<const GGUFExportPlan*> ptrs;
  for (const auto& p : plans) ptrs.push_back(&p);
  std::vector<GGUFGPTQResult> r = encode_plans(m, ptrs, paths, labels, chunks, o);
  for (size_t i = 0; i < r.size(); ++i) {
    enc.spools[cand[i]] = std::move(r[i].spool);
    for (auto& w : r[i].warnings) enc.warnings.push_back(labels[i] + w);
  }
  return enc;
}

}  // namespace moetool
