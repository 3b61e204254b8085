// HQQ: half-quadratic quantization (Badri & Shaji, 2023), a data-free choice of each
// block's zero point that minimises an l_p (p < 1) norm of the weight error instead of
// rounding min/max. Follows ONNX Runtime's HQQWeightOnlyQuantizer (itself the official
// implementation): for the inverse scale s = (2^bits - 1) / (max - min) and
// z = round(-min * s), iterate (p = 0.7, beta = 10, kappa = 1.01, 20 rounds):
//
//   Wq = clamp(round(W * s + z))            Wr = (Wq - z) / s
//   We = shrink_p(W - Wr, beta)             (generalised soft threshold)
//   z  = mean(Wq - (W - We) * s)            beta *= kappa
//
// stopping when the mean |W - Wr| stops improving. Differences from ORT, both per block:
// the stopping test and the kept zero point are the best seen for that block (ORT stops
// all blocks together on the tensor's mean error and keeps the last zero point).
//
// Fractional zero points are HQQ's gain. Where a format needs integers (DequantizeLinear,
// GatherBlockQuantized), `integerZeroPoints` rounds the optimised zero point and then
// refits the scale by least squares for the resulting integers,
//   scale = sum(W * (Wq - z)) / sum((Wq - z)^2),
// which keeps part of the gain over round-to-nearest.
#pragma once

#include <vector>

#include "ir/QuantFormats.h"

namespace llmopt::quantpass {

/// HQQ parameters for one block of `n` values `stride` apart (asymmetric only).
quant::BlockParams hqqBlock(const float *x, int64_t n, int64_t stride, int bits,
                            bool integerZeroPoints);

/// HQQ parameters for every block of `w` under `enc` (BlockIndexer order).
Expected<std::vector<quant::BlockParams>> hqqParams(const Tensor &w, const QuantEncoding &enc,
                                                    bool integerZeroPoints);

} // namespace llmopt::quantpass
