// Temporary file names for tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace llmopt::test {

/// `name` in the temporary directory, prefixed with this process's id. ctest runs every
/// test (every GoogleTest case) as its own process, in parallel: a fixed name races, one
/// process truncating a file another is still reading.
inline std::string tempPath(const std::string &name) {
  return (std::filesystem::temp_directory_path() / ("llmopt_" + std::to_string(::getpid()) + "_" + name)).string();
}

} // namespace llmopt::test
