// Reductions and scans: Reduce{Sum,Mean,Max,Min,Prod,L2,SumSquare}, ArgMax, CumSum,
// Softmax, LogSoftmax.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {
namespace {

enum class Reduce { Sum, Mean, Max, Min, Prod, L2, SumSquare };

/// Accumulator type: double for floats, 64-bit for integers.
template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double,
                               std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;

template <typename T> T reduceRow(Reduce k, const T *x, int64_t len) {
  using A = Acc<T>;
  switch (k) {
  case Reduce::Max:
  case Reduce::Min: {
    T best = k == Reduce::Max ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
    if constexpr (std::is_floating_point_v<T>)
      best = k == Reduce::Max ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < len; ++i) {
      if constexpr (std::is_floating_point_v<T>)
        if (std::isnan(x[i]))
          return x[i];
      best = k == Reduce::Max ? std::max(best, x[i]) : std::min(best, x[i]);
    }
    return best;
  }
  case Reduce::Prod: {
    A p = 1;
    for (int64_t i = 0; i < len; ++i)
      p = static_cast<A>(p * static_cast<A>(x[i]));
    return static_cast<T>(p);
  }
  case Reduce::L2:
  case Reduce::SumSquare: {
    A s = 0;
    for (int64_t i = 0; i < len; ++i)
      s += static_cast<A>(x[i]) * static_cast<A>(x[i]);
    if (k == Reduce::L2)
      return static_cast<T>(std::sqrt(static_cast<double>(s)));
    return static_cast<T>(s);
  }
  case Reduce::Sum:
  case Reduce::Mean: {
    A s = 0;
    for (int64_t i = 0; i < len; ++i)
      s += static_cast<A>(x[i]);
    if (k == Reduce::Sum)
      return static_cast<T>(s);
    if constexpr (std::is_floating_point_v<T>)
      return static_cast<T>(s / static_cast<double>(len));
    else
      return len == 0 ? T(0) : static_cast<T>(s / static_cast<A>(len));
  }
  }
  return T(0);
}

/// Moves the axes flagged in `last` to the end (a copy unless they already are).
Tensor moveAxesLast(const Tensor &x, const std::vector<bool> &last) {
  std::vector<size_t> order;
  for (size_t i = 0; i < last.size(); ++i)
    if (!last[i])
      order.push_back(i);
  for (size_t i = 0; i < last.size(); ++i)
    if (last[i])
      order.push_back(i);
  bool identity = true;
  for (size_t i = 0; i < order.size(); ++i)
    identity = identity && order[i] == i;
  if (identity)
    return x;
  const Shape xs = stridesOf(x.shape());
  Shape out, strides;
  for (size_t i : order) {
    out.push_back(x.shape()[i]);
    strides.push_back(xs[i]);
  }
  Tensor r = Tensor::zeros(x.dtype(), out);
  copyStrided(x.data(), 0, out, strides, r.mutableData(), elemBytes(x.dtype()));
  return r;
}

Expected<TensorList> reduce(const Node &n, const InputList &in, Reduce kind, int64_t axesInputFrom) {
  const Tensor &x = *in[0];
  std::vector<int64_t> axes;
  if (opsetOf(n) >= axesInputFrom) {
    if (const Tensor *a = optInput(in, 1)) {
      LLMOPT_ASSIGN_OR_RETURN(axes, readInts(n, *a, "axes"));
    }
  } else {
    axes = n.attrInts("axes");
  }
  if (axes.empty() && n.attrInt("noop_with_empty_axes", 0) != 0)
    return TensorList{x};
  const bool keep = n.attrInt("keepdims", 1) != 0;
  std::vector<bool> reduced(x.shape().size(), axes.empty());
  for (int64_t a : axes) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, normalizeAxis(n, a, x.rank()));
    reduced[static_cast<size_t>(ax)] = true;
  }
  Shape out;
  int64_t len = 1;
  for (size_t i = 0; i < reduced.size(); ++i) {
    if (reduced[i])
      len *= x.shape()[i];
    if (!reduced[i])
      out.push_back(x.shape()[i]);
    else if (keep)
      out.push_back(1);
  }
  return visitNumeric(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    const Tensor moved = moveAxesLast(x, reduced);
    Tensor r = Tensor::zeros(x.dtype(), out);
    const T *src = dataOf<T>(moved);
    T *dst = mutableDataOf<T>(r);
    parallelFor(r.numel(), std::max<int64_t>(1, 16384 / std::max<int64_t>(len, 1)), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o)
        dst[o] = reduceRow<T>(kind, src + o * len, len);
    });
    return TensorList{r};
  });
}

#define REDUCE_KERNEL(NAME, KIND, FROM)                                                            \
  Expected<TensorList> k##NAME(const Node &n, const InputList &in) {                               \
    return reduce(n, in, Reduce::KIND, FROM);                                                      \
  }
REDUCE_KERNEL(ReduceSum, Sum, 13)
REDUCE_KERNEL(ReduceMean, Mean, 18)
REDUCE_KERNEL(ReduceMax, Max, 18)
REDUCE_KERNEL(ReduceMin, Min, 18)
REDUCE_KERNEL(ReduceProd, Prod, 18)
REDUCE_KERNEL(ReduceL2, L2, 18)
REDUCE_KERNEL(ReduceSumSquare, SumSquare, 18)
#undef REDUCE_KERNEL

