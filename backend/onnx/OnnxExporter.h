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
  /// Force external data (otherwise used only when the weights exceed `autoExternalBytes`
  /// or some are mapped from a file: a model read with external data keeps that form).
  bool externalData = false;
  size_t autoExternalBytes = size_t(1800) << 20;
  /// File name of the external data, next to the model; default "<model file>.data".
  std::string externalFile;
  /// What quantized constants become (see backend/onnx/QuantLowering.h and
  /// docs/quantization.md): "ort" (default) writes com.microsoft MatMulNBits /
  /// GatherBlockQuantized where they apply; "onnx" writes only standard ops
  /// (DequantizeLinear, opset 21 for blocked / 4-bit weights).
  std::string target = "ort";
  /// MatMulNBits accuracy_level (4: ONNX Runtime's CPU int8 compute path).
  int64_t accuracyLevel = 4;
};

/// Builds the ModelProto. Tensors stay inline (no external data).
Expected<onnx::ModelProto> exportOnnx(const Model &m, const ExportOptions &opts = {});

/// Writes `m` to `path`: a temporary file renamed into place, so a failure leaves no
/// output (and no stale external data file).
Status saveOnnx(const Model &m, const std::string &path, const ExportOptions &opts = {});

/// Writes one tensor as a serialized onnx.TensorProto (raw_data), atomically: the
/// format of ONNX's test data (`input_0.pb`).
Status saveTensorProto(const Tensor &t, const std::string &name, const std::string &path);

} // namespace llmopt
