// convert/report.cc — JSON and text forms of a conversion report (see report.h).
#include "convert/report.h"

#include <cmath>
#include <iomanip>
#include <sstream>

namespace moetool {

namespace {

// JSON has no NaN/Inf: those become null.
nlohmann::ordered_json num(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}
void put(nlohmann::ordered_json& j, const char* k, const std::optional<double>& v) {
  if (v) j[k] = num(*v);
}

}  // namespace

nlohmann::ordered_json ConvertReport::to_json() const {
  nlohmann::ordered_json j;
  j["method"] = method;
  j["source"] = source;
  j["output"] = output;
  j["source_family"] = source_family;
  j["target_family"] = target_family;
  j["layers"] = layers;
  j["experts"] = experts;
  j["top_k"] = top_k;
  j["expert_intermediate"] = expert_intermediate;
  j["shared_intermediate"] = shared_intermediate;
  if (method == "upcycle") {
    j["granularity"] = granularity;
    j["noise"] = noise;
  } else {
    j["split"] = split;
    j["shared_neurons_pct"] = shared_neurons_pct;
  }
  j["router"] = router;
  j["seed"] = seed;
  j["exact_when_all_active"] = exact_when_all_active;
  j["calibration_tokens"] = calibration_tokens;
  j["params_total"] = params_total;
  j["params_active"] = params_active;
  j["bytes"] = bytes;
  j["seconds"] = num(seconds);
  j["files"] = files;
  j["notes"] = notes;
  j["warnings"] = warnings;
  auto layers_j = nlohmann::ordered_json::array();
  for (const auto& l : per_layer) {
    nlohmann::ordered_json o;
    o["layer"] = l.layer;
    o["expert_sizes"] = l.expert_sizes;
    o["shared_size"] = l.shared_size;
    o["router"] = l.router;
    put(o, "router_r2", l.router_r2);
    put(o, "router_lambda", l.router_lambda);
    put(o, "router_scale", l.router_scale);
    put(o, "router_cond", l.router_cond);
    put(o, "recon_rel_err", l.recon_rel_err);
    put(o, "refit_err_before", l.refit_err_before);
    put(o, "refit_err_after", l.refit_err_after);
    put(o, "recon_oracle_err", l.recon_oracle_err);
    put(o, "coactivation_within", l.coactivation_within);
    o["seconds"] = num(l.seconds);
    layers_j.push_back(o);
  }
  j["per_layer"] = layers_j;
  return j;
}

std::string ConvertReport::to_text() const {
  std::ostringstream os;
  os << method << " " << source << " (" << source_family << ") -> " << output << " (" << target_family << "): "
     << experts << " experts of " << expert_intermediate << ", top-" << top_k;
  if (shared_intermediate > 0) os << ", shared " << shared_intermediate;
  os << ", router " << router;
  if (!split.empty()) os << ", split " << split;
  os << "\n";
  os << "  " << params_total << " parameters (" << params_active << " active per token), " << bytes
     << " bytes in " << files.size() << " files, " << std::fixed << std::setprecision(2) << seconds << " s\n";
  for (const auto& l : per_layer) {
    os << "  layer " << l.layer << ": " << l.expert_sizes.size() << " experts";
    if (!l.expert_sizes.empty()) os << " of " << l.expert_sizes.front();
    if (l.shared_size > 0) os << " + shared " << l.shared_size;
    os << ", router " << l.router;
    os << std::setprecision(4);
    if (l.router_r2) os << ", R² " << *l.router_r2;
    if (l.router_cond) os << ", cond " << *l.router_cond;
    if (l.recon_rel_err) os << ", recon err " << *l.recon_rel_err;
    if (l.refit_err_after) os << ", refit " << *l.refit_err_before << " -> " << *l.refit_err_after;
    if (l.recon_oracle_err) os << " (oracle routing " << *l.recon_oracle_err << ")";
    if (l.coactivation_within) os << ", co-activation within groups " << *l.coactivation_within;
    os << "\n";
  }
  for (const auto& n : notes) os << "  note: " << n << "\n";
  return os.str();
}

}  // namespace moetool
