// bench/bench_writer.cc — the safetensors writer on its own: copies a checkpoint tensor by tensor
// through SafetensorsWriter (mmap in, positional writes out, optional --max-shard-size) so its
// speed can be compared with `cp` of the same bytes in the same run (bench/bench_foundation.sh).
// Usage: bench_writer SRC_DIR DST_DIR [MAX_SHARD_BYTES]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <fstream>
#include <string>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"

using namespace moetool;

// Anonymous (heap) resident memory now, KiB — excludes the file-backed pages of the mapped input.
static long rss_anon_kib() {
  std::ifstream in("/proc/self/status");
  std::string k;
  long v = 0;
  while (in >> k) {
    if (k == "RssAnon:") {
      in >> v;
      return v;
    }
    std::getline(in, k);
  }
  return -1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SRC_DIR DST_DIR [MAX_SHARD_BYTES]\n", argv[0]);
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    Checkpoint c = Checkpoint::open(argv[1]);
    std::filesystem::create_directories(argv[2]);
    std::vector<TensorSpec> specs;
    for (const auto& n : c.names()) specs.push_back({n, c.info(n).dtype, c.info(n).shape});
    SafetensorsWriter w(argv[2], specs, c.files()[0]->metadata(), argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0);
    long peak_anon = rss_anon_kib();
    for (const auto& n : c.names()) {
      w.write(n, c.get(n));
      peak_anon = std::max(peak_anon, rss_anon_kib());
    }
    w.finish();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"bytes\": %llu, \"seconds\": %.3f, \"peak_anon_kib\": %ld}\n",
                static_cast<unsigned long long>(c.total_bytes()), s, peak_anon);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_writer: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
