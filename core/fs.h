// core/fs.h — file helpers that keep outputs honest: read a whole file; write a file atomically
// (temporary name, fsync-free rename when complete); and OutputDir, which stages a whole output
// directory beside its destination and moves it into place only on commit(), so an interrupted or
// failed run never leaves an output that looks complete.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moetool {

// Whole file as bytes; throws moetool::Error naming the file.
std::string read_file(const std::string& path);
// Writes `bytes` to `path` via "<path>.tmp-<pid>" and rename.
void write_file_atomic(const std::string& path, std::string_view bytes);
// Reads exactly n bytes at `offset` of the file at `path` into dst (pread: no mapping, no page faults
// on a mapping). Throws naming the file on a short or failed read.
void read_file_range(const std::string& path, uint64_t offset, size_t n, void* dst);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
uint64_t file_size(const std::string& path);
// "a/b" + "c" -> "a/b/c".
std::string path_join(const std::string& a, const std::string& b);

// Throws (naming `path`) if it exists and is not an empty directory, unless `overwrite`: what OutputDir
// checks, for jobs that want to refuse before long work rather than after it.
void check_output_free(const std::string& path, bool overwrite);

class OutputDir {
 public:
  // Prepares a staging directory "<final>.tmp-<pid>" beside `final_path`. If `final_path` exists and
  // is not an empty directory, throws unless `overwrite` is set (then it is replaced on commit).
  OutputDir(std::string final_path, bool overwrite);
  ~OutputDir();  // removes the staging directory unless committed
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  const std::string& staging() const { return staging_; }  // write files here
  std::string file(const std::string& name) const { return path_join(staging_, name); }
  const std::string& final_path() const { return final_; }
  void commit();  // moves the staged directory to its final path

 private:
  std::string final_, staging_;
  bool overwrite_ = false, committed_ = false;
};

}  // namespace moetool

namespace moetool {
// Parses a byte size like "5GB", "500MB", "2GiB", "1048576" (decimal units are powers of 1000,
// binary ones of 1024). Throws moetool::Error naming `what` on a malformed value.
uint64_t parse_byte_size(const std::string& s, const std::string& what);
}  // namespace moetool
