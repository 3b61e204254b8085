// Internal to the interpreter: elementwise map and numpy-broadcast loops shared by
// the elementwise, normalization and quantization kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/interp/Kernel.h"

namespace llmopt::interp {

/// Elements per parallel chunk for cheap elementwise loops.
inline constexpr int64_t kElementGrain = 1 << 15;

/// out[i] = f(x[i]) with x of C++ type TI, out of type TO (dtype `outType`).
template <typename TI, typename TO, typename F>
Tensor mapUnary(const Tensor &x, DType outType, F f) {
  Tensor out = Tensor::zeros(outType, x.shape());
  const TI *src = dataOf<TI>(x);
  TO *dst = mutableDataOf<TO>(out);
  parallelFor(x.numel(), kElementGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      dst[i] = static_cast<TO>(f(src[i]));
  });
  return out;
}

/// out = f(a, b) with numpy broadcasting; out has shape `outShape` and dtype `outType`.
template <typename TA, typename TB, typename TO, typename F>
Tensor mapBinary(const Tensor &a, const Tensor &b, const Shape &outShape, DType outType, F f) {
  Tensor out = Tensor::zeros(outType, outShape);
  if (out.numel() == 0)
    return out;
  const BroadcastPlan p = planBroadcast(outShape, {&a.shape(), &b.shape()});
  const TA *pa = dataOf<TA>(a);
  const TB *pb = dataOf<TB>(b);
  TO *po = mutableDataOf<TO>(out);
  const int64_t inner = p.inner(), sa = p.innerStride(0), sb = p.innerStride(1);
  // Chunks are element ranges, so one long row splits across threads too.
  parallelFor(out.numel(), kElementGrain, [&](int64_t b, int64_t e) {
    int64_t off[2];
    for (int64_t pos = b; pos < e;) {
      const int64_t r = pos / inner, i0 = pos % inner, i1 = std::min(inner, i0 + (e - pos));
      p.rowOffsets(r, off);
      const TA *x = pa + off[0];
      const TB *y = pb + off[1];
      TO *o = po + r * inner;
      if (sa && sb) {
        for (int64_t i = i0; i < i1; ++i)
          o[i] = static_cast<TO>(f(x[i], y[i]));
      } else if (sa) {
        const TB yv = *y;
        for (int64_t i = i0; i < i1; ++i)
          o[i] = static_cast<TO>(f(x[i], yv));
      } else if (sb) {
        const TA xv = *x;
        for (int64_t i = i0; i < i1; ++i)
          o[i] = static_cast<TO>(f(xv, y[i]));
      } else {
        std::fill(o + i0, o + i1, static_cast<TO>(f(*x, *y)));
      }
      pos += i1 - i0;
    }
  });
  return out;
}

/// Integer arithmetic that wraps (as ONNX Runtime's does) instead of overflowing.
template <typename T> T wrapAdd(T a, T b) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    return static_cast<T>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  else
    return a + b;
}
template <typename T> T wrapSub(T a, T b) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    return static_cast<T>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
  else
    return a - b;
}
template <typename T> T wrapMul(T a, T b) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    return static_cast<T>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  else
    return a * b;
}

} // namespace llmopt::interp
