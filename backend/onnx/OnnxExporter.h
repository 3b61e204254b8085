// ONNX writer: IR -> ModelProto -> file, atomically, with external data for big weights.
#pragma once

#include <string>

#include "ir/Graph.h"

namespace onnx {
class ModelProto;
}

namespace llmopt {

struct ExportOptions {
  /// Tensors of at least this many bytes go to the external data file when external
  /// data is in use.
  size_t externalThreshold = 1024;
  /// Force external data (otherwise used only when the weights exceed `autoExternalBytes`).
  bool externalData = false;
  size_t autoExternalBytes = size_t(1800) << 20;
  /// File name of the external data, next to the model; default "<model file>.data".
  std::string externalFile;
};

/// Builds the ModelProto. Tensors stay inline (no external data).
Expected<onnx::ModelProto> exportOnnx(const Model &m);

/// Writes `m` to `path`: a temporary file renamed into place, so a failure leaves no
/// output (and no stale external data file).
Status saveOnnx(const Model &m, const std::string &path, const ExportOptions &opts = {});

} // namespace llmopt
