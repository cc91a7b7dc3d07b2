// recipe/runner.cc — executing a recipe (see runner.h): applicability, hashing, one command per step,
// verification gates, resume.
#include "recipe/runner.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/process.h"
#include "formats/checkpoint_files.h"
#include "formats/model.h"

namespace moetool::recipe {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

std::string hex64(uint64_t h) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h));
  return b;
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// Names, sizes and modification times of a file or of every file under a folder.
std::string fingerprint(const std::string& path) {
  std::error_code ec;
  std::vector<std::string> rows;
  auto add = [&](const fs::path& p) {
    const auto t = fs::last_write_time(p, ec).time_since_epoch().count();
    rows.push_back(str(fs::relative(p, path, ec).string(), " ", fs::file_size(p, ec), " ", t));
  };
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(path, ec))
      if (e.is_regular_file()) add(e.path());
  } else if (fs::exists(path, ec)) {
    add(path);
  }
  std::sort(rows.begin(), rows.end());
  std::string s = path;
  for (const auto& r : rows) s += "\n" + r;
  return s;
}

std::string clock_str(double s) {
  const auto t = static_cast<long long>(std::llround(std::max(0.0, s)));
  char b[32];
  std::snprintf(b, sizeof b, "%02lld:%02lld", t / 60, t % 60);
  return b;
}

// The verify command of a step, or empty when the step has no verification.
std::vector<std::string> verify_args(const Step& s, const std::string& against, const std::string& output,
                                     const std::string& dir) {
  const VerifySpec& v = s.verify;
  std::vector<std::string> a = {"verify", against, output, "--text=" + v.text};
  if (v.ctx) a.push_back(str("--ctx=", v.ctx));
  if (v.chunks) a.push_back(str("--chunks=", v.chunks));
  for (const Gate& g : v.gates) {
    std::string flag = g.name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    a.push_back(str("--", flag, "=", g.limit));
  }
  a.push_back("--report=" + path_join(dir, "verify"));
  a.push_back("--junit=" + path_join(dir, "verify/junit.xml"));
  a.push_back("--json");
  a.push_back("-q");
  return a;
}

double jvalue(const json& j) { return j.is_number() ? j.get<double>() : kNoValue; }

// Fills the verification fields of `r` from verify's --json output.
void read_verify(StepResult& r, const std::string& out) {
  const json j = json::parse(out);
  r.verified = true;
  r.verdict = j.value("verdict", "");
  const json& h = j.at("headline");
  r.kld = jvalue(h.at("mean_kld").at("value"));
  r.top1 = jvalue(h.at("same_top_p").at("value"));
  r.ppl_ratio = jvalue(h.at("ppl_ratio").at("value"));
  r.route_mismatch = jvalue(h.at("route_mismatch").at("value"));
  for (const json& t : j.at("thresholds"))
    r.gates.push_back({t.value("name", ""), jvalue(t.at("limit")), jvalue(t.at("value")), t.value("passed", false),
                       t.value("message", "")});
}

