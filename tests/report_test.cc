// tests/report_test.cc — the reports of `moetool verify`: JSON keys, Markdown verdict and tables,
// self-contained HTML with inline SVG and escaped user text, well-formed JUnit XML with failures for
// missed thresholds, the llama.cpp layout of the console text, and the report directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "tests/test_util.h"
#include "verify/metrics.h"
#include "verify/report.h"

namespace moetool {
namespace {

using moetool::testing::random_normal;
using moetool::testing::TempDir;

const char* kEvilPath = "/tmp/<script>alert(\"x\")</script>&'model'|*_[1]`.safetensors";

int count(const std::string& s, const std::string& sub) {
  int n = 0;
  for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + 1)) ++n;
  return n;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// A minimal XML well-formedness check: balanced, properly nested elements; quoted attributes;
// only the five predefined entities or numeric references; one root element. Returns "" when fine.
std::string xml_problem(const std::string& x) {
  std::vector<std::string> stack;
  size_t i = 0;
  int roots = 0;
  auto check_text = [&](const std::string& t) -> std::string {
    for (size_t k = 0; k < t.size(); ++k) {
      if (t[k] == '<') return "raw '<' in text";
      if (static_cast<unsigned char>(t[k]) < 0x20 && t[k] != '\n' && t[k] != '\r' && t[k] != '\t')
        return "control character";
      if (t[k] == '&') {
        const size_t e = t.find(';', k);
        if (e == std::string::npos) return "unterminated entity";
        const std::string ent = t.substr(k + 1, e - k - 1);
        if (ent != "amp" && ent != "lt" && ent != "gt" && ent != "quot" && ent != "apos" && ent.rfind('#', 0) != 0)
          return "unknown entity &" + ent + ";";
      }
    }
    return "";
  };
  if (x.rfind("<?xml", 0) == 0) i = x.find("?>") + 2;
  while (i < x.size()) {
    const size_t lt = x.find('<', i);
    const std::string text = x.substr(i, lt == std::string::npos ? std::string::npos : lt - i);
    if (auto p = check_text(text); !p.empty()) return p;
    if (stack.empty() && text.find_first_not_of(" \n\r\t") != std::string::npos) return "text outside the root";
    if (lt == std::string::npos) break;
    const size_t gt = x.find('>', lt);
    if (gt == std::string::npos) return "unterminated tag";
    std::string tag = x.substr(lt + 1, gt - lt - 1);
    i = gt + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) return "mismatched </" + tag.substr(1) + ">";
      stack.pop_back();
      continue;
    }
    const bool self = tag.back() == '/';
    if (self) tag.pop_back();
    const size_t sp = tag.find_first_of(" \n\t");
    const std::string name = tag.substr(0, sp);
    // Attributes: name="value" pairs with escaped values.
    std::string rest = sp == std::string::npos ? "" : tag.substr(sp);
    size_t k = 0;
    while (true) {
      k = rest.find_first_not_of(" \n\t", k);
      if (k == std::string::npos) break;
      const size_t eq = rest.find('=', k);
      if (eq == std::string::npos || eq + 1 >= rest.size() || rest[eq + 1] != '"') return "bad attribute in <" + name;
      const size_t end = rest.find('"', eq + 2);
      if (end == std::string::npos) return "unterminated attribute";
      if (auto p = check_text(rest.substr(eq + 2, end - eq - 2)); !p.empty()) return "attribute: " + p;
      k = end + 1;
    }
    if (stack.empty()) ++roots;
    if (!self) stack.push_back(name);
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return "expected one root element";
  return "";
}

