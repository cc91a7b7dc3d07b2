// recipe/recipe.cc — parsing and structural validation of `moetool run` recipes with yaml-cpp (see
// recipe.h).
#include "recipe/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/fs.h"

namespace moetool::recipe {

namespace {

namespace fs = std::filesystem;

struct Ctx {
  std::string path, dir;
};

int line_of(const YAML::Node& n, int fallback = 0) {
  const YAML::Mark m = n.Mark();
  return m.line >= 0 ? m.line + 1 : fallback;
}

[[noreturn]] void bad(const Ctx& c, int line, const std::string& key, const std::string& msg) {
  fail(c.path, ":", line, ": ", key, ": ", msg);
}

std::string kind_of(const YAML::Node& n) {
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a list";
  if (n.IsNull()) return "nothing";
  return "'" + n.Scalar() + "'";
}

std::string scalar(const Ctx& c, const YAML::Node& n, const std::string& key, int fallback) {
  if (!n.IsScalar()) bad(c, line_of(n, fallback), key, "expected a string, found " + kind_of(n));
  return n.Scalar();
}

double number(const Ctx& c, const YAML::Node& n, const std::string& key, int fallback) {
  const std::string s = scalar(c, n, key, fallback);
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  bad(c, line_of(n, fallback), key, "expected a number, found '" + s + "'");
}

int64_t count(const Ctx& c, const YAML::Node& n, const std::string& key, int fallback) {
  const double v = number(c, n, key, fallback);
  if (v < 1 || v != std::floor(v) || v > 1e12) bad(c, line_of(n, fallback), key, "expected a positive integer, found '" + n.Scalar() + "'");
  return static_cast<int64_t>(v);
}

// Checks that map `n` has only `allowed` keys; returns them in file order.
void only_keys(const Ctx& c, const YAML::Node& n, const std::string& where, const std::vector<std::string>& allowed) {
  for (const auto& kv : n) {
    const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "?";
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      bad(c, line_of(kv.first), where.empty() ? k : where + "." + k, "unknown key (expected one of: " + list + ")");
    }
  }
}

std::string resolve(const Ctx& c, const std::string& p) {
  fs::path q(p);
  if (q.is_relative()) q = fs::path(c.dir) / q;
  return q.lexically_normal().string();
}

// "${name}" → the path of text `name`.
std::string substitute(const Ctx& c, const std::string& v, const std::map<std::string, std::string>& texts, int line,
                       const std::string& key) {
  static const std::regex ref(R"(\$\{([^}]*)\})");
  std::string out;
  auto begin = std::sregex_iterator(v.begin(), v.end(), ref);
  size_t last = 0;
  for (auto it = begin; it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1].str();
    const auto t = texts.find(name);
    if (t == texts.end()) bad(c, line, key, "'${" + name + "}' names no text (texts: define it there)");
    out += v.substr(last, static_cast<size_t>(it->position()) - last) + t->second;
    last = static_cast<size_t>(it->position() + it->length());
  }
  return out + v.substr(last);
}

OptionValue option(const Ctx& c, const std::string& key, const YAML::Node& v, const std::string& where,
                   const std::map<std::string, std::string>& texts) {
  static const std::regex name(R"([A-Za-z0-9][A-Za-z0-9_-]*)");
  static const std::set<std::string> reserved = {"output", "o", "force", "json", "quiet", "q", "dry-run", "help", "h"};
  OptionValue o;
  o.key = key;
  o.line = line_of(v);
  const std::string k = where + "." + key;
  if (!std::regex_match(key, name))
    bad(c, o.line, k, "not an option name (write it without dashes, e.g. keep: 6 for --keep 6)");
  if (reserved.count(key)) bad(c, o.line, k, "set by moetool run itself; leave it out");
  if (v.IsMap() || v.IsNull()) bad(c, o.line, k, "expected a value or a list of values, found " + kind_of(v));
  if (v.IsScalar() && (v.Scalar() == "true" || v.Scalar() == "false") && v.Tag() != "!") {
    o.flag = v.Scalar() == "true";
    return o;
  }
  if (v.IsScalar()) {
    o.values.push_back(substitute(c, v.Scalar(), texts, o.line, k));
    return o;
  }
  for (const auto& x : v) o.values.push_back(substitute(c, scalar(c, x, k, o.line), texts, line_of(x, o.line), k));
  if (o.values.empty()) bad(c, o.line, k, "an empty list");
  return o;
}

