// Element types of tensors. Enumerator values equal ONNX's TensorProto.DataType.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace llmopt {

/// Element type. The numeric values are ONNX's TensorProto.DataType codes, so the
/// frontend and the writer convert with a cast; names are the IR's textual spelling.
enum class DType : int32_t {
#define LLMOPT_DTYPE(ENUM, CODE, NAME, BITS) ENUM = CODE,
#include "ir/DTypes.def"
};

/// Textual name (`f32`, `i4`, ...).
std::string_view dtypeName(DType t);
/// Parses a textual name; nullopt if unknown.
std::optional<DType> parseDType(std::string_view name);
/// Bits per element; 0 for strings and undefined.
int dtypeBits(DType t);
/// True if `code` is an ONNX data type code this IR knows.
bool isKnownDTypeCode(int32_t code);

inline bool isFloat(DType t) {
  switch (t) {
  case DType::F32: case DType::F16: case DType::BF16: case DType::F64:
  case DType::F8E4M3FN: case DType::F8E4M3FNUZ: case DType::F8E5M2: case DType::F8E5M2FNUZ:
  case DType::F4E2M1: case DType::F8E8M0:
    return true;
  default:
    return false;
  }
}
inline bool isSubByte(DType t) { int b = dtypeBits(t); return b > 0 && b < 8; }

/// Bytes needed to store `count` elements of `t` (sub-byte types packed, rounded up).
size_t storageBytes(DType t, int64_t count);

} // namespace llmopt
