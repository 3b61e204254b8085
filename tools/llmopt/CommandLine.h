// The llmopt command line: flags parsed into one struct, with errors that name the flag.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ir/Status.h"

namespace llmopt::cli {

struct Options {
  std::string input;
  std::string output;
  std::optional<std::string> passes;
  bool help = false, version = false, listPasses = false;
  bool printIr = false, printIrFull = false;
  std::string report; ///< "", "text" or "json" (to stdout)
  std::string reportJson; ///< --report-json FILE
  std::string reportPlot; ///< --report-plot FILE.svg
  int verbosity = 1;      ///< 0 --quiet, 1 normal, 2 -v
  bool printAfterAll = false, timePasses = false, verifyEach = false;
  std::vector<std::string> printAfter;
  std::vector<std::string> plugins;
  bool externalData = false;
  std::string calib, tokenizer;
  int64_t calibSamples = 32, calibSeqLen = 512, calibMemoryMiB = 4096;
  int threads = 0;
  int64_t accuracyLevel = 4;
  std::string target = "ort";
  std::string emit; ///< "" (ONNX) or "cpp" (--emit=cpp: -o names a directory)
};

/// Parses argv (without argv[0]). `-passes=` (LLVM's single dash) and `--passes=` are
/// both accepted; every flag also takes `--flag VALUE` where it has a value.
Expected<Options> parse(const std::vector<std::string> &args);

/// The --help text.
std::string helpText();

} // namespace llmopt::cli