VerifyReport make_report(double max_kld, double min_top1, double max_ppl_ratio) {
  const int64_t n = 128, V = 60;
  const auto b = random_normal(2 * n * V, 7);
  auto c = b;
  const auto noise = random_normal(c.size(), 8);
  for (size_t k = 0; k < c.size(); ++k) c[k] += 0.6f * noise[k];
  std::mt19937 rng(9);
  std::vector<int32_t> tok(2 * n);
  for (auto& t : tok) t = static_cast<int32_t>(rng() % V);
  VerifyAccumulator acc;
  for (int k = 0; k < 2; ++k) acc.add_chunk(&b[k * n * V], &c[k * n * V], &tok[k * n], n, V, 0);
  HiddenStateComparison h;
  const int64_t H = 16;
  for (int layer = 0; layer < 6; ++layer) {
    const auto x = random_normal(10 * H, 100 + layer), e = random_normal(10 * H, 200 + layer);
    std::vector<float> y(x.size());
    for (size_t k = 0; k < x.size(); ++k) y[k] = x[k] + 0.02f * static_cast<float>(layer + 1) * e[k];
    h.add(layer, x.data(), y.data(), 10, H);
  }
  VerifyReport r;
  r.stats = acc.finish();
  r.layers = h.finish();
  r.run.base = kEvilPath;
  r.run.candidate = "out/cand <b>bold</b>";
  r.run.text = "wiki.test.raw";
  r.run.n_ctx = n;
  r.run.scored = ScoredPositions::kAllAfterFirst;
  r.run.moetool_version = "0.1.0";
  r.run.command = "moetool verify base cand --max-kld 0.01";
  r.run.seconds = 1.5;
  r.thresholds.max_kld = max_kld;
  r.thresholds.min_top1 = min_top1;
  r.thresholds.max_ppl_ratio = max_ppl_ratio;
  return r;
}

TEST(Report, JsonHasStableKeys) {
  const VerifyReport r = make_report(1e-6, 0.0, 100.0);  // KLD threshold missed
  const auto j = nlohmann::json::parse(to_json(r).dump());
  EXPECT_EQ(j["schema"], "moetool.verify.report/1");
  EXPECT_EQ(j["verdict"], "fail");
  ASSERT_EQ(j["failures"].size(), 1u);
  EXPECT_EQ(j["run"]["base"], kEvilPath);
  EXPECT_EQ(j["run"]["scored_positions"], "all-after-first");
  EXPECT_EQ(j["run"]["n_ctx"], 128);
  EXPECT_EQ(j["counts"]["tokens"], r.stats.n_tokens);
  EXPECT_EQ(j["counts"]["chunks"], 2);
  for (const char* k : {"ppl_q", "ppl_base", "ln_ppl_ratio", "ppl_ratio", "ppl_diff"}) {
    EXPECT_TRUE(j["perplexity"][k].contains("value")) << k;
    EXPECT_TRUE(j["perplexity"][k].contains("unc")) << k;
  }
  EXPECT_TRUE(j["perplexity"]["cor_ln_ppl"].is_number());
  EXPECT_DOUBLE_EQ(j["kld"]["mean"]["value"].get<double>(), r.stats.kld.value);
  for (const char* k : {"max", "p99_9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0_1", "min"})
    EXPECT_TRUE(j["kld"][k].is_number()) << k;
  for (const char* k : {"max", "p99_9", "p99", "p95", "p90", "p75", "median", "p25", "p10", "p5", "p1", "p0_1", "min"})
    EXPECT_TRUE(j["delta_p"][k].is_number()) << k;
  EXPECT_TRUE(j["delta_p"]["rms"]["value"].is_number());
  EXPECT_TRUE(j["same_top_p"]["value"].is_number());
  int64_t total = j["kld"]["histogram"]["below"];
  for (const auto& c : j["kld"]["histogram"]["counts"]) total += c.get<int64_t>();
  EXPECT_EQ(total, r.stats.n_tokens);
  ASSERT_EQ(j["layers"].size(), 6u);
  EXPECT_TRUE(j["layers"][0].contains("mean_cosine"));
  EXPECT_TRUE(j["layers"][0].contains("nmse"));
  ASSERT_EQ(j["chunks"].size(), 2u);
  ASSERT_EQ(j["thresholds"].size(), 3u);
  EXPECT_EQ(j["thresholds"][0]["name"], "max_kld");
  EXPECT_EQ(j["thresholds"][0]["passed"], false);
  EXPECT_EQ(j["thresholds"][1]["passed"], true);
  EXPECT_EQ(j["thresholds"][2]["passed"], true);
  // Undefined values are null, not invalid JSON.
  VerifyReport empty;
  const auto je = nlohmann::json::parse(to_json(empty).dump());
  EXPECT_TRUE(je["kld"]["mean"]["value"].is_null());
  EXPECT_EQ(je["verdict"], "fail");
}

