// core/process.cc — run_process with posix_spawn and two pipes read with poll (see process.h).
#include "core/process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

extern char** environ;

namespace moetool {

std::string ProcessResult::how() const {
  return signal ? str("killed by signal ", signal) : str("exit ", exit_code);
}

std::string self_executable() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) fail("cannot find the running executable (/proc/self/exe): ", ec.message());
  return p.string();
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& cwd,
                          const std::function<void(const std::string&)>& on_err_line) {
  check(!argv.empty(), "run_process: empty command");
  int out_p[2], err_p[2];
  if (pipe2(out_p, O_CLOEXEC) != 0 || pipe2(err_p, O_CLOEXEC) != 0)
    fail("cannot create pipes for ", argv[0], ": ", std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_p[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err_p[1], 2);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out_p[1]);
  close(err_p[1]);
  if (rc != 0) {
    close(out_p[0]);
    close(err_p[0]);
    fail("cannot start ", argv[0], ": ", std::strerror(rc));
  }
  ProcessResult r;
  std::string err_line;
  pollfd fds[2] = {{out_p[0], POLLIN, 0}, {err_p[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      if (i == 0) {
        r.out.append(buf, static_cast<size_t>(n));
        continue;
      }
      for (ssize_t k = 0; k < n; ++k) {
        if (buf[k] != '\n') {
          err_line += buf[k];
          continue;
        }
        if (on_err_line) on_err_line(err_line);
        r.err_tail += err_line + "\n";
        if (r.err_tail.size() > 4096) r.err_tail.erase(0, r.err_tail.size() - 4096);
        err_line.clear();
      }
    }
  }
  if (!err_line.empty()) {
    if (on_err_line) on_err_line(err_line);
    r.err_tail += err_line;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
  } else {
    r.exit_code = WEXITSTATUS(status);
  }
  return r;
}

}  // namespace moetool
