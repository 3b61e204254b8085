// Data movement kernels: Concat, Split, Slice, Gather, GatherElements, Expand, Tile,
// Transpose, Trilu. They move bytes, so any byte-sized element type works as it is.
#include <algorithm>
#include <numeric>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {
namespace {

Expected<size_t> bytesOf(const Node &n, const Tensor &t) {
  size_t eb = elemBytes(t.dtype());
  if (eb == 0)
    return nodeError(n, "element type {} is not supported", dtypeStr(t.dtype()));
  return eb;
}

int64_t prodRange(const Shape &s, size_t b, size_t e) {
  int64_t p = 1;
  for (size_t i = b; i < e && i < s.size(); ++i)
    p *= s[i];
  return p;
}

Expected<TensorList> kConcat(const Node &n, const InputList &in) {
  const Tensor &first = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, first));
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", 1), first.rank()));
  const size_t ax = static_cast<size_t>(axis);
  Shape out = first.shape();
  out[ax] = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const Tensor *t = in[i];
    if (!t)
      return nodeError(n, "input {} is missing", i);
    bool ok = t->dtype() == first.dtype() && t->rank() == first.rank();
    for (size_t d = 0; ok && d < out.size(); ++d)
      ok = d == ax || t->shape()[d] == first.shape()[d];
    if (!ok)
      return nodeError(n, "input {} ({} {}) does not match input 0 ({} {}) off axis {}", i,
                       dtypeStr(t->dtype()), shapeStr(t->shape()), dtypeStr(first.dtype()),
                       shapeStr(first.shape()), axis);
    out[ax] += t->shape()[ax];
  }
  Tensor result = Tensor::zeros(first.dtype(), out);
  const int64_t outer = prodRange(out, 0, ax), inner = prodRange(out, ax + 1, out.size());
  uint8_t *dst = result.mutableData();
  for (int64_t o = 0; o < outer; ++o)
    for (const Tensor *t : in) {
      const size_t chunk = static_cast<size_t>(t->shape()[ax] * inner) * eb;
      if (chunk)
        std::memcpy(dst, t->data() + static_cast<size_t>(o) * chunk, chunk);
      dst += chunk;
    }
  return TensorList{result};
}

/// Copies [begin, begin+len) along `axis` of x into a new tensor.
Tensor sliceAxis(const Tensor &x, size_t axis, int64_t begin, int64_t len, size_t eb) {
  Shape out = x.shape();
  out[axis] = len;
  Tensor r = Tensor::zeros(x.dtype(), out);
  const int64_t outer = prodRange(out, 0, axis), inner = prodRange(out, axis + 1, out.size());
  const size_t srcRow = static_cast<size_t>(x.shape()[axis] * inner) * eb;
  const size_t dstRow = static_cast<size_t>(len * inner) * eb;
  uint8_t *dst = r.mutableData();
  for (int64_t o = 0; o < outer && dstRow; ++o)
    std::memcpy(dst + static_cast<size_t>(o) * dstRow,
                x.data() + static_cast<size_t>(o) * srcRow + static_cast<size_t>(begin * inner) * eb, dstRow);
  return r;
}

Expected<TensorList> kSplit(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", 0), x.rank()));
  const int64_t dim = x.shape()[static_cast<size_t>(axis)];
  std::vector<int64_t> sizes;
  if (opsetOf(n) < 13) {
    sizes = n.attrInts("split");
  } else if (const Tensor *s = optInput(in, 1)) {
    LLMOPT_ASSIGN_OR_RETURN(sizes, readInts(n, *s, "split"));
  }
  if (sizes.empty()) {
    const int64_t parts = n.attrInt("num_outputs", static_cast<int64_t>(n.numOutputs()));
    if (parts <= 0)
      return nodeError(n, "cannot split into {} parts", parts);
    const int64_t chunk = (dim + parts - 1) / parts;
    if (!n.hasAttr("num_outputs") && dim % parts != 0)
      return nodeError(n, "dim {} of axis {} does not split evenly into {} outputs", dim, axis, parts);
    for (int64_t i = 0, left = dim; i < parts; ++i, left -= chunk)
      sizes.push_back(std::max<int64_t>(0, std::min(chunk, left)));
  }
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0)
      return nodeError(n, "split sizes must not be negative");
    total += s;
  }
  if (total != dim)
    return nodeError(n, "split sizes {} do not add up to dim {} of axis {}", shapeStr(sizes), dim, axis);
  TensorList outs;
  int64_t begin = 0;
  for (int64_t s : sizes) {
    outs.push_back(sliceAxis(x, static_cast<size_t>(axis), begin, s, eb));
    begin += s;
  }
  return outs;
}