TEST(Report, MarkdownHasVerdictAndTables) {
  const VerifyReport bad = make_report(1e-6, 0.0, 100.0);
  const std::string md = to_markdown(bad);
  EXPECT_NE(md.find("FAIL"), std::string::npos);
  EXPECT_NE(md.find("| metric | value |"), std::string::npos);
  EXPECT_NE(md.find("| Mean KLD |"), std::string::npos);
  EXPECT_NE(md.find("| Top-1 agreement |"), std::string::npos);  // the headline row
  EXPECT_NE(md.find("| threshold | metric | limit | value | result |"), std::string::npos);
  EXPECT_NE(md.find("| max\\_kld | mean KLD |"), std::string::npos);
  EXPECT_EQ(count(md, "❌ fail"), 1);
  EXPECT_EQ(count(md, "✅ pass"), 2);
  EXPECT_EQ(md.find("<script>"), std::string::npos);
  EXPECT_EQ(md.find("<b>"), std::string::npos);
  EXPECT_NE(md.find("&lt;script&gt;"), std::string::npos);
  const std::string good = to_markdown(make_report(10.0, 0.0, 100.0));
  EXPECT_NE(good.find("PASS"), std::string::npos);
  EXPECT_EQ(good.find("FAIL"), std::string::npos);
  EXPECT_TRUE(passed(make_report(10.0, 0.0, 100.0)));
  EXPECT_FALSE(passed(bad));
}

TEST(Report, HtmlIsSelfContainedAndEscaped) {
  const VerifyReport r = make_report(1e-6, 0.5, 100.0);
  const std::string h = to_html(r);
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(h.find("</html>"), std::string::npos);
  EXPECT_EQ(count(h, "<svg"), 4);  // KLD histogram, cosine, NMSE, per-chunk KLD
  EXPECT_EQ(count(h, "<svg"), count(h, "</svg>"));
  EXPECT_EQ(count(h, "<table"), count(h, "</table>"));
  EXPECT_EQ(count(h, "<details"), count(h, "</details>"));
  const std::string l = lower(h);
  EXPECT_EQ(l.find("<script"), std::string::npos);
  EXPECT_EQ(h.find("<b>"), std::string::npos);
  EXPECT_NE(h.find("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;model&#39;"), std::string::npos);
  // No external resources.
  for (const char* bad : {"src=", "href=", "<link", "@import", "url(", "<iframe", "<img"})
    EXPECT_EQ(l.find(bad), std::string::npos) << bad;
  EXPECT_EQ(count(l, "http"), count(l, "http://www.w3.org/2000/svg"));  // only the SVG namespace
  EXPECT_NE(h.find("<style>"), std::string::npos);
  EXPECT_NE(h.find("FAIL"), std::string::npos);
  // The SVG fragments are themselves well-formed XML.
  size_t p = 0;
  while ((p = h.find("<svg", p)) != std::string::npos) {
    const size_t e = h.find("</svg>", p);
    ASSERT_NE(e, std::string::npos);
    EXPECT_EQ(xml_problem(h.substr(p, e + 6 - p)), "");
    p = e;
  }
  // Identical models: nothing to draw, still one SVG per plot.
  VerifyReport same;
  const auto b = random_normal(20 * 8, 5);
  std::vector<int32_t> tok(20, 3);
  VerifyAccumulator acc;
  acc.add_chunk(b.data(), b.data(), tok.data(), 20, 8, 0);
  same.stats = acc.finish();
  std::string hs = to_html(same);
  EXPECT_NE(hs.find("identical"), std::string::npos);
  EXPECT_EQ(count(hs, "<svg"), 2);  // histogram (a message), per-chunk KLD
  // Degenerate per-layer values (cosine exactly 1, NMSE exactly 0; huge flat values) still plot.
  HiddenStateComparison hc;
  for (int layer = 0; layer < 3; ++layer) hc.add(layer, b.data(), b.data(), 20, 8);
  same.layers = hc.finish();
  hs = to_html(same);
  EXPECT_EQ(count(hs, "<svg"), 4);
  same.layers = {{0, 1, 1e6, 1e6, 1e6 + 1e-9}, {1, 1, 1e6, 1e6, 1e6}};
  EXPECT_EQ(count(to_html(same), "<svg"), 4);
}

