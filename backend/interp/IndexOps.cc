// Indexing kernels: GatherND, ScatterND, TopK, Pad.
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

/// Index tuples of GatherND / ScatterND resolved to element offsets of `data`'s
/// slices: one offset per tuple, each addressing `sliceElems` contiguous elements.
struct NdIndex {
  std::vector<int64_t> offsets;
  int64_t sliceElems = 1;
  Shape tupleShape; ///< indices.shape[:-1]
};

Expected<NdIndex> resolveNd(const Node &n, const Tensor &data, const Tensor &indices, int64_t batchDims) {
  if (indices.dtype() != DType::I64)
    return nodeError(n, "indices must be i64, got {}", dtypeStr(indices.dtype()));
  const Shape &ds = data.shape(), &is = indices.shape();
  if (is.empty())
    return nodeError(n, "indices must have rank >= 1");
  const int64_t last = is.back(), b = batchDims;
  if (b < 0 || b >= static_cast<int64_t>(is.size()) || b + last > data.rank())
    return nodeError(n, "indices {} do not fit data {} with batch_dims {}", shapeStr(is), shapeStr(ds), b);
  for (int64_t i = 0; i < b; ++i)
    if (is[static_cast<size_t>(i)] != ds[static_cast<size_t>(i)])
      return nodeError(n, "batch dims of indices {} and data {} differ", shapeStr(is), shapeStr(ds));
  NdIndex r;
  r.tupleShape.assign(is.begin(), is.end() - 1);
  for (size_t i = static_cast<size_t>(b + last); i < ds.size(); ++i)
    r.sliceElems *= ds[i];
  const Shape st = stridesOf(ds);
  int64_t perBatch = 1;
  for (size_t i = static_cast<size_t>(b); i + 1 < is.size(); ++i)
    perBatch *= is[i];
  const int64_t tuples = numelOf(r.tupleShape);
  const int64_t *idx = dataOf<int64_t>(indices);
  for (int64_t t = 0; t < tuples; ++t) {
    // Batch position: the tuple's leading coordinates over the first b dims.
    int64_t batch = t / std::max<int64_t>(perBatch, 1), off = 0;
    for (int64_t i = b - 1; i >= 0; --i) {
      off += (batch % ds[static_cast<size_t>(i)]) * st[static_cast<size_t>(i)];
      batch /= ds[static_cast<size_t>(i)];
    }
    for (int64_t j = 0; j < last; ++j) {
      const int64_t dim = ds[static_cast<size_t>(b + j)];
      int64_t v = idx[t * last + j];
      if (v < -dim || v >= dim)
        return nodeError(n, "index {} is out of range for a dim of {}", v, dim);
      off += (v < 0 ? v + dim : v) * st[static_cast<size_t>(b + j)];
    }
    r.offsets.push_back(off);
  }
  return r;
}

Expected<TensorList> kGatherND(const Node &n, const InputList &in) {
  const Tensor &data = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, data));
  const int64_t b = n.attrInt("batch_dims", 0);
  LLMOPT_ASSIGN_OR_RETURN(NdIndex r, resolveNd(n, data, *in[1], b));
  Shape out = r.tupleShape;
  const int64_t last = in[1]->shape().back();
  out.insert(out.end(), data.shape().begin() + b + last, data.shape().end());
  Tensor y = Tensor::zeros(data.dtype(), out);
  uint8_t *dst = y.mutableData();
  const size_t slice = static_cast<size_t>(r.sliceElems) * eb;
  for (size_t t = 0; t < r.offsets.size(); ++t)
    std::memcpy(dst + t * slice, data.data() + static_cast<size_t>(r.offsets[t]) * eb, slice);
  return TensorList{y};
}

Expected<TensorList> kScatterND(const Node &n, const InputList &in) {
  const Tensor &data = *in[0], &updates = *in[2];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, data));
  LLMOPT_ASSIGN_OR_RETURN(NdIndex r, resolveNd(n, data, *in[1], 0));
  if (updates.dtype() != data.dtype() || updates.numel() != static_cast<int64_t>(r.offsets.size()) * r.sliceElems)
    return nodeError(n, "updates {} {} do not match the indexed slices", dtypeStr(updates.dtype()),
                     shapeStr(updates.shape()));
  const std::string red = n.attrString("reduction", "none");
  Tensor y = data;
  uint8_t *dst = y.mutableData();
  if (red == "none") {
    const size_t slice = static_cast<size_t>(r.sliceElems) * eb;
    for (size_t t = 0; t < r.offsets.size(); ++t)
      std::memcpy(dst + static_cast<size_t>(r.offsets[t]) * eb, updates.data() + t * slice, slice);
    return TensorList{y};
  }
  if (red != "add" && red != "mul" && red != "max" && red != "min")
    return nodeError(n, "unknown reduction '{}'", red);
  return visitNumeric(n, data.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    T *o = reinterpret_cast<T *>(dst);
    const T *u = dataOf<T>(updates);
    for (size_t t = 0; t < r.offsets.size(); ++t)
      for (int64_t i = 0; i < r.sliceElems; ++i) {
        T &d = o[r.offsets[t] + i];
        const T v = u[static_cast<int64_t>(t) * r.sliceElems + i];
        d = red == "add" ? static_cast<T>(d + v) : red == "mul" ? static_cast<T>(d * v)
          : red == "max" ? std::max(d, v) : std::min(d, v);
      }
    return TensorList{y};
  });
}

