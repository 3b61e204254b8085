// Constant tensor data: raw little-endian bytes in ONNX's layout (sub-byte types
// packed two/four per byte, first element in the low bits), owned or mmapped.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ir/DType.h"
#include "ir/Status.h"
#include "ir/Type.h"

namespace llmopt {

/// A read-only mapping of a whole file; tensors alias into it and keep it alive.
class MappedFile {
public:
  static Expected<std::shared_ptr<MappedFile>> open(const std::string &path);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;
  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }
  const std::string &path() const { return path_; }
  /// Tells the kernel the pages in [offset, offset+len) may be dropped from RSS.
  void release(size_t offset, size_t len) const;

private:
  MappedFile() = default;
  const uint8_t *data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

/// Dense constant data. Copies share storage; writing goes through mutableData(),
/// which copies first when the storage is shared or mapped.
class Tensor {
public:
  Tensor() = default;
  /// A zero-filled tensor of the given type and shape.
  static Tensor zeros(DType dt, std::vector<int64_t> shape);
  /// A tensor copying `bytes` (must be storageBytes(dt, numel) long).
  static Tensor fromBytes(DType dt, std::vector<int64_t> shape, const void *bytes, size_t n);
  /// A tensor aliasing `len` bytes at `offset` of a mapped file.
  static Tensor fromMapping(DType dt, std::vector<int64_t> shape,
                            std::shared_ptr<const MappedFile> file, size_t offset);
  static Tensor strings(std::vector<int64_t> shape, std::vector<std::string> values);
  template <typename T> static Tensor fromVector(DType dt, std::vector<int64_t> shape,
                                                 const std::vector<T> &v) {
    return fromBytes(dt, std::move(shape), v.data(), v.size() * sizeof(T));
  }
  template <typename T> static Tensor scalar(DType dt, T v) {
    return fromBytes(dt, {}, &v, sizeof(T));
  }

  DType dtype() const { return dtype_; }
  const std::vector<int64_t> &shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t numel() const;
  size_t nbytes() const { return nbytes_; }
  const uint8_t *data() const { return data_.get(); }
  uint8_t *mutableData();
  template <typename T> std::span<const T> view() const {
    return {reinterpret_cast<const T *>(data()), nbytes_ / sizeof(T)};
  }
  template <typename T> std::span<T> mutableView() {
    return {reinterpret_cast<T *>(mutableData()), nbytes_ / sizeof(T)};
  }
  const std::vector<std::string> &stringData() const { return strings_; }
  bool isMapped() const { return mapped_; }
  /// The mapping this tensor aliases, if any (for releasing pages after use).
  const std::shared_ptr<const MappedFile> &mapping() const { return file_; }
  size_t mappingOffset() const { return mapOffset_; }

  /// Reads element `i` converted to double (numeric dtypes only; sub-byte unpacked).
  double getDouble(int64_t i) const;
  /// Reads element `i` as int64 (integer and bool dtypes).
  int64_t getInt(int64_t i) const;
  /// Elements as int64s (integer dtypes); used for shapes, axes and indices.
  std::vector<int64_t> toInts() const;
  /// Elements as float (numeric dtypes incl. f16/bf16); allocates.
  std::vector<float> toFloats() const;

  /// A 64-bit FNV-1a hash of dtype, shape and bytes (deterministic across runs).
  uint64_t hash() const;
  bool sameContents(const Tensor &o) const;
  Type type() const { return Type::tensorOf(dtype_, shape_); }
  /// The same data (shared, not copied) viewed with another shape of equal numel.
  Tensor reshaped(std::vector<int64_t> shape) const;

  /// Quantization side data for quantized constants (see QuantEncoding).
  std::shared_ptr<Tensor> scales;
  std::shared_ptr<Tensor> zeroPoints;

private:
  DType dtype_ = DType::Undefined;
  std::vector<int64_t> shape_;
  std::shared_ptr<const uint8_t> data_;
  size_t nbytes_ = 0;
  bool mapped_ = false;
  std::shared_ptr<const MappedFile> file_;
  size_t mapOffset_ = 0;
  std::vector<std::string> strings_;
};

/// IEEE half <-> float and bfloat16 <-> float conversions (round to nearest even).
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);
float bf16ToFloat(uint16_t b);
uint16_t floatToBf16(float f);

} // namespace llmopt
