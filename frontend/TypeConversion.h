// TypeProto / TensorProto -> IR conversions used by the ONNX importer.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

#include "ir/Tensor.h"
#include "ir/Type.h"

namespace onnx {
class TypeProto;
class TensorProto;
} // namespace onnx

namespace llmopt {

/// Where a tensor comes from: for messages and for resolving external data.
struct TensorSource {
  std::string source;  ///< The model file, for messages.
  std::string baseDir; ///< External data paths are relative to this directory.
  /// Files already mapped, by resolved path (shared across one import).
  std::unordered_map<std::string, std::shared_ptr<const MappedFile>> *mappings;
};

Expected<Type> convertType(const onnx::TypeProto &tp, const std::string &where);
/// Decodes a tensor, mmapping external data; refuses paths outside baseDir and
/// offsets/lengths outside the data file.
Expected<Tensor> convertTensor(const onnx::TensorProto &tp, const TensorSource &src);

} // namespace llmopt