Expected<TensorList> kTopK(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  int64_t k = n.attrInt("k", -1);
  if (opsetOf(n) >= 10) {
    const Tensor *kt = optInput(in, 1);
    if (!kt || kt->numel() != 1 || !isIntType(kt->dtype()))
      return nodeError(n, "K must be a single integer");
    k = kt->getInt(0);
  }
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", -1), x.rank()));
  const Shape &s = x.shape();
  const int64_t len = s[static_cast<size_t>(axis)];
  if (k < 0 || k > len)
    return nodeError(n, "K = {} is out of range for an axis of {}", k, len);
  const bool largest = n.attrInt("largest", 1) != 0;
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (static_cast<int64_t>(i) < axis)
      outer *= s[i];
    else if (static_cast<int64_t>(i) > axis)
      inner *= s[i];
  }
  Shape out = s;
  out[static_cast<size_t>(axis)] = k;
  return visitNumeric(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor vals = Tensor::zeros(x.dtype(), out), idxs = Tensor::zeros(DType::I64, out);
    const T *src = dataOf<T>(x);
    T *vo = mutableDataOf<T>(vals);
    int64_t *io = mutableDataOf<int64_t>(idxs);
    std::vector<int64_t> order(static_cast<size_t>(len));
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        auto at = [&](int64_t j) { return src[(o * len + j) * inner + i]; };
        std::iota(order.begin(), order.end(), 0);
        // Sorted by value, ties by lower index (the ONNX rule).
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
          const T va = at(a), vb = at(b);
          if (va != vb)
            return largest ? va > vb : va < vb;
          return a < b;
        });
        for (int64_t j = 0; j < k; ++j) {
          vo[(o * k + j) * inner + i] = at(order[static_cast<size_t>(j)]);
          io[(o * k + j) * inner + i] = order[static_cast<size_t>(j)];
        }
      }
    return TensorList{vals, idxs};
  });
}

Expected<TensorList> kPad(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(size_t eb, bytesOf(n, x));
  const int64_t r = x.rank();
  std::vector<int64_t> pads;
  std::string mode = n.attrString("mode", "constant");
  Tensor value = Tensor::zeros(x.dtype(), {});
  if (opsetOf(n) < 11) {
    pads = n.attrInts("pads");
    LLMOPT_ASSIGN_OR_RETURN(value, castTensor(Tensor::scalar<float>(DType::F32, n.attrFloat("value", 0)), x.dtype()));
  } else {
    LLMOPT_ASSIGN_OR_RETURN(const Tensor *pt, needInput(n, in, 1, "pads"));
    LLMOPT_ASSIGN_OR_RETURN(pads, readInts(n, *pt, "pads"));
    if (const Tensor *v = optInput(in, 2)) {
      if (v->dtype() != x.dtype() || v->numel() != 1)
        return nodeError(n, "constant_value must be one {} value", dtypeStr(x.dtype()));
      value = v->reshaped({});
    }
  }
  std::vector<int64_t> axes(static_cast<size_t>(r));
  std::iota(axes.begin(), axes.end(), 0);
  if (const Tensor *a = opsetOf(n) >= 18 ? optInput(in, 3) : nullptr) {
    LLMOPT_ASSIGN_OR_RETURN(axes, readInts(n, *a, "axes"));
  }
  if (pads.size() != 2 * axes.size())
    return nodeError(n, "pads has {} entries for {} axes", pads.size(), axes.size());
  std::vector<int64_t> begin(static_cast<size_t>(r), 0), end(static_cast<size_t>(r), 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, normalizeAxis(n, axes[i], r));
    begin[static_cast<size_t>(ax)] = pads[i];
    end[static_cast<size_t>(ax)] = pads[i + axes.size()];
  }
  if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap")
    return nodeError(n, "unknown mode '{}'", mode);
  const Shape &s = x.shape();
  Shape out(static_cast<size_t>(r));
  for (size_t d = 0; d < out.size(); ++d) {
    out[d] = s[d] + begin[d] + end[d];
    if (out[d] < 0)
      return nodeError(n, "pads make axis {} negative", d);
    if (mode != "constant" && out[d] > 0 && s[d] == 0)
      return nodeError(n, "mode '{}' cannot pad an empty axis", mode);
  }
  Tensor y = Tensor::zeros(x.dtype(), out);
  const Shape st = stridesOf(s);
  std::vector<int64_t> pos(out.size(), 0);
  uint8_t *dst = y.mutableData();
  for (int64_t o = 0; o < y.numel(); ++o) {
    int64_t off = 0;
    bool inside = true;
    for (size_t d = 0; d < out.size(); ++d) {
      int64_t c = pos[d] - begin[d];
      const int64_t dim = s[d];
      if (c < 0 || c >= dim) {
        if (mode == "constant") {
          inside = false;
          break;
        }
        if (mode == "edge") {
          c = std::clamp<int64_t>(c, 0, dim - 1);
        } else if (mode == "wrap") {
          c = ((c % dim) + dim) % dim;
        } else { // reflect, mirrored without repeating the edge
          const int64_t period = std::max<int64_t>(2 * (dim - 1), 1);
          c = ((c % period) + period) % period;
          if (c >= dim)
            c = period - c;
        }
      }
      off += c * st[d];
    }
    std::memcpy(dst + static_cast<size_t>(o) * eb, inside ? x.data() + static_cast<size_t>(off) * eb : value.data(), eb);
    for (size_t d = out.size(); d-- > 0;) {
      if (++pos[d] < out[d])
        break;
      pos[d] = 0;
    }
  }
  return TensorList{y};
}

} // namespace

void addIndexKernels(KernelTable &t) {
  t.push_back({OpKind::GatherND, kGatherND});
  t.push_back({OpKind::ScatterND, kScatterND});
  t.push_back({OpKind::TopK, kTopK, 1, std::numeric_limits<int64_t>::max(), true});
  t.push_back({OpKind::Pad, kPad});
}

} // namespace llmopt::interp
