// cli/version.cc — the `moetool --version` text: version, whether the CUDA backend was built, the GPU.
#include "cli/commands.h"
#include "core/error.h"
#include "core/version.h"

namespace moetool::cli {

std::string version_string() {
  std::string s = str("moetool ", MOETOOL_VERSION, "\nCUDA backend: ", cuda_built() ? "built" : "not built");
  if (cuda_built()) s += str("\nGPU: ", cuda_device_summary());
  return s;
}

}  // namespace moetool::cli
