// Replays fuzz inputs through LLVMFuzzerTestOneInput without libFuzzer, so CI (GCC,
// no fuzzer runtime) runs every kept crash input: `llmopt-fuzz-replay FILE|DIR...`.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace fs = std::filesystem;

static bool replay(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "llmopt-fuzz-replay: %s: cannot open\n", p.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
  return true;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: llmopt-fuzz-replay FILE|DIR...\n");
    return 1;
  }
  size_t n = 0;
  for (int i = 1; i < argc; ++i) {
    fs::path arg(argv[i]);
    std::vector<fs::path> files;
    if (fs::is_directory(arg)) {
      for (const auto &e : fs::recursive_directory_iterator(arg))
        if (e.is_regular_file() && e.path().filename() != "README.md")
          files.push_back(e.path());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(arg);
    }
    for (const auto &f : files) {
      if (!replay(f))
        return 1;
      ++n;
    }
  }
  std::printf("llmopt-fuzz-replay: %zu inputs, no crash\n", n);
  return 0;
}
