// Model loading by extension: IR text, ONNX text, or ONNX protobuf.
#include "frontend/ModelLoader.h"

#include <fstream>
#include <sstream>

#include "frontend/InputChecks.h"
#include "frontend/OnnxImporter.h"
#include "ir/Parser.h"
#include "ir/Verifier.h"

namespace llmopt {

static bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

static Expected<std::string> readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("{}: cannot open", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

static Expected<std::unique_ptr<Model>> loadUnchecked(const std::string &path) {
  if (endsWith(path, ".llir")) {
    LLMOPT_ASSIGN_OR_RETURN(std::string text, readText(path));
    LLMOPT_ASSIGN_OR_RETURN(auto m, parseModel(text, path));
    LLMOPT_RETURN_IF_ERROR(verify(*m).withContext(path));
    return m;
  }
  if (endsWith(path, ".onnxtxt")) {
    LLMOPT_ASSIGN_OR_RETURN(std::string text, readText(path));
    auto m = importOnnxText(text);
    if (!m)
      return m.status().withContext(path);
    return m;
  }
  return importOnnxFile(path);
}

Expected<std::unique_ptr<Model>> loadModel(const std::string &path) {
  LLMOPT_ASSIGN_OR_RETURN(auto m, loadUnchecked(path));
  LLMOPT_RETURN_IF_ERROR(checkInputModel(*m, path));
  return m;
}

} // namespace llmopt
