// convert/router_init.cc — random, zero and prompt-derived routers; recipe parsing (JSON and a YAML
// subset); router condition numbers (see router_init.h).
#include "convert/router_init.h"

#include <Eigen/Dense>

#include <cmath>
#include <limits>

#include "convert/common.h"
#include "convert/rng.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/calibrate.h"

namespace moetool {

const Choice<RouterInit> kRouterInits[] = {
    {RouterInit::Random, "random"}, {RouterInit::Zero, "zero"}, {RouterInit::Prompts, "prompts"}};

RouterInit parse_router_init(const std::string& s) {
  return parse_choice(kRouterInits, s, "--router: unknown router initialisation");
}
const char* router_init_name(RouterInit r) { return choice_name(kRouterInits, r); }

// ---------------------------------------------------------------------------------------------------
// YAML subset

namespace {

struct YLine {
  int indent = 0;
  std::string text;  // content without indentation and comment
  int number = 0;    // 1-based line number
};

class YamlParser {
 public:
  YamlParser(const std::string& text, std::string path) : path_(std::move(path)) {
    int no = 0;
    size_t p = 0;
    while (p <= text.size()) {
      size_t e = text.find('\n', p);
      if (e == std::string::npos) e = text.size();
      std::string raw = text.substr(p, e - p);
      p = e + 1;
      ++no;
      if (!raw.empty() && raw.back() == '\r') raw.pop_back();
      raw_.push_back(raw);
      int ind = 0;
      while (ind < static_cast<int>(raw.size()) && raw[static_cast<size_t>(ind)] == ' ') ++ind;
      if (ind < static_cast<int>(raw.size()) && raw[static_cast<size_t>(ind)] == '\t')
        err(no, "tabs are not allowed for indentation");
      std::string body = strip_comment(raw.substr(static_cast<size_t>(ind)));
      while (!body.empty() && (body.back() == ' ' || body.back() == '\t')) body.pop_back();
      if (body.empty()) continue;
      if (body == "---" && lines_.empty()) continue;
      if (body == "---" || body == "...") err(no, "multiple YAML documents are not supported");
      lines_.push_back({ind, body, no});
    }
  }

  nlohmann::json parse() {
    if (lines_.empty()) return nullptr;
    nlohmann::json v = node(lines_[0].indent);
    if (pos_ < lines_.size()) err(lines_[pos_].number, "unexpected content (wrong indentation?)");
    return v;
  }

 private:
  std::string path_;
  std::vector<std::string> raw_;
  std::vector<YLine> lines_;
  size_t pos_ = 0;

  [[noreturn]] void err(int line, const std::string& what) const {
    fail(path_, ": line ", line, ": ", what, " (moetool reads a YAML subset; JSON is accepted too)");
  }

  static std::string strip_comment(const std::string& s) {
    char q = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const char c = s[i];
      if (q) {
        if (c == '\\' && q == '"') ++i;
        else if (c == q) q = 0;
      } else if (c == '"' || c == '\'') {
        if (i == 0 || s[i - 1] == ' ' || s[i - 1] == '[' || s[i - 1] == ',' || s[i - 1] == ':' || s[i - 1] == '-') q = c;
      } else if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
        return s.substr(0, i);
      }
    }
    return s;
  }

  static bool is_seq_item(const std::string& t) { return t == "-" || t.rfind("- ", 0) == 0; }