Expected<TensorList> kArgMax(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", 0), x.rank()));
  const bool keep = n.attrInt("keepdims", 1) != 0, lastIndex = n.attrInt("select_last_index", 0) != 0;
  std::vector<bool> moved(x.shape().size(), false);
  moved[static_cast<size_t>(axis)] = true;
  const int64_t len = x.shape()[static_cast<size_t>(axis)];
  Shape out = x.shape();
  if (keep)
    out[static_cast<size_t>(axis)] = 1;
  else
    out.erase(out.begin() + axis);
  return visitNumeric(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    const Tensor m = moveAxesLast(x, moved);
    Tensor r = Tensor::zeros(DType::I64, out);
    const T *src = dataOf<T>(m);
    int64_t *dst = mutableDataOf<int64_t>(r);
    for (int64_t o = 0; o < r.numel(); ++o) {
      const T *row = src + o * len;
      int64_t best = 0;
      for (int64_t i = 1; i < len; ++i)
        if (row[i] > row[best] || (lastIndex && row[i] == row[best]))
          best = i;
      dst[o] = best;
    }
    return TensorList{r};
  });
}

Expected<TensorList> kCumSum(const Node &n, const InputList &in) {
  const Tensor &x = *in[0];
  if (in[1]->numel() != 1 || !isIntType(in[1]->dtype()))
    return nodeError(n, "axis must be a single integer");
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, in[1]->getInt(0), x.rank()));
  const bool exclusive = n.attrInt("exclusive", 0) != 0, reverse = n.attrInt("reverse", 0) != 0;
  const Shape &s = x.shape();
  const int64_t len = s[static_cast<size_t>(axis)];
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (static_cast<int64_t>(i) < axis)
      outer *= s[i];
    else if (static_cast<int64_t>(i) > axis)
      inner *= s[i];
  }
  return visitNumeric(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor r = Tensor::zeros(x.dtype(), s);
    const T *src = dataOf<T>(x);
    T *dst = mutableDataOf<T>(r);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        Acc<T> acc = 0;
        for (int64_t j = 0; j < len; ++j) {
          const int64_t jj = reverse ? len - 1 - j : j;
          const int64_t off = (o * len + jj) * inner + i;
          if (exclusive) {
            dst[off] = static_cast<T>(acc);
            acc += static_cast<Acc<T>>(src[off]);
          } else {
            acc += static_cast<Acc<T>>(src[off]);
            dst[off] = static_cast<T>(acc);
          }
        }
      }
    return TensorList{r};
  });
}

/// Softmax / LogSoftmax over `len` elements with stride `inner` (f16/bf16 widened).
Expected<TensorList> softmax(const Node &n, const InputList &in, bool log) {
  const Tensor &x = *in[0];
  const Shape &s = x.shape();
  const bool coerce2d = opsetOf(n) < 13;
  LLMOPT_ASSIGN_OR_RETURN(int64_t axis, normalizeAxis(n, n.attrInt("axis", coerce2d ? 1 : -1),
                                                      std::max<int64_t>(x.rank(), 1)));
  int64_t outer = 1, len = 1, inner = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    const int64_t ii = static_cast<int64_t>(i);
    if (ii < axis)
      outer *= s[i];
    else if (ii == axis || coerce2d)
      len *= s[i];
    else
      inner *= s[i];
  }
  return visitFloat(n, x.dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor r = Tensor::zeros(x.dtype(), s);
    const T *src = dataOf<T>(x);
    T *dst = mutableDataOf<T>(r);
    parallelFor(outer * inner, std::max<int64_t>(1, 8192 / std::max<int64_t>(len, 1)), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t base = (k / inner) * len * inner + k % inner;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < len; ++j)
          mx = std::max(mx, src[base + j * inner]);
        double sum = 0;
        for (int64_t j = 0; j < len; ++j) {
          const T ev = std::exp(src[base + j * inner] - mx);
          sum += ev;
          if (!log)
            dst[base + j * inner] = ev;
        }
        const double lsum = std::log(sum);
        for (int64_t j = 0; j < len; ++j) {
          T &o = dst[base + j * inner];
          o = log ? static_cast<T>(src[base + j * inner] - mx - lsum) : static_cast<T>(o / sum);
        }
      }
    });
    return TensorList{r};
  });
}

Expected<TensorList> kSoftmax(const Node &n, const InputList &in) { return softmax(n, in, false); }
Expected<TensorList> kLogSoftmax(const Node &n, const InputList &in) { return softmax(n, in, true); }

} // namespace

void addReduceKernels(KernelTable &t) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  t.push_back({OpKind::ReduceSum, kReduceSum, 1, kMax, true});
  t.push_back({OpKind::ReduceMean, kReduceMean, 1, kMax, true});
  t.push_back({OpKind::ReduceMax, kReduceMax, 1, kMax, true});
  t.push_back({OpKind::ReduceMin, kReduceMin, 1, kMax, true});
  t.push_back({OpKind::ReduceProd, kReduceProd, 1, kMax, true});
  t.push_back({OpKind::ReduceL2, kReduceL2, 1, kMax, true});
  t.push_back({OpKind::ReduceSumSquare, kReduceSumSquare, 1, kMax, true});
  t.push_back({OpKind::ArgMax, kArgMax, 1, kMax, true});
  t.push_back({OpKind::CumSum, kCumSum, 1, kMax, true});
  t.push_back({OpKind::Softmax, kSoftmax, 1, kMax, true});
  t.push_back({OpKind::LogSoftmax, kLogSoftmax, 1, kMax, true});
}

} // namespace llmopt::interp
