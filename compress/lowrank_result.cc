// compress/lowrank_result.cc — the svd job's report: JSON (--json, --dry-run --json) and the text
// table of ranks per layer and projection (see lowrank.h).
#include <cmath>
#include <map>
#include <sstream>

#include "compress/lowrank.h"
#include "core/error.h"

namespace moetool::svd {

nlohmann::ordered_json Result::to_json() const {
  nlohmann::ordered_json j;
  j["model"] = model;
  if (written) j["output"] = output;
  j["method"] = method;
  if (rank > 0) j["rank"] = rank;
  else j["ratio"] = ratio;
  j["materialized"] = materialized;
  j["calibrated"] = calibrated;
  j["calibration_tokens"] = calib_tokens;
  j["solver"] = solver;
  j["target_params"] = target_params;
  j["kept_params"] = kept_params;
  auto T = nlohmann::ordered_json::array();
  for (const auto& t : targets)
    T.push_back({{"module", t.module}, {"layer", t.layer}, {"expert", t.expert}, {"role", role_name(t.role)},
                 {"shape", {t.rows, t.cols}}, {"rank", t.rank < 0 ? nlohmann::ordered_json("dense") : nlohmann::ordered_json(t.rank)},
                 {"params", t.params}, {"rel_error", t.rel_error}});
  j["targets"] = T;
  j["warnings"] = warnings;
  if (written) {
    j["files"] = files;
    j["bytes"] = bytes;
  }
  j["svd_seconds"] = svd_seconds;
  j["seconds"] = seconds;
  return j;
}

std::string Result::table() const {
  std::ostringstream s;
  s << "svd " << model << ": " << method << (materialized ? " (materialized)" : "") << ", "
    << (rank > 0 ? str("rank ", rank) : str("ratio ", ratio)) << ": " << static_cast<int64_t>(kept_params) << " of "
    << static_cast<int64_t>(target_params) << " target parameters kept ("
    << std::round(1000 * kept_params / std::max(target_params, 1.0)) / 10 << "%)\n";
  std::map<std::pair<int64_t, Role>, std::vector<const TargetResult*>> by;
  for (const auto& t : targets) by[{t.layer, t.role}].push_back(&t);
  for (const auto& [k, v] : by) {
    s << "  layer " << k.first << " " << role_name(k.second) << ": ranks";
    double err = 0;
    for (const auto* t : v) {
      s << " " << (t->rank < 0 ? std::string("dense") : std::to_string(t->rank));
      err += t->rel_error;
    }
    s << " (mean relative error " << std::round(10000 * err / static_cast<double>(v.size())) / 10000 << ")\n";
  }
  return s.str();
}

}  // namespace moetool::svd