  // Position of a mapping key's colon (": " or a trailing ':'), outside quotes; npos if none.
  static size_t key_colon(const std::string& t) {
    char q = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      const char c = t[i];
      if (q) {
        if (c == '\\' && q == '"') ++i;
        else if (c == q) q = 0;
      } else if ((c == '"' || c == '\'') && i == 0) {
        q = c;
      } else if (c == ':' && (i + 1 == t.size() || t[i + 1] == ' ')) {
        return i;
      } else if (i == 0 && (c == '[' || c == '{')) {
        return std::string::npos;
      }
    }
    return std::string::npos;
  }

  nlohmann::json node(int indent) {
    const YLine& l = lines_[pos_];
    if (l.indent != indent) err(l.number, "unexpected indentation");
    if (is_seq_item(l.text)) return sequence(indent);
    if (key_colon(l.text) != std::string::npos) return mapping(indent);
    ++pos_;
    return scalar(l.text, l.number);
  }

  nlohmann::json sequence(int indent) {
    nlohmann::json a = nlohmann::json::array();
    while (pos_ < lines_.size() && lines_[pos_].indent == indent && is_seq_item(lines_[pos_].text)) {
      YLine& l = lines_[pos_];
      std::string rest = l.text.size() > 1 ? l.text.substr(2) : "";
      size_t skip = 0;
      while (skip < rest.size() && rest[skip] == ' ') ++skip;
      rest = rest.substr(skip);
      if (rest.empty()) {
        ++pos_;
        if (pos_ >= lines_.size() || lines_[pos_].indent <= indent) {
          a.push_back(nullptr);
          continue;
        }
        a.push_back(node(lines_[pos_].indent));
        continue;
      }
      // "- key: value" opens a mapping whose keys sit at the column after "- ".
      l.indent = indent + 2 + static_cast<int>(skip);
      l.text = rest;
      if (is_seq_item(rest) || key_colon(rest) != std::string::npos) {
        a.push_back(node(l.indent));
      } else {
        ++pos_;
        a.push_back(block_or_scalar(rest, l.number, indent));
      }
    }
    return a;
  }

  nlohmann::json mapping(int indent) {
    nlohmann::json m = nlohmann::json::object();
    while (pos_ < lines_.size() && lines_[pos_].indent == indent) {
      const YLine l = lines_[pos_];
      if (is_seq_item(l.text)) err(l.number, "a sequence item where a mapping key was expected");
      const size_t c = key_colon(l.text);
      if (c == std::string::npos) err(l.number, "expected 'key: value'");
      nlohmann::json k = scalar(l.text.substr(0, c), l.number);
      const std::string key = k.is_string() ? k.get<std::string>() : k.dump();
      if (m.contains(key)) err(l.number, "duplicate key '" + key + "'");
      std::string rest = c + 1 < l.text.size() ? l.text.substr(c + 1) : "";
      while (!rest.empty() && rest.front() == ' ') rest.erase(rest.begin());
      ++pos_;
      if (!rest.empty()) {
        m[key] = block_or_scalar(rest, l.number, indent);
        continue;
      }
      if (pos_ < lines_.size() && (lines_[pos_].indent > indent ||
                                   (lines_[pos_].indent == indent && is_seq_item(lines_[pos_].text))))
        m[key] = node(lines_[pos_].indent);
      else
        m[key] = nullptr;
    }
    return m;
  }

  // A value after "key: " or "- ": a block scalar (| or >) takes the following more-indented lines.
  nlohmann::json block_or_scalar(const std::string& t, int number, int parent_indent) {
    if (t[0] != '|' && t[0] != '>') return scalar(t, number);
    const bool folded = t[0] == '>';
    std::string chomp = t.substr(1);
    // Raw lines (comments are content inside a block scalar) after the indicator's line.
    int first = number;  // raw_ index of the next line (0-based = number)
    int block_indent = -1;
    std::vector<std::string> body;
    int r = first;
    for (; r < static_cast<int>(raw_.size()); ++r) {
      const std::string& s = raw_[static_cast<size_t>(r)];
      int ind = 0;
      while (ind < static_cast<int>(s.size()) && s[static_cast<size_t>(ind)] == ' ') ++ind;
      if (ind == static_cast<int>(s.size())) {
        body.push_back("");
        continue;
      }
      if (block_indent < 0) {
        if (ind <= parent_indent) break;
        block_indent = ind;
      }
      if (ind < block_indent) break;
      body.push_back(s.substr(static_cast<size_t>(block_indent)));
    }
    // Skip the parsed lines consumed by the block.
    while (pos_ < lines_.size() && lines_[pos_].number <= r) ++pos_;
    while (!body.empty() && body.back().empty()) body.pop_back();
    std::string out;
    for (size_t i = 0; i < body.size(); ++i) {
      if (i) out += (folded && !body[i].empty() && !body[i - 1].empty()) ? " " : "\n";
      out += body[i];
    }
    if (chomp.find('-') == std::string::npos) out += "\n";
    return out;
  }

  nlohmann::json scalar(const std::string& t0, int number) {
    std::string t = t0;
    while (!t.empty() && t.back() == ' ') t.pop_back();
    if (t.empty()) return nullptr;
    if (t[0] == '&' || t[0] == '*' || t[0] == '!') err(number, "anchors, aliases and tags are not supported");
    if (t[0] == '{') err(number, "flow mappings ({...}) are not supported");
    if (t[0] == '[') return flow_sequence(t, number);
    if (t[0] == '"' || t[0] == '\'') {
      size_t end = 0;
      std::string s = quoted(t, 0, &end, number);
      if (end != t.size()) err(number, "unexpected text after a quoted string");
      return s;
    }
    if (t == "true" || t == "True" || t == "TRUE") return true;
    if (t == "false" || t == "False" || t == "FALSE") return false;
    if (t == "null" || t == "~" || t == "Null" || t == "NULL") return nullptr;
    char* endp = nullptr;
    const long long iv = std::strtoll(t.c_str(), &endp, 10);
    if (endp && *endp == 0) return iv;
    const double dv = std::strtod(t.c_str(), &endp);
    if (endp && *endp == 0 && t.find_first_of("0123456789") != std::string::npos) return dv;
    return t;
  }

  std::string quoted(const std::string& t, size_t at, size_t* end, int number) {
    const char q = t[at];
    std::string s;
    size_t i = at + 1;
    for (;; ++i) {
      if (i >= t.size()) err(number, "unterminated quoted string (multi-line quoted strings are not supported)");
      const char c = t[i];
      if (q == '\'') {
        if (c == '\'') {
          if (i + 1 < t.size() && t[i + 1] == '\'') {
            s += '\'';
            ++i;
            continue;
          }
          break;
        }
        s += c;
        continue;
      }
      if (c == '"') break;
      if (c != '\\') {
        s += c;
        continue;
      }
      if (++i >= t.size()) err(number, "unterminated escape");
      switch (t[i]) {
        case 'n': s += '\n'; break;
        case 't': s += '\t'; break;
        case 'r': s += '\r'; break;
        case '0': s += '\0'; break;
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'u': {
          if (i + 4 >= t.size()) err(number, "bad \\u escape");
          const unsigned cp = static_cast<unsigned>(std::stoul(t.substr(i + 1, 4), nullptr, 16));
          i += 4;
          if (cp < 0x80) {
            s += static_cast<char>(cp);
          } else if (cp < 0x800) {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            s += static_cast<char>(0xE0 | (cp >> 12));
            s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            s += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: err(number, std::string("unsupported escape \\") + t[i]);
      }
    }
    *end = i + 1;
    return s;
  }

  nlohmann::json flow_sequence(const std::string& t, int number) {
    nlohmann::json a = nlohmann::json::array();
    size_t i = 1;
    auto skip_ws = [&] {
      while (i < t.size() && t[i] == ' ') ++i;
    };
    skip_ws();
    if (i < t.size() && t[i] == ']') {
      if (i + 1 != t.size()) err(number, "unexpected text after ']'");
      return a;
    }
    for (;;) {
      skip_ws();
      if (i >= t.size()) err(number, "unterminated flow sequence (multi-line [...] is not supported)");
      if (t[i] == '"' || t[i] == '\'') {
        size_t e = 0;
        a.push_back(quoted(t, i, &e, number));
        i = e;
      } else {
        if (t[i] == '[' || t[i] == '{') err(number, "nested flow collections are not supported");
        size_t e = t.find_first_of(",]", i);
        if (e == std::string::npos) err(number, "unterminated flow sequence");
        a.push_back(scalar(t.substr(i, e - i), number));
        i = e;
      }
      skip_ws();
      if (i >= t.size()) err(number, "unterminated flow sequence");
      if (t[i] == ',') {
        ++i;
        continue;
      }
      if (t[i] == ']') {
        if (i + 1 != t.size()) err(number, "unexpected text after ']'");
        return a;
      }
      err(number, "expected ',' or ']' in a flow sequence");
    }
  }
};

std::vector<std::string> string_list(const nlohmann::json& v, const std::string& path, size_t expert,
                                     const char* key) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) fail(path, ": expert ", expert, ": '", key, "' must be a list of strings");
  for (const auto& x : v) {
    if (!x.is_string()) fail(path, ": expert ", expert, ": '", key, "' must be a list of strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

}  // namespace

nlohmann::json parse_yaml_subset(const std::string& text, const std::string& path) {
  return YamlParser(text, path).parse();
}

PromptRecipe parse_prompt_recipe(const std::string& text, const std::string& path) {
  size_t p = text.find_first_not_of(" \t\r\n");
  nlohmann::json j;
  if (p != std::string::npos && (text[p] == '{' || text[p] == '[')) {
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": invalid JSON: ", e.what());
    }
  } else {
    j = parse_yaml_subset(text, path);
  }
  const nlohmann::json* list = &j;
  if (j.is_object()) {
    if (!j.contains("experts")) fail(path, ": no 'experts' list in the prompt recipe");
    list = &j.at("experts");
  }
  if (!list->is_array() || list->empty())
    fail(path, ": 'experts' must be a non-empty list of {positive_prompts, negative_prompts}");
  PromptRecipe r;
  for (size_t i = 0; i < list->size(); ++i) {
    const auto& e = (*list)[i];
    if (!e.is_object()) fail(path, ": expert ", i, ": expected a mapping with positive_prompts");
    ExpertPrompts ep;
    if (e.contains("positive_prompts")) ep.positive = string_list(e.at("positive_prompts"), path, i, "positive_prompts");
    if (e.contains("negative_prompts")) ep.negative = string_list(e.at("negative_prompts"), path, i, "negative_prompts");
    if (ep.positive.empty()) fail(path, ": expert ", i, " has no positive_prompts");
    r.experts.push_back(std::move(ep));
  }
  return r;
}

