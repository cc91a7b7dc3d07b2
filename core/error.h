// core/error.h — the one error type moetool's library throws, and helpers to build its messages.
// Library code never exits or prints; it throws moetool::Error with a message that names the file,
// the tensor (where there is one), what was expected and what was found. Only cli/ catches.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moetool {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates anything streamable into one string: str("expected ", 3, " got ", x).
template <class... A>
std::string str(A&&... a) {
  std::ostringstream os;
  (os << ... << std::forward<A>(a));
  return os.str();
}

// Throws moetool::Error with the concatenated message.
template <class... A>
[[noreturn]] void fail(A&&... a) {
  throw Error(str(std::forward<A>(a)...));
}

// Throws unless cond holds.
template <class... A>
void check(bool cond, A&&... a) {
  if (!cond) fail(std::forward<A>(a)...);
}

}  // namespace moetool
