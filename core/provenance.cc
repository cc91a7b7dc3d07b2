// core/provenance.cc — version and command-line provenance (see provenance.h).
#include "core/provenance.h"

#include "core/error.h"
#include "core/version.h"

namespace moetool {

std::map<std::string, std::string> Provenance::metadata() const {
  return {{"moetool.version", version}, {"moetool.command", command}};
}

static std::string shell_quote(const std::string& a) {
  if (!a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") ==
                        std::string::npos)
    return a;
  std::string q = "'";
  for (char c : a) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Provenance make_provenance(int argc, const char* const* argv) {
  Provenance p;
  p.version = MOETOOL_VERSION;
  for (int i = 0; i < argc; ++i) p.command += (i ? " " : "") + shell_quote(argv[i]);
  return p;
}

}  // namespace moetool