Expected<TensorList> kSlice(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  std::vector<int64_t> starts, ends, axes, steps;
  if (opsetOf(n) < 10) {
    starts = n.attrInts("starts");
    ends = n.attrInts("ends");
    axes = n.attrInts("axes");
  } else {
    LLMOPT_ASSIGN_OR_RETURN(const Tensor *st, needInput(n, in, 1, "starts"));
    LLMOPT_ASSIGN_OR_RETURN(const Tensor *en, needInput(n, in, 2, "ends"));
    LLMOPT_ASSIGN_OR_RETURN(starts, readInts(n, *st, "starts"));
    LLMOPT_ASSIGN_OR_RETURN(ends, readInts(n, *en, "ends"));
    if (const Tensor *a = optInput(in, 3)) {
      LLMOPT_ASSIGN_OR_RETURN(axes, readInts(n, *a, "axes"));
    }
    if (const Tensor *s = optInput(in, 4)) {
      LLMOPT_ASSIGN_OR_RETURN(steps, readInts(n, *s, "steps"));
    }
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i)
      axes.push_back(static_cast<int64_t>(i));
  if (steps.empty())
    steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return nodeError(n, "starts, ends, axes and steps differ in length");
  const Shape &s = x.shape();
  const Shape inStrides = stridesOf(s);
  Shape out = s, srcStrides = inStrides;
  int64_t base = 0;
  std::vector<bool> seen(s.size(), false);
  for (size_t i = 0; i < starts.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, normalizeAxis(n, axes[i], x.rank()));
    const size_t a = static_cast<size_t>(ax);
    if (seen[a])
      return nodeError(n, "axis {} is sliced twice", axes[i]);
    seen[a] = true;
    const int64_t dim = s[a], step = steps[i];
    if (step == 0)
      return nodeError(n, "step is zero");
    int64_t b = starts[i], e = ends[i];
    if (b < 0)
      b += dim;
    if (e < 0)
      e += dim;
    int64_t len;
    if (step > 0) {
      b = std::clamp<int64_t>(b, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      len = e > b ? (e - b + step - 1) / step : 0;
    } else {
      b = std::clamp<int64_t>(b, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      len = b > e ? (b - e + (-step) - 1) / (-step) : 0;
    }
    out[a] = len;
    srcStrides[a] = inStrides[a] * step;
    if (len > 0)
      base += b * inStrides[a];
  }
  Tensor r = Tensor::zeros(x.dtype(), out);
  copyStrided(x.data(), base, out, srcStrides, r.mutableData(), eb);
  return TensorList{r};
}

Expected<std::vector<int64_t>> checkedIndices(const Node &n, const Tensor &idx, int64_t dim) {
  if (idx.dtype() != DType::I64 && idx.dtype() != DType::I32)
    return nodeError(n, "indices must be i32 or i64, got {}", dtypeStr(idx.dtype()));
  std::vector<int64_t> v = idx.toInts();
  for (int64_t &i : v) {
    if (i < -dim || i >= dim)
      return nodeError(n, "index {} is out of range for a dim of {}", i, dim);
    if (i < 0)
      i += dim;
  }
  return v;
}

Expected<TensorList> kGather(const Node &n, const InputList &in) {
  const Tensor &x = *in[0], &idxT = *in[1];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", 0), x.rank()));
  const size_t ax = static_cast<size_t>(axis);
  const int64_t dim = x.shape()[ax];
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> idx, checkedIndices(n, idxT, dim));
  Shape out(x.shape().begin(), x.shape().begin() + axis);
  out.insert(out.end(), idxT.shape().begin(), idxT.shape().end());
  out.insert(out.end(), x.shape().begin() + axis + 1, x.shape().end());
  Tensor r = Tensor::zeros(x.dtype(), out);
  const int64_t outer = prodRange(x.shape(), 0, ax), ni = static_cast<int64_t>(idx.size());
  const size_t row = static_cast<size_t>(prodRange(x.shape(), ax + 1, x.shape().size())) * eb;
  uint8_t *dst = r.mutableData();
  const uint8_t *src = x.data();
  parallelFor(outer * ni, std::max<int64_t>(1, 65536 / static_cast<int64_t>(row + 1)), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t o = k / ni, j = k % ni;
      std::memcpy(dst + static_cast<size_t>(k) * row,
                  src + static_cast<size_t>(o * dim + idx[static_cast<size_t>(j)]) * row, row);
    }
  });
  return TensorList{r};
}

