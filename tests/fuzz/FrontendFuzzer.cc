// libFuzzer target: ONNX bytes -> import -> llmopt's verifier; what the verifier
// accepts must also print, export and (where libonnx 1.12 knows the versions) pass
// through onnx::checker without crashing. Rejections are fine; crashes, sanitizer
// reports and hangs are bugs.
#include <cstddef>
#include <cstdint>

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include "backend/onnx/OnnxExporter.h"
#include "frontend/OnnxImporter.h"
#include "ir/Printer.h"

namespace {

/// External data resolves against a directory that does not exist: a fuzz input
/// must never read files of the machine it runs on.
constexpr const char *kBaseDir = "/nonexistent/llmopt-fuzz";

/// libonnx 1.12 knows IR <= 8 and default-domain opsets <= 17 (DESIGN.md, frontend).
bool checkerKnows(const llmopt::Model &m) {
  if (m.irVersion > 8)
    return false;
  for (const auto &[domain, version] : m.opsets)
    if ((domain.empty() || domain == "ai.onnx") && version > 17)
      return false;
  return true;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto m = llmopt::importOnnxBytes(data, size, kBaseDir, "<fuzz>");
  if (!m)
    return 0;
  // The verifier accepted it: everything downstream must cope.
  (void)llmopt::printModel(**m);
  auto proto = llmopt::exportOnnx(**m);
  if (!proto)
    return 0;
  if (checkerKnows(**m)) {
    try {
      onnx::checker::check_model(*proto);
    } catch (const std::exception &) {
      // libonnx disagrees with llmopt's verifier: not a crash, nothing to do.
    }
  }
  return 0;
}