PromptRecipe load_prompt_recipe(const std::string& path) { return parse_prompt_recipe(read_file(path), path); }

// ---------------------------------------------------------------------------------------------------

double random_router_stdev(const ModelConfig& c) {
  if (c.raw.is_object() && c.raw.contains("initializer_range") && c.raw.at("initializer_range").is_number()) {
    const double r = c.raw.at("initializer_range").get<double>();
    if (r > 0 && std::isfinite(r)) return r;
  }
  return 0.02;
}

std::vector<float> random_router(int64_t E, int64_t H, double stdev, uint64_t seed, int64_t layer) {
  std::vector<float> w(static_cast<size_t>(E * H));
  const uint64_t k = rng::key(seed, str("router.", layer));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(stdev * rng::normal(k, i));
  return w;
}

double condition_number(const float* rows, int64_t E, int64_t H) {
  if (E > H) return std::numeric_limits<double>::infinity();
  Eigen::MatrixXd m(E, H);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t h = 0; h < H; ++h) m(e, h) = rows[e * H + h];
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(m);
  const auto& s = svd.singularValues();
  if (s.size() == 0) return std::numeric_limits<double>::infinity();
  const double mx = s(0), mn = s(s.size() - 1);
  if (!(mn > mx * 1e-15)) return std::numeric_limits<double>::infinity();
  return mx / mn;
}