Expected<TensorList> kGatherElements(const Node &n, const InputList &in) {
  const Tensor &x = *in[0], &idxT = *in[1];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", 0), x.rank()));
  if (idxT.rank() != x.rank())
    return nodeError(n, "indices rank {} differs from data rank {}", idxT.rank(), x.rank());
  const size_t ax = static_cast<size_t>(axis);
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> idx, checkedIndices(n, idxT, x.shape()[ax]));
  const Shape &is = idxT.shape();
  const Shape xs = stridesOf(x.shape());
  Tensor r = Tensor::zeros(x.dtype(), is);
  std::vector<int64_t> pos(is.size(), 0);
  uint8_t *dst = r.mutableData();
  for (size_t k = 0; k < idx.size(); ++k) {
    int64_t off = 0;
    for (size_t d = 0; d < is.size(); ++d) {
      if (d != ax && pos[d] >= x.shape()[d])
        return nodeError(n, "indices shape {} exceeds data shape {}", shapeStr(is), shapeStr(x.shape()));
      off += (d == ax ? idx[k] : pos[d]) * xs[d];
    }
    std::memcpy(dst + k * eb, x.data() + static_cast<size_t>(off) * eb, eb);
    for (size_t d = is.size(); d-- > 0;) {
      if (++pos[d] < is[d])
        break;
      pos[d] = 0;
    }
  }
  return TensorList{r};
}

/// Strides reading `s` broadcast (right-aligned) to `out`.
Shape broadcastStrides(const Shape &s, const Shape &out) {
  Shape st(out.size(), 0), cs = stridesOf(s);
  const size_t off = out.size() - s.size();
  for (size_t i = 0; i < s.size(); ++i)
    st[off + i] = s[i] == 1 ? 0 : cs[i];
  return st;
}

Expected<TensorList> kExpand(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  LLMOPT_ASSIGN_OR_RETURN(Shape target, readInts(n, *in[1], "shape"));
  LLMOPT_ASSIGN_OR_RETURN(Shape out, broadcastShapes(n, {&x.shape(), &target}));
  Tensor r = Tensor::zeros(x.dtype(), out);
  copyStrided(x.data(), 0, out, broadcastStrides(x.shape(), out), r.mutableData(), eb);
  return TensorList{r};
}

Expected<TensorList> kTile(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> reps, readInts(n, *in[1], "repeats"));
  if (static_cast<int64_t>(reps.size()) != x.rank())
    return nodeError(n, "repeats has {} entries for rank {}", reps.size(), x.rank());
  // The output seen as [r0, d0, r1, d1, ...] reads x with stride 0 along each r.
  Shape out, split, strides;
  const Shape xs = stridesOf(x.shape());
  for (size_t i = 0; i < reps.size(); ++i) {
    if (reps[i] < 0)
      return nodeError(n, "repeats must not be negative");
    out.push_back(x.shape()[i] * reps[i]);
    split.insert(split.end(), {reps[i], x.shape()[i]});
    strides.insert(strides.end(), {0, xs[i]});
  }
  Tensor r = Tensor::zeros(x.dtype(), out);
  copyStrided(x.data(), 0, split, strides, r.mutableData(), eb);
  return TensorList{r};
}