TEST(Report, JunitXmlHasSuiteCasesAndFailures) {
  const VerifyReport bad = make_report(1e-6, 0.0, 100.0);
  const std::string x = to_junit(bad);
  EXPECT_EQ(xml_problem(x), "");
  EXPECT_NE(x.find("<testsuite name=\"moetool.verify\" tests=\"3\" failures=\"1\""), std::string::npos);
  EXPECT_EQ(count(x, "<testcase "), 3);
  EXPECT_EQ(count(x, "<failure "), 1);
  EXPECT_NE(x.find("name=\"max_kld\""), std::string::npos);
  EXPECT_EQ(x.find("<script"), std::string::npos);
  const std::string ok = to_junit(make_report(10.0, 0.0, 100.0));
  EXPECT_EQ(xml_problem(ok), "");
  EXPECT_EQ(count(ok, "<failure"), 0);
  EXPECT_NE(ok.find("failures=\"0\""), std::string::npos);
  // Nothing scored: a failing case even without thresholds.
  VerifyReport empty;
  empty.run.base = std::string("bad\x01utf8\xff") + kEvilPath;
  const std::string xe = to_junit(empty);
  EXPECT_EQ(xml_problem(xe), "");
  EXPECT_NE(xe.find("name=\"scored_tokens\""), std::string::npos);
  EXPECT_EQ(count(xe, "<failure "), 1);
}

TEST(Report, TextUsesLlamaCppLayout) {
  const VerifyReport r = make_report(1e-6, 0.0, 100.0);
  const std::string t = to_text(r);
  for (const char* label :
       {"====== Perplexity statistics ======", "Mean PPL(Q)                   : ", "Mean PPL(base)                : ",
        "Cor(ln(PPL(Q)), ln(PPL(base))): ", "Mean ln(PPL(Q)/PPL(base))     : ", "Mean PPL(Q)/PPL(base)         : ",
        "Mean PPL(Q)-PPL(base)         : ", "====== KL divergence statistics ======", "Mean    KLD: ", "Maximum KLD: ",
        "99.9%   KLD: ", "99.0%   KLD: ", "Median  KLD: ", " 0.1%   KLD: ", "Minimum KLD: ",
        "====== Token probability statistics ======", "Mean    Δp: ", "Maximum Δp: ", "75.0%   Δp: ",
        "25.0%   Δp: ", "Minimum Δp: ", "RMS Δp    : ", "Same top p: ", "Verdict: FAIL"})
    EXPECT_NE(t.find(label), std::string::npos) << label;
  char buf[64];
  std::snprintf(buf, sizeof buf, "Mean    KLD: %10.6lf ± %10.6lf\n", r.stats.kld.value, r.stats.kld.unc);
  EXPECT_NE(t.find(buf), std::string::npos) << buf;
  std::snprintf(buf, sizeof buf, "Same top p: %6.3lf ± %5.3lf %%\n", 100 * r.stats.same_top.value,
                100 * r.stats.same_top.unc);
  EXPECT_NE(t.find(buf), std::string::npos) << buf;
  EXPECT_NE(t.find("chunk             PPL               ln(PPL(Q)/PPL(base))"), std::string::npos);
  EXPECT_NE(to_text(VerifyReport{}).find("no tokens were scored"), std::string::npos);
}

TEST(Report, WritesReportDirectory) {
  TempDir tmp;
  const std::string dir = tmp.file("reports/run1");
  VerifyReport r = make_report(10.0, 0.0, 100.0);
  r.run.candidate = "cand\xff\xfe";  // not UTF-8: replaced, not fatal
  write_report_dir(dir, r);
  for (const char* f : {"report.json", "report.md", "report.html"}) EXPECT_TRUE(file_exists(path_join(dir, f))) << f;
  const auto j = nlohmann::json::parse(read_file(path_join(dir, "report.json")));
  EXPECT_EQ(j["verdict"], "pass");
  EXPECT_EQ(read_file(path_join(dir, "report.md")), to_markdown(r));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 3);  // no temporaries left
  moetool::testing::write_bytes(tmp.file("plain"), "x");
  EXPECT_THROW(write_report_dir(tmp.file("plain/sub"), r), Error);
}

