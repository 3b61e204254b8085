// Decoding of ONNX types and tensors (typed fields, raw_data, external data).
#include "frontend/TypeConversion.h"

#include <filesystem>

#include <onnx/onnx_pb.h>

namespace llmopt {

namespace fs = std::filesystem;

Expected<Type> convertType(const onnx::TypeProto &tp, const std::string &where) {
  auto tensorLike = [&](int32_t elem, bool hasShape,
                        const onnx::TensorShapeProto &shape) -> Expected<Type> {
    if (!isKnownDTypeCode(elem))
      return errorf("{}: unknown element type code {}", where, elem);
    Type t = Type::tensor(static_cast<DType>(elem));
    if (hasShape) {
      Dims dims;
      for (const auto &d : shape.dim()) {
        if (d.has_dim_value()) {
          if (d.dim_value() < 0)
            return errorf("{}: negative dimension {}", where, d.dim_value());
          dims.push_back(Dim::of(d.dim_value()));
        } else if (d.has_dim_param() && !d.dim_param().empty()) {
          dims.push_back(Dim::sym(d.dim_param()));
        } else {
          dims.push_back(Dim::unknown());
        }
      }
      t.dims = std::move(dims);
    }
    return t;
  };
  switch (tp.value_case()) {
  case onnx::TypeProto::kTensorType:
    return tensorLike(tp.tensor_type().elem_type(), tp.tensor_type().has_shape(),
                      tp.tensor_type().shape());
  case onnx::TypeProto::kSparseTensorType: {
    LLMOPT_ASSIGN_OR_RETURN(Type t, tensorLike(tp.sparse_tensor_type().elem_type(),
                                               tp.sparse_tensor_type().has_shape(),
                                               tp.sparse_tensor_type().shape()));
    t.kind = Type::Kind::SparseTensor;
    return t;
  }
  case onnx::TypeProto::kSequenceType: {
    Type t;
    t.kind = Type::Kind::Sequence;
    if (tp.sequence_type().has_elem_type()) {
      LLMOPT_ASSIGN_OR_RETURN(Type inner, convertType(tp.sequence_type().elem_type(), where));
      t.inner = std::make_shared<Type>(std::move(inner));
    }
    return t;
  }
  case onnx::TypeProto::kOptionalType: {
    Type t;
    t.kind = Type::Kind::Optional;
    if (tp.optional_type().has_elem_type()) {
      LLMOPT_ASSIGN_OR_RETURN(Type inner, convertType(tp.optional_type().elem_type(), where));
      t.inner = std::make_shared<Type>(std::move(inner));
    }
    return t;
  }
  case onnx::TypeProto::kMapType: {
    Type t;
    t.kind = Type::Kind::Map;
    if (!isKnownDTypeCode(tp.map_type().key_type()))
      return errorf("{}: unknown map key type {}", where, tp.map_type().key_type());
    t.key = static_cast<DType>(tp.map_type().key_type());
    if (tp.map_type().has_value_type()) {
      LLMOPT_ASSIGN_OR_RETURN(Type inner, convertType(tp.map_type().value_type(), where));
      t.inner = std::make_shared<Type>(std::move(inner));
    }
    return t;
  }
  default:
    return Type::unknown();
  }
}

// Resolves an external-data location inside baseDir; refuses anything that escapes it.
static Expected<std::string> resolveExternal(const std::string &location, const TensorSource &src,
                                             const std::string &tensorName) {
  fs::path loc(location);
  if (location.empty() || loc.is_absolute())
    return errorf("{}: tensor '{}': external data location '{}' must be a relative path inside "
                  "the model's directory",
                  src.source, tensorName, location);
  for (const auto &part : loc)
    if (part == "..")
      return errorf("{}: tensor '{}': external data location '{}' escapes the model's directory",
                    src.source, tensorName, location);
  std::error_code ec;
  fs::path base = fs::weakly_canonical(fs::path(src.baseDir), ec);
  fs::path full = fs::weakly_canonical(base / loc, ec);
  auto rel = full.lexically_relative(base);
  if (ec || rel.empty() || *rel.begin() == "..")
    return errorf("{}: tensor '{}': external data location '{}' resolves outside the model's "
                  "directory",
                  src.source, tensorName, location);
  return full.string();
}

static Expected<Tensor> externalTensor(const onnx::TensorProto &tp, DType dt,
                                       std::vector<int64_t> shape, const TensorSource &src) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto &kv : tp.external_data()) {
    try {
      if (kv.key() == "location")
        location = kv.value();
      else if (kv.key() == "offset")
        offset = std::stoll(kv.value());
      else if (kv.key() == "length")
        length = std::stoll(kv.value());
    } catch (const std::exception &) {
      return errorf("{}: tensor '{}': external data field '{}' is not a number: '{}'", src.source,
                    tp.name(), kv.key(), kv.value());
    }
  }
  LLMOPT_ASSIGN_OR_RETURN(std::string path, resolveExternal(location, src, tp.name()));
  std::shared_ptr<const MappedFile> &file = (*src.mappings)[path];
  if (!file) {
    auto opened = MappedFile::open(path);
    if (!opened)
      return opened.status().withContext(
          fmt::format("{}: tensor '{}': external data", src.source, tp.name()));
    file = *opened;
  }
  int64_t numel = 1;
  for (int64_t d : shape)
    numel *= d;
  const size_t need = storageBytes(dt, numel);
  if (length < 0)
    length = static_cast<int64_t>(need);
  if (offset < 0 || static_cast<size_t>(length) != need ||
      static_cast<size_t>(offset) + need > file->size())
    return errorf("{}: tensor '{}': external data offset {} length {} does not fit: the tensor "
                  "needs {} bytes and '{}' has {}",
                  src.source, tp.name(), offset, length, need, location, file->size());
  return Tensor::fromMapping(dt, std::move(shape), file, static_cast<size_t>(offset));
}

