// tests/layering_test.cc — the architecture's layering, enforced: every #include of a library file
// must point at its own layer or one below it (core → formats → kernels → engine → verify | convert |
// compress → recipe → cli; the three passes' layers do not include each other). A wrong-way include fails
// this test. The rule itself is checked on a small tree that breaks it.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace moetool {
namespace {

namespace fs = std::filesystem;

// Rank of each library folder; equal ranks above engine are siblings that must not include each other.
const std::map<std::string, int>& layer_ranks() {
  static const std::map<std::string, int> r = {{"core", 0},   {"formats", 1}, {"kernels", 2},  {"engine", 3},
                                               {"verify", 4}, {"convert", 4}, {"compress", 4}, {"recipe", 5},
                                               {"cli", 6}};
  return r;
}

// "a.cc:12: formats/x.cc includes compress/y.h (compress is above formats)" for each violation.
std::vector<std::string> layering_violations(const std::string& root) {
  std::vector<std::string> out;
  const std::regex inc(R"(^\s*#\s*include\s*"([a-z_]+)/[^"]+")");
  for (const auto& [layer, rank] : layer_ranks()) {
    const fs::path dir = fs::path(root) / layer;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".h" && ext != ".cc" && ext != ".cu" && ext != ".cuh")) continue;
      std::ifstream f(e.path());
      std::string line;
      for (int n = 1; std::getline(f, line); ++n) {
        std::smatch m;
        if (!std::regex_search(line, m, inc)) continue;
        auto it = layer_ranks().find(m[1].str());
        if (it == layer_ranks().end() || it->first == layer) continue;
        if (it->second > rank || (it->second == rank && it->first != layer)) {
          const std::string rel = fs::relative(e.path(), root).string();
          out.push_back(str(rel, ":", n, ": includes ", m[1].str(), "/ (", it->first,
                            it->second > rank ? " is above " : " is a sibling of ", layer, ")"));
        }
      }
    }
  }
  return out;
}

TEST(Layering, EveryIncludePointsDownward) {
  const auto v = layering_violations(MOETOOL_SOURCE_DIR);
  std::string all;
  for (const auto& s : v) all += s + "\n";
  EXPECT_TRUE(v.empty()) << all;
}

TEST(Layering, AWrongWayIncludeIsFound) {
  testing::TempDir t;
  auto put = [&](const std::string& rel, const std::string& text) {
    fs::create_directories((fs::path(t.path()) / rel).parent_path());
    std::ofstream(fs::path(t.path()) / rel) << text;
  };
  put("formats/ok.cc", "#include \"core/error.h\"\n#include \"formats/ok.h\"\n");
  put("engine/ok.cc", "#include \"kernels/ops.h\"\n");
  put("formats/bad.cc", "#include <vector>\n\n#include \"compress/gptq.h\"\n");
  put("convert/bad.h", "#include \"compress/mckp.h\"\n");
  put("kernels/cuda/bad.cu", "  #include \"engine/engine.h\"\n");
  auto v = layering_violations(t.path());
  std::sort(v.begin(), v.end());
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0], "convert/bad.h:1: includes compress/ (compress is a sibling of convert)");
  EXPECT_EQ(v[1], "formats/bad.cc:3: includes compress/ (compress is above formats)");
  EXPECT_EQ(v[2], "kernels/cuda/bad.cu:1: includes engine/ (engine is above kernels)");
}

}  // namespace
}  // namespace moetool
