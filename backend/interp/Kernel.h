// Internal to the interpreter: the kernel table entry, per-family registration,
// and the helpers kernels share (errors, dtype dispatch, shapes, broadcasting, threads).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ir/Graph.h"
#include "ir/Status.h"
#include "ir/Tensor.h"

namespace llmopt::interp {

using TensorList = std::vector<Tensor>;
using InputList = std::vector<const Tensor *>;
using KernelFn = Expected<TensorList> (*)(const Node &, const InputList &);

/// One kernel: the op it implements and the opset versions whose semantics it follows.
struct KernelDef {
  OpKind kind;
  KernelFn fn;
  int64_t minVersion = 1;
  int64_t maxVersion = std::numeric_limits<int64_t>::max();
  /// f16 / bf16 inputs are computed in f32 and f32 outputs rounded back (see run()).
  bool halfAsFloat = false;
  /// Bit i: input i may be absent although it lies within Ops.def's minimum arity
  /// (an optional input before a required one).
  uint32_t optionalInputs = 0;
};

using KernelTable = std::vector<KernelDef>;
void addElementwiseKernels(KernelTable &t);
void addShapeKernels(KernelTable &t);
void addMovementKernels(KernelTable &t);
void addReduceKernels(KernelTable &t);
void addNnKernels(KernelTable &t);
void addMatMulKernels(KernelTable &t);
void addEinsumKernel(KernelTable &t);
void addQuantKernels(KernelTable &t);
void addMatMulNBitsKernel(KernelTable &t);
void addIndexKernels(KernelTable &t);
void addContribKernels(KernelTable &t);
void addAttentionKernels(KernelTable &t);

// ---------------------------------------------------------------- errors and attributes

/// `node 'name' (com.microsoft::MatMulNBits)`.
std::string nodeLabel(const Node &n);

template <typename... Args>
Status nodeError(const Node &n, fmt::format_string<Args...> f, Args &&...args) {
  return Status::error(nodeLabel(n) + ": " + fmt::format(f, std::forward<Args>(args)...));
}

/// The node's opset version; a node outside a model follows the latest semantics.
int64_t opsetOf(const Node &n);

/// Input `i` or null when absent.
inline const Tensor *optInput(const InputList &in, size_t i) {
  return i < in.size() ? in[i] : nullptr;
}

/// Input `i`, or an error naming `what` when it is absent (for inputs that opsets
/// made required after Ops.def's minimum arity).
Expected<const Tensor *> needInput(const Node &n, const InputList &in, size_t i, std::string_view what);

/// A Tensor-valued attribute or null.
const Tensor *attrTensor(const Node &n, std::string_view name);

// ---------------------------------------------------------------- dtypes

std::string dtypeStr(DType t);
inline bool isHalfType(DType t) { return t == DType::F16 || t == DType::BF16; }
inline bool isIntType(DType t) {
  switch (t) {
  case DType::I8: case DType::I16: case DType::I32: case DType::I64:
  case DType::U8: case DType::U16: case DType::U32: case DType::U64:
    return true;
  default:
    return false;
  }
}
/// Bytes per element for byte-addressable types; 0 for sub-byte, strings and undefined.
inline size_t elemBytes(DType t) {
  int b = dtypeBits(t);
  return (t == DType::String || b < 8) ? 0 : static_cast<size_t>(b / 8);
}

#define LLMOPT_INTERP_NUMERIC_CASES(f)                                                             \
  case DType::F32: return f(float{});                                                              \
  case DType::F64: return f(double{});                                                             \
  case DType::I8: return f(int8_t{});                                                              \
  case DType::I16: return f(int16_t{});                                                            \
  case DType::I32: return f(int32_t{});                                                            \
  case DType::I64: return f(int64_t{});                                                            \
  case DType::U8: return f(uint8_t{});                                                             \
  case DType::U16: return f(uint16_t{});                                                           \
  case DType::U32: return f(uint32_t{});                                                           \
  case DType::U64: return f(uint64_t{});
#define LLMOPT_INTERP_TYPE_CASES(f)                                                                \
  LLMOPT_INTERP_NUMERIC_CASES(f)                                                                   \
  case DType::Bool: return f(bool{});

/// Calls f(T{}) with the C++ type of `dt` (float, double, intN_t, uintN_t, bool);
/// other dtypes yield an error naming the node. R must be constructible from Status.
template <typename F> auto visitType(const Node &n, DType dt, F &&f) -> decltype(f(float{})) {
  switch (dt) {
    LLMOPT_INTERP_TYPE_CASES(f)
  default: return nodeError(n, "element type {} is not supported", dtypeStr(dt));
  }
}
/// visitType without a node to name in the error.
template <typename F> auto visitTypeAnon(DType dt, F &&f) -> decltype(f(float{})) {
  switch (dt) {
    LLMOPT_INTERP_TYPE_CASES(f)
  default: return errorf("element type {} is not supported", dtypeStr(dt));
  }
}
/// Like visitType for numeric types only (no bool).
template <typename F> auto visitNumeric(const Node &n, DType dt, F &&f) -> decltype(f(float{})) {
  switch (dt) {
    LLMOPT_INTERP_NUMERIC_CASES(f)
  default: return nodeError(n, "element type {} is not supported", dtypeStr(dt));
  }
}
/// Floating types only (f16 / bf16 arrive here already widened to f32).
template <typename F> auto visitFloat(const Node &n, DType dt, F &&f) -> decltype(f(float{})) {
  switch (dt) {
  case DType::F32: return f(float{});
  case DType::F64: return f(double{});
  default: return nodeError(n, "element type {} is not supported (expected a float type)", dtypeStr(dt));
  }
}

template <typename T> DType dtypeOf();

template <typename T> const T *dataOf(const Tensor &t) {
  return reinterpret_cast<const T *>(t.data());
}
template <typename T> T *mutableDataOf(Tensor &t) { return reinterpret_cast<T *>(t.mutableData()); }

/// Widens f16 / bf16 to f32 (other dtypes returned as they are).
Tensor widenHalf(const Tensor &t);
/// Converts between any two numeric dtypes (incl. f16, bf16, bool, i4/u4): float to
/// integer truncates toward zero, to bool tests != 0, to f16 / bf16 rounds to nearest even.
Expected<Tensor> castTensor(const Tensor &t, DType to);

// ---------------------------------------------------------------- shapes

using Shape = std::vector<int64_t>;
int64_t numelOf(const Shape &s);
Shape stridesOf(const Shape &s);
std::string shapeStr(const Shape &s);
/// Normalizes `axis` into [0, rank); error when out of range.
Expected<int64_t> normalizeAxis(const Node &n, int64_t axis, int64_t rank);
/// Integer contents of a 1-D / scalar integer tensor (shapes, axes, indices).
Expected<std::vector<int64_t>> readInts(const Node &n, const Tensor &t, std::string_view what);
/// Numpy broadcast of several shapes; error naming the node when incompatible.
Expected<Shape> broadcastShapes(const Node &n, const std::vector<const Shape *> &shapes);

/// A broadcast iteration plan: the output as rows of `inner` elements; each input
/// advances by innerStride (0 or 1) inside a row and starts at rowOffset(r).
struct BroadcastPlan {
  Shape dims;                            ///< Collapsed output dims (at least one).
  std::vector<Shape> strides;            ///< Per input, strides over `dims`.
  int64_t inner() const { return dims.back(); }
  int64_t rows() const;
  int64_t innerStride(size_t input) const { return strides[input].back(); }
  /// Element offset of each input at the start of row `r`.
  void rowOffsets(int64_t r, int64_t *offsets) const;
};
BroadcastPlan planBroadcast(const Shape &out, const std::vector<const Shape *> &ins);

/// Fills `dst` (contiguous, shape `outShape`) from `src` with per-output-dim element
/// strides `srcStrides` (0 repeats, negative walks back) starting at element `srcOffset`.
void copyStrided(const uint8_t *src, int64_t srcOffset, const Shape &outShape,
                 const Shape &srcStrides, uint8_t *dst, size_t elemSize);

// ---------------------------------------------------------------- threads

/// Splits [0, n) into contiguous chunks of at least `grain` items and runs them on
/// the interpreter's thread pool (inline when small, nested, or single-threaded).
void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn);
/// Threads kernels may use now.
int threadBudget();
/// Sets the thread budget for this thread's kernels while alive (0 = hardware).
class ThreadBudgetScope {
public:
  explicit ThreadBudgetScope(int threads);
  ~ThreadBudgetScope();

private:
  int saved_;
};

} // namespace llmopt::interp