VerifySpec verify_spec(const Ctx& c, const YAML::Node& n, const std::string& where,
                       const std::map<std::string, std::string>& texts) {
  VerifySpec v;
  v.present = true;
  v.line = line_of(n);
  if (!n.IsMap()) bad(c, v.line, where, "expected a mapping (text, against, gates), found " + kind_of(n));
  only_keys(c, n, where, {"text", "against", "ctx", "chunks", "max_kld", "min_top1", "max_ppl_ratio", "max_route_mismatch"});
  if (!n["text"]) bad(c, v.line, where, "missing key 'text' (the evaluation text: a name in texts, or a path)");
  const std::string t = scalar(c, n["text"], where + ".text", v.line);
  v.text = texts.count(t) ? texts.at(t) : resolve(c, t);
  if (!file_exists(v.text)) bad(c, line_of(n["text"]), where + ".text", "no text named '" + t + "' and no file " + v.text);
  if (n["against"]) v.against = scalar(c, n["against"], where + ".against", v.line);
  if (n["ctx"]) v.ctx = count(c, n["ctx"], where + ".ctx", v.line);
  if (n["chunks"]) v.chunks = count(c, n["chunks"], where + ".chunks", v.line);
  for (const char* g : {"max_kld", "min_top1", "max_ppl_ratio", "max_route_mismatch"}) {
    if (!n[g]) continue;
    Gate gate{g, number(c, n[g], where + "." + g, v.line), line_of(n[g])};
    if (gate.limit < 0) bad(c, gate.line, where + "." + g, "a limit cannot be negative");
    if ((gate.name == "min_top1" || gate.name == "max_route_mismatch") && gate.limit > 1)
      bad(c, gate.line, where + "." + g, "a fraction in [0, 1] (0.9 = 90 %), found " + n[g].Scalar());
    v.gates.push_back(gate);
  }
  return v;
}

Step step(const Ctx& c, const YAML::Node& n, size_t i, const Recipe& r, const std::set<std::string>& earlier) {
  const std::string where = str("steps[", i, "]");
  Step s;
  s.line = line_of(n);
  if (!n.IsMap()) bad(c, s.line, where, "expected a mapping (name, pass, options, verify), found " + kind_of(n));
  only_keys(c, n, where, {"name", "pass", "from", "options", "verify"});
  for (const char* k : {"name", "pass"})
    if (!n[k]) bad(c, s.line, where, std::string("missing key '") + k + "'");
  s.name = scalar(c, n["name"], where + ".name", s.line);
  static const std::regex nm(R"([A-Za-z0-9_][A-Za-z0-9_.-]*)");
  if (!std::regex_match(s.name, nm)) bad(c, line_of(n["name"]), where + ".name", "'" + s.name + "' is not a folder name ([A-Za-z0-9_.-], not starting with '.' or '-')");
  if (earlier.count(s.name)) bad(c, line_of(n["name"]), where + ".name", "a second step named '" + s.name + "'");
  s.pass = scalar(c, n["pass"], where + ".pass", s.line);
  s.pass_line = line_of(n["pass"], s.line);
  const auto& passes = pass_names();
  if (std::find(passes.begin(), passes.end(), s.pass) == passes.end()) {
    std::string list;
    for (const auto& p : passes) list += (list.empty() ? "" : ", ") + p;
    bad(c, line_of(n["pass"]), where + ".pass", "unknown pass '" + s.pass + "' (expected one of: " + list + ")");
  }
  if (n["from"]) {
    s.from = scalar(c, n["from"], where + ".from", s.line);
    if (!earlier.count(s.from)) bad(c, line_of(n["from"]), where + ".from", "no earlier step named '" + s.from + "'");
  }
  if (n["options"]) {
    const YAML::Node o = n["options"];
    if (!o.IsMap() && !o.IsNull()) bad(c, line_of(o, s.line), where + ".options", "expected a mapping of option: value, found " + kind_of(o));
    if (o.IsMap())
      for (const auto& kv : o) s.options.push_back(option(c, kv.first.Scalar(), kv.second, where + ".options", r.texts));
  }
  if (n["verify"]) {
    s.verify = verify_spec(c, n["verify"], where + ".verify", r.texts);
    const std::string& a = s.verify.against;
    if (a != "input" && a != "previous" && !earlier.count(a))
      bad(c, line_of(n["verify"]["against"], s.line), where + ".verify.against",
          "'" + a + "' is not input, previous or an earlier step");
  }
  return s;
}

}  // namespace

