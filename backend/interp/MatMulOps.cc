// Matrix products: MatMul (numpy batching), Gemm, MatMulInteger.
#include "backend/interp/Elementwise.h"
#include "backend/interp/Gemm.h"

namespace llmopt::interp {

void matmulBatchOffsets(const Shape &aBatch, const Shape &bBatch, const Shape &outBatch,
                        int64_t aMatrix, int64_t bMatrix, std::vector<int64_t> &aOff,
                        std::vector<int64_t> &bOff) {
  aOff.clear();
  bOff.clear();
  if (numelOf(outBatch) == 0)
    return;
  const BroadcastPlan p = planBroadcast(outBatch, {&aBatch, &bBatch});
  int64_t off[2];
  for (int64_t r = 0; r < p.rows(); ++r) {
    p.rowOffsets(r, off);
    for (int64_t i = 0; i < p.inner(); ++i) {
      aOff.push_back((off[0] + i * p.innerStride(0)) * aMatrix);
      bOff.push_back((off[1] + i * p.innerStride(1)) * bMatrix);
    }
  }
}

namespace {

/// Shapes of a numpy matmul: batch dims, M, K, N, and the output shape.
struct MatMulShape {
  Shape aBatch, bBatch, batch, out;
  int64_t M = 1, K = 1, N = 1;
};

Expected<MatMulShape> matmulShape(const Node &n, const Shape &a, const Shape &b) {
  if (a.empty() || b.empty())
    return nodeError(n, "inputs must have rank >= 1, got {} and {}", shapeStr(a), shapeStr(b));
  MatMulShape s;
  const bool aVec = a.size() == 1, bVec = b.size() == 1;
  s.M = aVec ? 1 : a[a.size() - 2];
  s.K = a.back();
  const int64_t kb = bVec ? b[0] : b[b.size() - 2];
  s.N = bVec ? 1 : b.back();
  if (s.K != kb)
    return nodeError(n, "inner dims differ: {} x {}", shapeStr(a), shapeStr(b));
  s.aBatch.assign(a.begin(), a.end() - (aVec ? 1 : 2));
  s.bBatch.assign(b.begin(), b.end() - (bVec ? 1 : 2));
  LLMOPT_ASSIGN_OR_RETURN(s.batch, broadcastShapes(n, {&s.aBatch, &s.bBatch}));
  s.out = s.batch;
  if (!aVec)
    s.out.push_back(s.M);
  if (!bVec)
    s.out.push_back(s.N);
  return s;
}

template <typename T> Tensor matmulTyped(const Tensor &a, const Tensor &b, const MatMulShape &s, DType dt) {
  std::vector<int64_t> aOff, bOff;
  matmulBatchOffsets(s.aBatch, s.bBatch, s.batch, s.M * s.K, s.K * s.N, aOff, bOff);
  Tensor out = Tensor::zeros(dt, s.out);
  batchedGemm<T>(dataOf<T>(a), dataOf<T>(b), mutableDataOf<T>(out), aOff, bOff, s.M, s.K, s.N);
  return out;
}

Expected<TensorList> kMatMul(const Node &n, const InputList &in) {
  const Tensor &a = *in[0], &b = *in[1];
  if (a.dtype() != b.dtype())
    return nodeError(n, "input element types differ: {} and {}", dtypeStr(a.dtype()), dtypeStr(b.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(MatMulShape s, matmulShape(n, a.shape(), b.shape()));
  return visitNumeric(n, a.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    return TensorList{matmulTyped<T>(a, b, s, a.dtype())};
  });
}

/// llmopt::MatMulBias: MatMul(a, b) + bias, bias broadcast numpy-style (fuse-matmul-bias).
Expected<TensorList> kMatMulBias(const Node &n, const InputList &in) {
  const Tensor &a = *in[0], &b = *in[1], &bias = *in[2];
  if (a.dtype() != b.dtype() || bias.dtype() != a.dtype())
    return nodeError(n, "input element types differ: {}, {} and {}", dtypeStr(a.dtype()),
                     dtypeStr(b.dtype()), dtypeStr(bias.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(MatMulShape s, matmulShape(n, a.shape(), b.shape()));
  LLMOPT_ASSIGN_OR_RETURN(Shape out, broadcastShapes(n, {&s.out, &bias.shape()}));
  return visitFloat(n, a.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor y = matmulTyped<T>(a, b, s, a.dtype());
    return TensorList{mapBinary<T, T, T>(y, bias, out, a.dtype(), [](T u, T v) { return u + v; })};
  });
}

/// A 2-D tensor transposed into a new contiguous tensor.
Tensor transpose2d(const Tensor &t) {
  const Shape out{t.shape()[1], t.shape()[0]};
  Tensor r = Tensor::zeros(t.dtype(), out);
  copyStrided(t.data(), 0, out, {1, t.shape()[1]}, r.mutableData(), elemBytes(t.dtype()));
  return r;
}

Expected<TensorList> kGemm(const Node &n, const InputList &in) {
  Tensor a = *in[0], b = *in[1];
  const Tensor *c = optInput(in, 2);
  if (a.rank() != 2 || b.rank() != 2)
    return nodeError(n, "A and B must be 2-D, got {} and {}", shapeStr(a.shape()), shapeStr(b.shape()));
  if (a.dtype() != b.dtype() || (c && c->dtype() != a.dtype()))
    return nodeError(n, "input element types differ");
  if (n.attrInt("transA", 0))
    a = transpose2d(a);
  if (n.attrInt("transB", 0))
    b = transpose2d(b);
  LLMOPT_ASSIGN_OR_RETURN(MatMulShape s, matmulShape(n, a.shape(), b.shape()));
  if (c) {
    LLMOPT_ASSIGN_OR_RETURN(Shape cs, broadcastShapes(n, {&c->shape(), &s.out}));
    if (cs != s.out)
      return nodeError(n, "C of shape {} does not broadcast to {}", shapeStr(c->shape()), shapeStr(s.out));
  }
  const double alpha = n.attrFloat("alpha", 1.0f), beta = n.attrFloat("beta", 1.0f);
  return visitNumeric(n, a.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor y = matmulTyped<T>(a, b, s, a.dtype());
    if (alpha != 1.0)
      y = mapUnary<T, T>(y, y.dtype(), [&](T v) { return static_cast<T>(alpha * v); });
    if (c && beta != 0.0)
      y = mapBinary<T, T, T>(y, *c, s.out, y.dtype(), [&](T v, T cv) { return static_cast<T>(v + beta * cv); });
    return TensorList{y};
  });
}

/// x - zero_point as int32, with a per-row zero point ([M] for A) made to broadcast.
Expected<Tensor> minusZeroPoint(const Node &n, const Tensor &x, const Tensor *zp, bool perRow) {
  if (x.dtype() != DType::U8 && x.dtype() != DType::I8)
    return nodeError(n, "inputs must be u8 or i8, got {}", dtypeStr(x.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Tensor wide, castTensor(x, DType::I32));
  if (!zp)
    return wide;
  if (zp->dtype() != x.dtype())
    return nodeError(n, "zero point type {} differs from its input's {}", dtypeStr(zp->dtype()), dtypeStr(x.dtype()));
  LLMOPT_ASSIGN_OR_RETURN(Tensor z, castTensor(*zp, DType::I32));
  if (perRow && z.rank() == 1 && z.numel() > 1)
    z = z.reshaped({z.numel(), 1});
  LLMOPT_ASSIGN_OR_RETURN(Shape s, broadcastShapes(n, {&wide.shape(), &z.shape()}));
  if (s != wide.shape())
    return nodeError(n, "zero point of shape {} does not fit input {}", shapeStr(zp->shape()), shapeStr(x.shape()));
  return mapBinary<int32_t, int32_t, int32_t>(wide, z, s, DType::I32, [](int32_t v, int32_t q) { return v - q; });
}

Expected<TensorList> kMatMulInteger(const Node &n, const InputList &in) {
  LLMOPT_ASSIGN_OR_RETURN(Tensor a, minusZeroPoint(n, *in[0], optInput(in, 2), true));
  LLMOPT_ASSIGN_OR_RETURN(Tensor b, minusZeroPoint(n, *in[1], optInput(in, 3), false));
  LLMOPT_ASSIGN_OR_RETURN(MatMulShape s, matmulShape(n, a.shape(), b.shape()));
  return TensorList{matmulTyped<int32_t>(a, b, s, DType::I32)};
}

} // namespace

void addMatMulKernels(KernelTable &t) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  t.push_back({OpKind::MatMul, kMatMul, 1, kMax, true});
  t.push_back({OpKind::Gemm, kGemm, 1, kMax, true});
  t.push_back({OpKind::MatMulInteger, kMatMulInteger});
  t.push_back({OpKind::MatMulBias, kMatMulBias, 1, kMax, true});
  addEinsumKernel(t);
}

} // namespace llmopt::interp
