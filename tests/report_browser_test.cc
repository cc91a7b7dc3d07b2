// tests/report_browser_test.cc — report.html as a person sees it: a real verify report of a small
// MoE (routing section included) rendered in headless Chromium by scripts/check_report_html.py,
// which checks the badge, the headline row, the routing section, that the plots draw, and that no
// console message appears. Skips visibly where no Chromium is installed (scripts/setup.sh installs
// chromium-headless-shell).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "compress/prune.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"
#include "verify/report.h"
#include "verify/verify_job.h"

namespace moetool {
namespace {

TEST(ReportBrowser, RendersInHeadlessChromium) {
  testing::TempDir d;
  verify::Options o;
  o.base = testing::synth_in(d, "base", "mixtral", 3);
  prune::Options po;  // a pruned candidate: every section has something to draw
  po.model = o.base;
  po.output = d.file("pruned");
  po.keep = 6;
  po.method = "frequency";
  po.ctx = 64;
  po.calib_texts = {testing::seeded_text(d, 5, 600)};
  prune::run(po);
  o.candidate = po.output;
  o.text = testing::seeded_text(d, 4, 600);
  o.ctx = 64;
  o.chunks = 3;
  const verify::Result r = verify::run(o);
  write_report_dir(d.file("report"), r.report);
  const testing::RunResult c =
      testing::check_html_in_chromium(d.file("report/report.html"), d.file("shots"), {"--expect-routing"});
  if (c.exit_code == 77) GTEST_SKIP() << c.out;
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
  std::printf("%s", c.out.c_str());
}

}  // namespace
}  // namespace moetool
