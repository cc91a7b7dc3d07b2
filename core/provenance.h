// core/provenance.h — what produced an output: moetool's version and the exact command line.
// Writers store it in file metadata (safetensors __metadata__, GGUF general.* keys, config.json).
#pragma once

#include <map>
#include <string>

namespace moetool {

struct Provenance {
  std::string version;  // moetool version
  std::string command;  // the command line, shell-quoted
  // Metadata entries: {"moetool.version": ..., "moetool.command": ...}.
  std::map<std::string, std::string> metadata() const;
};

// Provenance for argv, quoting arguments that contain shell metacharacters.
Provenance make_provenance(int argc, const char* const* argv);

}  // namespace moetool