const std::vector<std::string>& pass_names() {
  static const std::vector<std::string> p = {"convert upcycle", "convert factorize", "prune", "merge", "svd", "quantize"};
  return p;
}

Recipe parse_recipe(const std::string& path) {
  if (!file_exists(path)) fail(path, ": no such recipe file");
  return parse_recipe_text(read_file(path), path);
}

Recipe parse_recipe_text(const std::string& text, const std::string& path) {
  Ctx c{path, fs::absolute(fs::path(path)).parent_path().lexically_normal().string()};
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(path, ":", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  if (!root.IsMap()) bad(c, line_of(root, 1), "(top level)", "expected a mapping with models and steps, found " + kind_of(root));
  only_keys(c, root, "", {"name", "models", "output", "texts", "steps"});
  Recipe r;
  r.path = path;
  r.dir = c.dir;
  if (root["name"]) r.name = scalar(c, root["name"], "name", 1);
  if (!root["models"]) bad(c, 1, "models", "missing (one checkpoint path or a list of them)");
  const YAML::Node m = root["models"];
  r.models_line = line_of(m, 1);
  if (m.IsScalar()) r.models.push_back(resolve(c, m.Scalar()));
  else if (m.IsSequence())
    for (const auto& x : m) r.models.push_back(resolve(c, scalar(c, x, "models", r.models_line)));
  else bad(c, r.models_line, "models", "expected a path or a list of paths, found " + kind_of(m));
  if (root["output"]) r.output = resolve(c, scalar(c, root["output"], "output", 1));
  if (root["texts"]) {
    const YAML::Node t = root["texts"];
    if (!t.IsMap()) bad(c, line_of(t, 1), "texts", "expected a mapping of name: path, found " + kind_of(t));
    for (const auto& kv : t) {
      const std::string k = "texts." + kv.first.Scalar();
      const std::string p = resolve(c, scalar(c, kv.second, k, line_of(kv.first)));
      if (!file_exists(p)) bad(c, line_of(kv.second), k, "no such file " + p);
      r.texts[kv.first.Scalar()] = p;
    }
  }
  if (!root["steps"]) bad(c, 1, "steps", "missing (a list of passes)");
  const YAML::Node st = root["steps"];
  if (!st.IsSequence() || st.size() == 0) bad(c, line_of(st, 1), "steps", "expected a non-empty list of steps, found " + kind_of(st));
  std::set<std::string> names;
  for (size_t i = 0; i < st.size(); ++i) {
    r.steps.push_back(step(c, st[i], i, r, names));
    names.insert(r.steps.back().name);
  }
  return r;
}

int input_step(const Recipe& r, size_t i) {
  const Step& s = r.steps[i];
  if (!s.from.empty())
    for (size_t j = 0; j < i; ++j)
      if (r.steps[j].name == s.from) return static_cast<int>(j);
  return static_cast<int>(i) - 1;
}

int against_step(const Recipe& r, size_t i) {
  const std::string& a = r.steps[i].verify.against;
  if (a == "input") return -1;
  if (a == "previous") return input_step(r, i);
  for (size_t j = 0; j < i; ++j)
    if (r.steps[j].name == a) return static_cast<int>(j);
  return -1;
}

std::string artifact_name(const Step& s) {
  if (s.pass != "quantize") return "model";
  for (const auto& o : s.options)
    if (o.key == "format" && !o.values.empty() && o.values.back() != "gguf") return "model";
  return "model.gguf";
}

std::vector<std::string> step_args(const Step& s, const std::string& input, const std::string& output) {
  std::vector<std::string> a;
  const size_t sp = s.pass.find(' ');
  if (sp == std::string::npos) {
    a.push_back(s.pass);
  } else {
    a.push_back(s.pass.substr(0, sp));
    a.push_back(s.pass.substr(sp + 1));
  }
  a.push_back(input);
  a.push_back("-o");
  a.push_back(output);
  for (const auto& o : s.options) {
    if (o.values.empty()) {
      if (o.flag) a.push_back("--" + o.key);
      continue;
    }
    for (const auto& v : o.values) a.push_back("--" + o.key + "=" + v);
  }
  return a;
}

}  // namespace moetool::recipe
