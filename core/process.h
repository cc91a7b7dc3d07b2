// core/process.h — running another program (the moetool binary itself, for `moetool run`'s steps):
// argv as given (no shell), a working directory, stdout captured whole, stderr delivered line by
// line as it comes, and how the child ended.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace moetool {

struct ProcessResult {
  int exit_code = -1;  // the child's exit status, or −1 when it was killed by a signal
  int signal = 0;      // the signal that killed it (0: exited)
  std::string out;     // everything it wrote to stdout
  std::string err_tail;  // its last stderr lines (at most about 4 KiB)
  bool ok() const { return signal == 0 && exit_code == 0; }
  // "exit 2" / "killed by signal 9".
  std::string how() const;
};

// Runs argv[0] (a path) with argv in `cwd` (empty: ours). Each complete stderr line goes to
// `on_err_line` when given. Throws moetool::Error when the program cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& cwd,
                          const std::function<void(const std::string&)>& on_err_line = {});

// The path of the running executable (/proc/self/exe resolved).
std::string self_executable();

}  // namespace moetool