// No thresholds: nothing was checked, and every report says so instead of PASS (exit code 0).
TEST(Report, NoThresholdsIsUncheckedEverywhere) {
  VerifyReport r = make_report(1, 1, 1);
  r.thresholds = {};
  EXPECT_EQ(verdict_name(r), "unchecked");
  EXPECT_TRUE(passed(r));
  const auto j = nlohmann::json::parse(to_json(r).dump());
  EXPECT_EQ(j["verdict"], "unchecked");
  EXPECT_TRUE(j["failures"].empty());
  EXPECT_TRUE(j["headline"]["mean_kld"]["limit"].is_null());
  const std::string h = to_html(r), md = to_markdown(r), t = to_text(r), x = to_junit(r);
  EXPECT_NE(h.find("<span class=\"badge unchecked\" id=\"verdict\">UNCHECKED</span>"), std::string::npos);
  EXPECT_NE(h.find("<title>moetool verify: UNCHECKED</title>"), std::string::npos);
  EXPECT_NE(md.find("moetool verify: UNCHECKED"), std::string::npos);
  EXPECT_NE(t.find("Verdict: UNCHECKED"), std::string::npos);
  for (const std::string* s : {&h, &md, &t}) EXPECT_EQ(s->find("PASS"), std::string::npos);
  EXPECT_EQ(xml_problem(x), "");
  EXPECT_NE(x.find("skipped=\"1\""), std::string::npos);
  EXPECT_NE(x.find("<skipped message=\"no thresholds were set"), std::string::npos);
  EXPECT_EQ(count(x, "<failure"), 0);
  // Nothing scored still fails, thresholds or not.
  EXPECT_EQ(verdict_name(VerifyReport{}), "fail");
}