// A step.json written by an earlier run with the same hash, as its result (status "resumed").
bool load_step(const std::string& file, const std::string& hash, StepResult& r) {
  if (!file_exists(file)) return false;
  try {
    StepResult old = step_from_json(json::parse(read_file(file)));
    if (old.hash != hash || !file_exists(old.output)) return false;
    old.status = "resumed";
    r = std::move(old);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

struct Shared {
  const RunOptions& o;
  std::mutex mu;
  std::mutex budget_mu;
  std::condition_variable budget_cv;
  uint64_t in_use = 0;  // tensor bytes of the models being processed
  int running = 0;
  // Blocks until a model of `bytes` fits the memory budget (or nothing else runs).
  void acquire(uint64_t bytes) {
    std::unique_lock<std::mutex> lock(budget_mu);
    budget_cv.wait(lock, [&] { return o.memory_budget == 0 || running == 0 || in_use + bytes <= o.memory_budget; });
    in_use += bytes;
    ++running;
  }
  void release(uint64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(budget_mu);
      in_use -= bytes;
      --running;
    }
    budget_cv.notify_all();
  }
  std::atomic<int64_t> done{0};
  int64_t total = 0;
  Clock::time_point t0 = Clock::now();
  void line(const std::string& s) {
    std::lock_guard<std::mutex> lock(mu);
    if (o.progress) o.progress(s);
  }
  void transient(const std::string& s) {
    std::lock_guard<std::mutex> lock(mu);
    if (o.status) o.status(s);
  }
  std::string eta() const {
    const double el = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t d = done.load();
    std::string s = "elapsed " + clock_str(el);
    if (d > 0 && d < total) s += ", about " + clock_str(el / static_cast<double>(d) * static_cast<double>(total - d)) + " left";
    return s;
  }
};

// Runs step i of model m; `res` holds the earlier steps' results.
StepResult run_step(Shared& sh, const ModelResult& m, size_t i, const std::vector<StepResult>& res,
                    const std::string& tag) {
  const RunOptions& o = sh.o;
  const Step& s = o.recipe.steps[i];
  StepResult r;
  r.name = s.name;
  r.pass = s.pass;
  const int in = input_step(o.recipe, i), ag = against_step(o.recipe, i);
  for (int dep : {in, s.verify.present ? ag : -1})
    if (dep >= 0 && res[static_cast<size_t>(dep)].status != "ok" && res[static_cast<size_t>(dep)].status != "resumed") {
      r.status = "skipped";
      r.error = "step '" + res[static_cast<size_t>(dep)].name + "' it needs did not complete";
      return r;
    }
  const std::string input = in < 0 ? m.model : res[static_cast<size_t>(in)].output;
  const std::string dir = path_join(path_join(o.output, m.key), s.name);
  r.output = path_join(dir, artifact_name(s));
  r.command = step_args(s, input, r.output);
  // The hash: version, command (with the output folder left out), the input, the verification.
  std::string h = o.version + "\n" + o.recipe.dir;
  for (const auto& a : step_args(s, "INPUT", "OUTPUT")) h += "\n" + a;
  h += "\ninput " + (in < 0 ? fingerprint(m.model) : res[static_cast<size_t>(in)].hash);
  if (s.verify.present) {
    h += "\nagainst " + (ag < 0 ? fingerprint(m.model) : res[static_cast<size_t>(ag)].hash);
    h += "\ntext " + fingerprint(s.verify.text) + str("\n", s.verify.ctx, " ", s.verify.chunks);
    for (const Gate& g : s.verify.gates) h += str("\n", g.name, "=", g.limit);
  }
  r.hash = hex64(fnv1a(h));
  const std::string step_file = path_join(dir, "step.json");
  if (o.resume && load_step(step_file, r.hash, r)) {
    sh.line(tag + " " + s.name + ": complete from an earlier run, reused");
    return r;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) {
    r.status = "failed";
    r.error = dir + ": cannot create the step's folder: " + ec.message();
    return r;
  }
  sh.line(tag + " " + s.name + " (" + s.pass + "): running");
  const auto t0 = Clock::now();
  auto child_line = [&](const std::string& l) { sh.transient(tag + " " + s.name + " (" + sh.eta() + "): " + l); };
  std::vector<std::string> argv = {o.binary};
  argv.insert(argv.end(), r.command.begin(), r.command.end());
  const ProcessResult p = run_process(argv, o.recipe.dir, child_line);
  if (!p.ok()) {
    r.status = "failed";
    std::string last = p.err_tail;
    while (!last.empty() && last.back() == '\n') last.pop_back();
    last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
    r.error = "moetool " + s.pass + " " + p.how() + (last.empty() ? "" : ": " + last);
    return r;
  }
  r.bytes = tensor_file_bytes(r.output);
  if (s.verify.present) {
    const std::string against = ag < 0 ? m.model : res[static_cast<size_t>(ag)].output;
    std::vector<std::string> va = {o.binary};
    const auto v = verify_args(s, against, r.output, dir);
    va.insert(va.end(), v.begin(), v.end());
    const ProcessResult q = run_process(va, o.recipe.dir, child_line);
    try {
      if (q.signal || (q.exit_code != 0 && q.exit_code != 1)) fail("moetool verify ", q.how(), ": ", q.err_tail);
      read_verify(r, q.out);
    } catch (const std::exception& e) {
      r.status = "failed";
      r.error = e.what();
      while (!r.error.empty() && r.error.back() == '\n') r.error.pop_back();
      return r;
    }
    r.report = path_join(path_join(m.key, s.name), "verify/report.html");
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.status = "ok";
  write_file_atomic(step_file, to_json(r).dump(2) + "\n");
  return r;
}

std::string gate_words(const StepResult& r) {
  std::string g;
  for (const auto& x : r.gates) g += (g.empty() ? "" : ", ") + x.name + (x.passed ? " pass" : " FAIL");
  return g;
}

}  // namespace

nlohmann::ordered_json to_json(const StepResult& r) {
  using J = nlohmann::ordered_json;
  auto num = [](double v) { return std::isfinite(v) ? J(v) : J(nullptr); };
  J g = J::array();
  for (const auto& x : r.gates)
    g.push_back({{"name", x.name}, {"limit", num(x.limit)}, {"value", num(x.value)}, {"passed", x.passed},
                 {"message", x.message}});
  return {{"name", r.name},         {"pass", r.pass},       {"status", r.status},
          {"output", r.output},     {"error", r.error},     {"command", r.command},
          {"hash", r.hash},         {"bytes", r.bytes},     {"seconds", r.seconds},
          {"verified", r.verified}, {"verify_verdict", r.verdict}, {"kld", num(r.kld)},
          {"top1", num(r.top1)},    {"ppl_ratio", num(r.ppl_ratio)}, {"route_mismatch", num(r.route_mismatch)},
          {"report", r.report},     {"gates", g}};
}

StepResult step_from_json(const nlohmann::json& j) {
  StepResult r;
  r.name = j.value("name", "");
  r.pass = j.value("pass", "");
  r.status = j.value("status", "");
  r.output = j.value("output", "");
  r.error = j.value("error", "");
  r.command = j.value("command", std::vector<std::string>{});
  r.hash = j.value("hash", "");
  r.bytes = j.value("bytes", uint64_t{0});
  r.seconds = j.value("seconds", 0.0);
  r.verified = j.value("verified", false);
  r.verdict = j.value("verify_verdict", "");
  r.kld = jvalue(j.value("kld", json())), r.top1 = jvalue(j.value("top1", json()));
  r.ppl_ratio = jvalue(j.value("ppl_ratio", json())), r.route_mismatch = jvalue(j.value("route_mismatch", json()));
  r.report = j.value("report", "");
  for (const json& g : j.value("gates", json::array()))
    r.gates.push_back({g.value("name", ""), jvalue(g.value("limit", json())), jvalue(g.value("value", json())),
                       g.value("passed", false), g.value("message", "")});
  return r;
}

bool RunResult::gate_failed() const {
  for (const auto& m : models)
    for (const auto& s : m.steps)
      for (const auto& g : s.gates)
        if (!g.passed) return true;
  return false;
}

bool RunResult::any_error() const {
  for (const auto& m : models) {
    if (!m.error.empty()) return true;
    for (const auto& s : m.steps)
      if (s.status == "failed" || s.status == "skipped") return true;
  }
  return false;
}

int RunResult::exit_code() const { return any_error() ? 2 : gate_failed() ? 1 : 0; }

std::vector<std::string> model_keys(const std::vector<std::string>& models) {
  std::vector<std::string> keys;
  for (const auto& m : models) {
    std::string k = fs::path(m).lexically_normal().filename().string();
    if (k.empty() || k == "." || k == "..") k = fs::path(m).lexically_normal().parent_path().filename().string();
    if (k.empty()) k = "model";
    std::string u = k;
    for (int n = 2; std::find(keys.begin(), keys.end(), u) != keys.end(); ++n) u = str(k, "-", n);
    keys.push_back(u);
  }
  return keys;
}

std::vector<std::string> check_applicability(const Recipe& r, const std::vector<std::string>& models) {
  std::vector<std::string> errors;
  for (const auto& path : models) {
    ModelConfig c;
    try {
      if (!is_directory(path)) fail(path, ": not a Hugging Face checkpoint directory");
      c = Model::open(path).config();
    } catch (const std::exception& e) {
      errors.push_back(e.what());
      continue;
    }
    errors.push_back("");
    // What each step's input is: an MoE or not, a GGUF file or a checkpoint.
    std::vector<bool> moe(r.steps.size()), gguf(r.steps.size());
    for (size_t i = 0; i < r.steps.size(); ++i) {
      const Step& s = r.steps[i];
      const int in = input_step(r, i);
      const bool in_moe = in < 0 ? !c.moe_layer_ids().empty() : moe[static_cast<size_t>(in)];
      const bool in_gguf = in < 0 ? false : gguf[static_cast<size_t>(in)];
      const std::string what = in < 0 ? path : "the output of step '" + r.steps[static_cast<size_t>(in)].name + "'";
      auto no = [&](const std::string& why) {
        fail(r.path, ":", s.pass_line, ": ", str("steps[", i, "].pass"), ": ", s.pass, " ", why);
      };
      if (in_gguf) no("needs a Hugging Face checkpoint, but " + what + " is a GGUF file");
      bool all_linears = false;
      for (const auto& o : s.options)
        if (o.key == "targets" && !o.values.empty() && o.values.back() == "all-linears") all_linears = true;
      if (s.pass.rfind("convert", 0) == 0 && in_moe) no("needs a dense checkpoint, but " + what + " is already a Mixture-of-Experts model");
      if ((s.pass == "prune" || s.pass == "merge" || (s.pass == "svd" && !all_linears)) && !in_moe)
        no("needs a Mixture-of-Experts model, but " + what + " is dense (convert it first" +
           (s.pass == "svd" ? ", or give targets: all-linears)" : ")"));
      moe[i] = s.pass.rfind("convert", 0) == 0 ? true : in_moe;
      gguf[i] = artifact_name(s) == "model.gguf";
    }
  }
  return errors;
}

std::string explain(const RunOptions& o) {
  const Recipe& r = o.recipe;
  std::string s = "recipe " + r.path + (r.name.empty() ? "" : " (" + r.name + ")") + "\n";
  s += str(o.models.size(), " model(s), ", r.steps.size(), " step(s) each, output ", o.output, "\n");
  const auto keys = model_keys(o.models);
  for (size_t m = 0; m < o.models.size(); ++m) s += "  model " + keys[m] + ": " + o.models[m] + "\n";
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const Step& st = r.steps[i];
    const int in = input_step(r, i);
    s += str("step ", i + 1, " ", st.name, " (", st.pass, "), input: ",
             in < 0 ? std::string("the model") : "step " + r.steps[static_cast<size_t>(in)].name, "\n");
    std::string cmd = "moetool";
    for (const auto& a : step_args(st, "<input>", "<output>/<model>/" + st.name + "/" + artifact_name(st))) cmd += " " + a;
    s += "    " + cmd + "\n";
    if (st.verify.present) {
      const int ag = against_step(r, i);
      s += "    verify against " + (ag < 0 ? std::string("the model") : "step " + r.steps[static_cast<size_t>(ag)].name) +
           " on " + st.verify.text;
      for (const auto& g : st.verify.gates) s += str(", ", g.name, " ", g.limit);
      s += st.verify.gates.empty() ? " (no gates)\n" : "\n";
    }
  }
  return s;
}

