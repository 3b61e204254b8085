// Numeric comparison on top of the interpreter: tensor differences (max abs / rel
// error, cosine), random graph inputs, and "these two graphs compute the same thing"
// checks for pass tests and llmopt-run.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "backend/interp/Interpreter.h"

namespace llmopt::interp {

/// Elementwise tolerance: |got - want| <= atol + rtol * |want| (floats); integers,
/// bools and strings must match exactly.
struct Tolerance {
  double rtol = 1e-4;
  double atol = 1e-5;
};

/// How one tensor differs from its reference.
struct Difference {
  bool ok = true;            ///< Same dtype and shape, every element within tolerance.
  std::string mismatch;      ///< Set when dtype or shape differ.
  double maxAbs = 0;         ///< Largest |got - want|.
  double maxRel = 0;         ///< Largest |got - want| / |want| over nonzero want.
  double cosine = 1;         ///< Cosine similarity of the two as vectors (1 when both are zero).
  int64_t worst = -1;        ///< Index of the element furthest outside tolerance (-1: none).
  std::string summary() const;
};

Difference compareTensors(const Tensor &got, const Tensor &want, const Tolerance &tol = {});

struct RandomInputOptions {
  uint64_t seed = 1;
  /// Sizes of symbolic dims by name; unbound symbolic and unknown dims get defaultDim.
  std::map<std::string, int64_t> dims;
  int64_t defaultDim = 2;
  /// Integer inputs are drawn from [intLow, intHigh) (token ids, positions).
  int64_t intLow = 0, intHigh = 16;
  /// Floats are drawn uniformly from [-floatRange, floatRange).
  double floatRange = 1.0;
};

/// One tensor per graph input, in order: inputs with an initializer keep its value,
/// the rest are random (deterministic for a seed). Errors for non-tensor inputs.
Expected<std::vector<Tensor>> randomInputs(const Graph &g, const RandomInputOptions &opts = {});

/// Runs `before` and `after` on `inputs` and compares their outputs pairwise. The
/// error names the first output outside tolerance with its max abs / rel error.
Status checkEquivalent(const Graph &before, const Graph &after, const std::vector<Tensor> &inputs,
                       const Tolerance &tol = {}, const RunOptions &opts = {});

} // namespace llmopt::interp