template <typename Field, typename Elem>
static Tensor fromTyped(DType dt, std::vector<int64_t> shape, const Field &f) {
  Tensor t = Tensor::zeros(dt, std::move(shape));
  auto out = t.mutableView<Elem>();
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<Elem>(f.Get(static_cast<int>(i)));
  return t;
}

Expected<Tensor> convertTensor(const onnx::TensorProto &tp, const TensorSource &src) {
  const int32_t code = tp.data_type();
  if (!isKnownDTypeCode(code) || code == 0)
    return errorf("{}: tensor '{}': unknown data type code {}", src.source, tp.name(), code);
  if (tp.has_segment())
    return errorf("{}: tensor '{}': segmented tensors are not supported", src.source, tp.name());
  const DType dt = static_cast<DType>(code);
  std::vector<int64_t> shape;
  constexpr int64_t kMaxElements = int64_t(1) << 40;
  int64_t numel = 1;
  for (int64_t d : tp.dims()) {
    if (d < 0 || d > kMaxElements)
      return errorf("{}: tensor '{}': dimension {} is out of range", src.source, tp.name(), d);
    shape.push_back(d);
    // Checked before multiplying: two in-range dimensions can overflow int64 (found by fuzzing).
    if (d != 0 && numel > kMaxElements / d)
      return errorf("{}: tensor '{}': dims [{}] hold over 2^40 elements, beyond any real model",
                    src.source, tp.name(), fmt::join(tp.dims(), ", "));
    numel *= d;
  }
  if (tp.data_location() == onnx::TensorProto::EXTERNAL)
    return externalTensor(tp, dt, std::move(shape), src);
  auto sizeError = [&](size_t have) {
    return errorf("{}: tensor '{}': has {} values, its shape needs {}", src.source, tp.name(),
                  have, numel);
  };
  if (dt == DType::String) {
    if (tp.string_data_size() != numel)
      return sizeError(static_cast<size_t>(tp.string_data_size()));
    return Tensor::strings(std::move(shape), {tp.string_data().begin(), tp.string_data().end()});
  }
  const size_t need = storageBytes(dt, numel);
  if (tp.has_raw_data()) {
    if (tp.raw_data().size() != need)
      return errorf("{}: tensor '{}': raw_data has {} bytes, {} {} needs {}", src.source,
                    tp.name(), tp.raw_data().size(), dtypeName(dt), toString(Type::tensorOf(dt, shape)),
                    need);
    return Tensor::fromBytes(dt, std::move(shape), tp.raw_data().data(), need);
  }
  switch (dt) {
  case DType::F32:
    if (tp.float_data_size() != numel) return sizeError(static_cast<size_t>(tp.float_data_size()));
    return fromTyped<decltype(tp.float_data()), float>(dt, shape, tp.float_data());
  case DType::F64:
    if (tp.double_data_size() != numel) return sizeError(static_cast<size_t>(tp.double_data_size()));
    return fromTyped<decltype(tp.double_data()), double>(dt, shape, tp.double_data());
  case DType::I64:
    if (tp.int64_data_size() != numel) return sizeError(static_cast<size_t>(tp.int64_data_size()));
    return fromTyped<decltype(tp.int64_data()), int64_t>(dt, shape, tp.int64_data());
  case DType::U64: case DType::U32:
    if (tp.uint64_data_size() != numel) return sizeError(static_cast<size_t>(tp.uint64_data_size()));
    if (dt == DType::U64)
      return fromTyped<decltype(tp.uint64_data()), uint64_t>(dt, shape, tp.uint64_data());
    return fromTyped<decltype(tp.uint64_data()), uint32_t>(dt, shape, tp.uint64_data());
  case DType::I32:
    if (tp.int32_data_size() != numel) return sizeError(static_cast<size_t>(tp.int32_data_size()));
    return fromTyped<decltype(tp.int32_data()), int32_t>(dt, shape, tp.int32_data());
  case DType::I16:
    if (tp.int32_data_size() != numel) return sizeError(static_cast<size_t>(tp.int32_data_size()));
    return fromTyped<decltype(tp.int32_data()), int16_t>(dt, shape, tp.int32_data());
  case DType::U16: case DType::F16: case DType::BF16:
    if (tp.int32_data_size() != numel) return sizeError(static_cast<size_t>(tp.int32_data_size()));
    return fromTyped<decltype(tp.int32_data()), uint16_t>(dt, shape, tp.int32_data());
  case DType::I8:
    if (tp.int32_data_size() != numel) return sizeError(static_cast<size_t>(tp.int32_data_size()));
    return fromTyped<decltype(tp.int32_data()), int8_t>(dt, shape, tp.int32_data());
  case DType::U8: case DType::Bool: case DType::F8E4M3FN: case DType::F8E4M3FNUZ:
  case DType::F8E5M2: case DType::F8E5M2FNUZ: case DType::F8E8M0:
    if (tp.int32_data_size() != numel) return sizeError(static_cast<size_t>(tp.int32_data_size()));
    return fromTyped<decltype(tp.int32_data()), uint8_t>(dt, shape, tp.int32_data());
  case DType::I4: case DType::U4: case DType::F4E2M1: case DType::I2: case DType::U2: {
    // Sub-byte types: int32_data holds the packed bytes, one per entry.
    if (static_cast<size_t>(tp.int32_data_size()) != need)
      return sizeError(static_cast<size_t>(tp.int32_data_size()));
    Tensor t = Tensor::zeros(dt, shape);
    uint8_t *p = t.mutableData();
    for (size_t i = 0; i < need; ++i)
      p[i] = static_cast<uint8_t>(tp.int32_data(static_cast<int>(i)));
    return t;
  }
  case DType::C64:
    if (tp.float_data_size() != 2 * numel) return sizeError(static_cast<size_t>(tp.float_data_size()) / 2);
    return fromTyped<decltype(tp.float_data()), float>(dt, shape, tp.float_data());
  case DType::C128:
    if (tp.double_data_size() != 2 * numel) return sizeError(static_cast<size_t>(tp.double_data_size()) / 2);
    return fromTyped<decltype(tp.double_data()), double>(dt, shape, tp.double_data());
  default:
    return errorf("{}: tensor '{}': cannot decode data of type {}", src.source, tp.name(),
                  dtypeName(dt));
  }
}

} // namespace llmopt
