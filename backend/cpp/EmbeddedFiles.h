// Source files compiled into llmopt that --emit=cpp copies into every emitted project: the
// run-time support (backend/cpp/runtime) and the CPU kernel library (backend/cpu/kernels).
#pragma once

#include <string_view>
#include <vector>

namespace llmopt::codegen {

struct EmbeddedFile {
  std::string_view path; ///< relative to llmopt's source root
  std::string_view text;
};
/// Generated at build time by EmbedFiles.cmake.
const std::vector<EmbeddedFile> &embeddedFiles();

} // namespace llmopt::codegen