std::vector<std::vector<float>> prompt_routers(const Engine& engine, const Tokenizer& tok, const PromptRecipe& recipe,
                                               const std::function<void(const std::string&)>& progress) {
  const ModelConfig& c = engine.config();
  const int64_t H = c.hidden_size, L = c.num_layers, E = static_cast<int64_t>(recipe.experts.size());
  // One chunk per prompt; remember which expert (and sign) it belongs to.
  struct P {
    int64_t expert;
    bool positive;
    int64_t offset, n;  // token range in the calibration arrays
  };
  std::vector<std::vector<int32_t>> chunks;
  std::vector<P> ps;
  int64_t off = 0;
  const auto bos = tok.bos_id();
  for (int64_t e = 0; e < E; ++e) {
    for (int pass = 0; pass < 2; ++pass) {
      const auto& list = pass == 0 ? recipe.experts[static_cast<size_t>(e)].positive
                                   : recipe.experts[static_cast<size_t>(e)].negative;
      for (const auto& text : list) {
        std::vector<int32_t> ids;
        if (bos) ids.push_back(*bos);
        const auto t = tok.encode(text, /*add_special=*/false, /*parse_special=*/true);
        if (t.empty()) fail("prompt recipe: expert ", e, ": prompt \"", text, "\" has no tokens");
        ids.insert(ids.end(), t.begin(), t.end());
        const int64_t maxpos = c.max_position_embeddings;
        if (maxpos > 0 && static_cast<int64_t>(ids.size()) > maxpos)
          fail("prompt recipe: expert ", e, ": a prompt of ", ids.size(), " tokens exceeds the model's context of ",
               maxpos);
        ps.push_back({e, pass == 0, off, static_cast<int64_t>(ids.size())});
        off += static_cast<int64_t>(ids.size());
        chunks.push_back(std::move(ids));
      }
    }
  }
  CalibrationOptions co;
  co.router = false;
  co.hidden = true;
  co.second_moments = false;
  co.progress = progress;
  const CalibrationStats st = calibrate(engine, chunks, co);
  const size_t skip = bos ? 1 : 0;

  std::vector<std::vector<float>> out(static_cast<size_t>(L));
  std::vector<float> emb;
  for (int64_t l = 0; l < L; ++l) {
    std::vector<double> pos(static_cast<size_t>(E * H), 0.0), neg(static_cast<size_t>(E * H), 0.0);
    std::vector<int64_t> npos(static_cast<size_t>(E), 0), nneg(static_cast<size_t>(E), 0);
    for (size_t i = 0; i < ps.size(); ++i) {
      const P& p = ps[i];
      const int64_t n = p.n - static_cast<int64_t>(skip);
      std::vector<double> mean(static_cast<size_t>(H), 0.0);
      if (l == 0) {
        emb.resize(static_cast<size_t>(p.n * H));
        engine.embed(chunks[i].data(), p.n, emb.data());
      }
      for (int64_t t = static_cast<int64_t>(skip); t < p.n; ++t) {
        for (int64_t h = 0; h < H; ++h) {
          double v;
          if (l == 0) {
            v = emb[static_cast<size_t>(t * H + h)];
          } else {
            const LayerCalibration& prev = st.layers[static_cast<size_t>(l - 1)];
            const size_t k = static_cast<size_t>((p.offset + t) * H + h);
            v = static_cast<double>(prev.hidden_before[k]) + prev.ffn_out[k];
          }
          mean[static_cast<size_t>(h)] += v / static_cast<double>(n);
        }
      }
      auto& acc = p.positive ? pos : neg;
      for (int64_t h = 0; h < H; ++h) acc[static_cast<size_t>(p.expert * H + h)] += mean[static_cast<size_t>(h)];
      (p.positive ? npos : nneg)[static_cast<size_t>(p.expert)] += 1;
    }
    std::vector<float> rows(static_cast<size_t>(E * H));
    for (int64_t e = 0; e < E; ++e) {
      double nrm = 0;
      std::vector<double> v(static_cast<size_t>(H));
      for (int64_t h = 0; h < H; ++h) {
        const size_t k = static_cast<size_t>(e * H + h);
        v[static_cast<size_t>(h)] = pos[k] / static_cast<double>(npos[static_cast<size_t>(e)]) -
                                    (nneg[static_cast<size_t>(e)] ? neg[k] / static_cast<double>(nneg[static_cast<size_t>(e)]) : 0.0);
        nrm += v[static_cast<size_t>(h)] * v[static_cast<size_t>(h)];
      }
      nrm = std::sqrt(nrm);
      for (int64_t h = 0; h < H; ++h)
        rows[static_cast<size_t>(e * H + h)] = nrm > 0 ? static_cast<float>(v[static_cast<size_t>(h)] / nrm) : 0.0f;
    }
    out[static_cast<size_t>(l)] = std::move(rows);
  }
  return out;
}

}  // namespace moetool