// The headline row: the three deciding numbers with their limits, and sizes against the base.
TEST(Report, HeadlineRowHasTheDecidingNumbers) {
  VerifyReport r = make_report(0.5, 0.25, 3.0);
  r.run.candidate_bytes = 1000;
  r.run.base_bytes = 4000;
  r.run.base_params = 2000;
  const std::string h = to_html(r);
  const size_t hl = h.find("id=\"headline\"");
  ASSERT_NE(hl, std::string::npos);
  EXPECT_LT(h.find("id=\"verdict\""), hl);  // right under the badge
  EXPECT_LT(hl, h.find("<h2>"));
  for (const char* k : {"Mean KLD", "Top-1 agreement", "PPL ratio", "Size", "Bits per weight"})
    EXPECT_NE(h.find(std::string("<span class=\"k\">") + k + "</span>", hl), std::string::npos) << k;
  EXPECT_NE(h.find("(limit ≤ 0.5)"), std::string::npos);
  EXPECT_NE(h.find("(limit ≥ 25.00 %)"), std::string::npos);
  EXPECT_NE(h.find("4.00 (base 16.00)"), std::string::npos);  // 8·1000/2000, 8·4000/2000
  EXPECT_NE(h.find("25.0 % of the base"), std::string::npos);
  const auto j = nlohmann::json::parse(to_json(r).dump());
  EXPECT_DOUBLE_EQ(j["headline"]["candidate_bpw"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(j["headline"]["mean_kld"]["value"].get<double>(), r.stats.kld.value);
  EXPECT_DOUBLE_EQ(j["headline"]["same_top_p"]["limit"].get<double>(), 0.25);
}

// The worst positions are the largest KLDs, largest first, at the rows that produced them.
TEST(Report, WorstPositionsAreTheLargestKlds) {
  const int64_t n = 50, V = 30;
  const auto b = random_normal(3 * n * V, 21), noise = random_normal(3 * n * V, 22);
  auto c = b;
  for (size_t k = 0; k < c.size(); ++k) c[k] += 0.8f * noise[k];
  std::vector<int32_t> tok(3 * n, 1);
  VerifyAccumulator acc;
  std::vector<std::tuple<double, int64_t, int64_t>> all;  // (kld, chunk, row) computed here
  for (int k = 0; k < 3; ++k) {
    acc.add_chunk(&b[k * n * V], &c[k * n * V], &tok[k * n], n, V, 0);
    for (int64_t i = 0; i + 1 < n; ++i) {
      const float* x = &b[(k * n + i) * V];
      const float* y = &c[(k * n + i) * V];
      double zx = 0, zy = 0, kl = 0;
      for (int64_t v = 0; v < V; ++v) zx += std::exp(double(x[v])), zy += std::exp(double(y[v]));
      for (int64_t v = 0; v < V; ++v) {
        const double p = std::exp(double(x[v])) / zx, q = std::exp(double(y[v])) / zy;
        kl += p * std::log(p / q);
      }
      all.push_back({kl, k, i});
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
  const VerifyStats s = acc.finish();
  ASSERT_EQ(s.worst.size(), kWorstTokens);
  for (size_t i = 0; i < kWorstTokens; ++i) {
    EXPECT_NEAR(s.worst[i].kld, std::get<0>(all[i]), 1e-9) << i;
    EXPECT_EQ(s.worst[i].chunk, std::get<1>(all[i])) << i;
    EXPECT_EQ(s.worst[i].position, std::get<2>(all[i])) << i;
    const float* y = &c[(s.worst[i].chunk * n + s.worst[i].position) * V];
    EXPECT_EQ(s.worst[i].top_cand, std::max_element(y, y + V) - y);
  }
  EXPECT_DOUBLE_EQ(s.worst[0].kld, quantile_value(s.kld_q, 1.0));
  // Per-chunk KLD: weighted by their tokens, the chunks' means give the overall mean.
  double sum = 0;
  for (const auto& ch : s.chunks) sum += ch.chunk_kld * static_cast<double>(ch.chunk_tokens);
  EXPECT_NEAR(sum / static_cast<double>(s.n_tokens), s.kld.value, 1e-12);
  VerifyReport r;
  r.stats = s;
  r.stats.worst[0].context = "once upon a\ntime";
  r.stats.worst[0].next = "<x>";
  const std::string h = to_html(r);
  EXPECT_NE(h.find("id=\"worst\""), std::string::npos);
  EXPECT_NE(h.find("…once upon a⏎time"), std::string::npos);
  EXPECT_NE(h.find("&lt;x&gt;"), std::string::npos);
  EXPECT_NE(to_text(r).find("Largest KLD positions"), std::string::npos);
}

// A layer whose minimum cosine is far below the others' is flagged (plotted ringed, listed).
TEST(Report, FlagsALayerWhoseMinimumCosineIsFarBelow) {
  std::vector<LayerSimilarity> layers;
  const double mins[] = {0.99, 0.985, 0.992, 0.628, 0.988, 0.99};
  for (int l = 0; l < 6; ++l) layers.push_back({l, 100, 0.999, mins[l], 1e-3});
  EXPECT_EQ(flagged_layers(layers), std::vector<int64_t>{3});
  layers[3].min_cosine = 0.97;
  EXPECT_TRUE(flagged_layers(layers).empty());
  layers[3].min_cosine = 0.628;
  VerifyReport r = make_report(1, 0, 10);
  r.layers = layers;
  const std::string h = to_html(r);
  EXPECT_NE(h.find("Layer 3: its minimum cosine is far below"), std::string::npos);
  EXPECT_NE(h.find("class=\"pt s2 flag\""), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(to_json(r).dump())["layers_flagged"], nlohmann::json::array({3}));
}

TEST(Report, Escaping) {
  EXPECT_EQ(html_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
  EXPECT_EQ(html_escape(std::string("x\x01y")), "x\xEF\xBF\xBDy");
  EXPECT_EQ(html_escape("\xff"), "\xEF\xBF\xBD");
  EXPECT_EQ(html_escape("Δp ✓"), "Δp ✓");
  EXPECT_EQ(markdown_escape("a|b_c*<d>\n"), "a\\|b\\_c\\*&lt;d&gt; ");
}

}  // namespace
}  // namespace moetool
