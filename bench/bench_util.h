// bench/bench_util.h — helpers the bench_*.cc executables share: timed(), RUNS runs of a callable,
// printed as the fastest and the median run in ms and GB/s.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

namespace moetool::bench {

// Runs f `runs` times; prints "<what> fastest … median …", gbytes being the bytes one run moves (in GB).
inline void timed(const char* what, int runs, double gbytes, const std::function<void()>& f) {
  std::vector<double> s;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  std::printf("%-12s fastest %8.2f ms (%6.2f GB/s)  median %8.2f ms (%6.2f GB/s)\n", what, 1e3 * s[0], gbytes / s[0],
              1e3 * s[s.size() / 2], gbytes / s[s.size() / 2]);
}

}  // namespace moetool::bench