RunResult run(const RunOptions& o) {
  const auto t0 = Clock::now();
  RunResult res;
  res.recipe = o.recipe.path;
  res.name = o.recipe.name;
  res.output = o.output;
  const auto keys = model_keys(o.models);
  const auto open_errors = check_applicability(o.recipe, o.models);
  res.models.resize(o.models.size());
  Shared sh{o};
  sh.total = static_cast<int64_t>(o.models.size() * o.recipe.steps.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t m; (m = next.fetch_add(1)) < o.models.size();) {
      ModelResult& mr = res.models[m];
      mr.model = o.models[m];
      mr.key = keys[m];
      const std::string tag = str("[", m + 1, "/", o.models.size(), " ", mr.key, "]");
      if (!open_errors[m].empty()) {
        mr.error = open_errors[m];
        sh.done += static_cast<int64_t>(o.recipe.steps.size());
        sh.line(tag + " cannot be used: " + mr.error);
        continue;
      }
      mr.bytes = tensor_file_bytes(mr.model);
      sh.acquire(mr.bytes);
      for (size_t i = 0; i < o.recipe.steps.size(); ++i) {
        const std::string stag = str(tag, " step ", i + 1, "/", o.recipe.steps.size());
        StepResult r;
        try {
          r = run_step(sh, mr, i, mr.steps, stag);
        } catch (const std::exception& e) {  // e.g. the binary could not be started
          r.name = o.recipe.steps[i].name;
          r.pass = o.recipe.steps[i].pass;
          r.status = "failed";
          r.error = e.what();
        }
        ++sh.done;
        std::string l = stag + " " + r.name + ": " + r.status;
        if (!r.error.empty()) l += ": " + r.error;
        else if (r.verified) l += str(", KLD ", r.kld, ", top-1 ", r.top1, ", PPL ratio ", r.ppl_ratio, r.gates.empty() ? "" : "; " + gate_words(r));
        sh.line(l + " (" + sh.eta() + ")");
        mr.steps.push_back(std::move(r));
      }
      sh.release(mr.bytes);
    }
  };
  const int n = std::max(1, std::min<int>(o.jobs, static_cast<int>(o.models.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return res;
}

}  // namespace moetool::recipe
