// Value types: tensors with symbolic shapes and optional quantization encodings,
// plus the sequence / optional / map / sparse types ONNX models may carry.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ir/DType.h"

namespace llmopt {

/// One dimension: a known size, a named symbol (`batch`), or unknown (`?`).
struct Dim {
  enum class Kind : uint8_t { Unknown, Static, Symbolic };
  Kind kind = Kind::Unknown;
  int64_t value = -1;
  std::string symbol;

  static Dim unknown() { return Dim{}; }
  static Dim of(int64_t v) { return Dim{Kind::Static, v, {}}; }
  static Dim sym(std::string s) { return Dim{Kind::Symbolic, -1, std::move(s)}; }
  bool isStatic() const { return kind == Kind::Static; }
  bool operator==(const Dim &) const = default;
};

using Dims = std::vector<Dim>;

/// How a quantized tensor's stored integers map back to real values:
///   real = (q - zero_point) * scale, with one scale per `blockSize` elements along
///   `axis` (blockSize == 0: one scale per slice of `axis`, i.e. per channel;
///   axis < 0 with blockSize == 0: one scale for the whole tensor).
struct QuantEncoding {
  DType storage = DType::I4;  ///< Stored element type (i4/u4/i8/u8/i2/u2).
  int bits = 4;               ///< Effective bits (3-bit values live in 4-bit containers).
  int axis = 0;               ///< Axis the blocks run along; -1 per-tensor.
  int64_t blockSize = 0;      ///< Elements per scale along `axis`; 0 per channel.
  bool symmetric = true;      ///< No zero points stored when true.
  bool operator==(const QuantEncoding &) const = default;
};

/// The type of an SSA value.
struct Type {
  enum class Kind : uint8_t { Unknown, Tensor, Sequence, Optional, Map, SparseTensor };
  Kind kind = Kind::Unknown;
  /// Element type of a tensor / sparse tensor; the *logical* (dequantized) type of a
  /// quantized tensor.
  DType elem = DType::Undefined;
  /// Dimensions, or nullopt when the rank is unknown.
  std::optional<Dims> dims;
  /// Element type of a sequence / optional, value type of a map.
  std::shared_ptr<Type> inner;
  /// Key type of a map.
  DType key = DType::Undefined;
  /// Set on quantized tensors.
  std::optional<QuantEncoding> quant;

  static Type unknown() { return Type{}; }
  static Type tensor(DType e, std::optional<Dims> d = std::nullopt) {
    Type t;
    t.kind = Kind::Tensor;
    t.elem = e;
    t.dims = std::move(d);
    return t;
  }
  static Type tensorOf(DType e, const std::vector<int64_t> &shape);

  bool isTensor() const { return kind == Kind::Tensor; }
  bool hasRank() const { return dims.has_value(); }
  int64_t rank() const { return dims ? static_cast<int64_t>(dims->size()) : -1; }
  /// True when every dimension is a known number.
  bool isStaticShape() const;
  /// The static shape; only valid when isStaticShape().
  std::vector<int64_t> staticShape() const;
  bool operator==(const Type &o) const;
};

/// Textual form, e.g. `f32[batch,seq,64]`, `seq<f32[?]>`, `i4[64,64]`.
std::string toString(const Type &t);
std::string toString(const Dim &d);

} // namespace llmopt