Expected<TensorList> kTranspose(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  if (x.dtype() == DType::I4 || x.dtype() == DType::U4) {
    // 4-bit data (a transposed quantized weight, see backend/onnx/QuantLowering.h) is
    // moved as bytes and packed again.
    LLMOPT_ASSIGN_OR_RETURN(Tensor wide, castTensor(x, x.dtype() == DType::I4 ? DType::I8 : DType::U8));
    LLMOPT_ASSIGN_OR_RETURN(TensorList moved, kTranspose(n, {&wide}));
    LLMOPT_ASSIGN_OR_RETURN(Tensor packed, castTensor(moved[0], x.dtype()));
    return TensorList{packed};
  }
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  const size_t r = x.shape().size();
  std::vector<int64_t> perm = n.attrInts("perm");
  if (!n.hasAttr("perm")) {
    perm.resize(r);
    std::iota(perm.rbegin(), perm.rend(), 0);
  }
  std::vector<bool> seen(r, false);
  if (perm.size() != r)
    return nodeError(n, "perm has {} entries for rank {}", perm.size(), r);
  for (int64_t &p : perm) {
    LLMOPT_ASSIGN_OR_RETURN(p, normalizeAxis(n, p, static_cast<int64_t>(r)));
    if (seen[static_cast<size_t>(p)])
      return nodeError(n, "perm {} is not a permutation", shapeStr(perm));
    seen[static_cast<size_t>(p)] = true;
  }
  const Shape xs = stridesOf(x.shape());
  Shape out(r), strides(r);
  for (size_t i = 0; i < r; ++i) {
    out[i] = x.shape()[static_cast<size_t>(perm[i])];
    strides[i] = xs[static_cast<size_t>(perm[i])];
  }
  Tensor result = Tensor::zeros(x.dtype(), out);
  copyStrided(x.data(), 0, out, strides, result.mutableData(), eb);
  return TensorList{result};
}

Expected<TensorList> kTrilu(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  if (x.rank() < 2)
    return nodeError(n, "input must have rank >= 2, got {}", x.rank());
  int64_t k = 0;
  if (const Tensor *kt = optInput(in, 1)) {
    if (kt->numel() != 1 || !isIntType(kt->dtype()))
      return nodeError(n, "k must be a single integer");
    k = kt->getInt(0);
  }
  const bool upper = n.attrInt("upper", 1) != 0;
  const int64_t rows = x.shape()[x.shape().size() - 2], cols = x.shape().back();
  Tensor r = x;
  uint8_t *d = r.mutableData();
  const int64_t mats = rows * cols == 0 ? 0 : x.numel() / (rows * cols);
  for (int64_t m = 0; m < mats; ++m)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const bool keep = upper ? j - i >= k : j - i <= k;
        if (!keep)
          std::memset(d + static_cast<size_t>((m * rows + i) * cols + j) * eb, 0, eb);
      }
  return TensorList{r};
}

} // namespace

void addMovementKernels(KernelTable &t) {
  t.push_back({OpKind::Concat, kConcat});
  t.push_back({OpKind::Split, kSplit});
  t.push_back({OpKind::Slice, kSlice});
  t.push_back({OpKind::Gather, kGather});
  t.push_back({OpKind::GatherElements, kGatherElements});
  t.push_back({OpKind::Expand, kExpand});
  t.push_back({OpKind::Tile, kTile});
  t.push_back({OpKind::Transpose, kTranspose});
  t.push_back({OpKind::Trilu, kTrilu});
}

} // namespace llmopt::interp
