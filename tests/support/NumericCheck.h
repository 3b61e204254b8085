// The numeric-equivalence helper every pass test uses: run a model before and after
// a pipeline on the same inputs with the reference interpreter, compare within a
// stated tolerance.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ir/Graph.h"

namespace llmopt::test {

/// Deterministic inputs for every graph input that has no default: symbolic dims are
/// bound from `dims` (missing symbols: 3), integer inputs draw from [0, intHigh),
/// float inputs from N(0, 1). Inputs named `attention_mask` are all ones, `token_type*`
/// inputs draw from {0, 1}.
std::vector<Tensor> makeInputs(const Graph &g, const std::map<std::string, int64_t> &dims,
                               uint64_t seed, int64_t intHigh = 64);

/// Elementwise |a - b| <= atol + rtol * |a| over every output; names the first output,
/// element and values that do not match, and reports max abs / rel error.
::testing::AssertionResult outputsClose(const std::vector<Tensor> &expected,
                                        const std::vector<Tensor> &actual, double rtol,
                                        double atol);

/// Runs both models on `inputs` with the interpreter and compares with outputsClose.
::testing::AssertionResult sameOutputs(const Model &before, const Model &after,
                                       const std::vector<Tensor> &inputs, double rtol,
                                       double atol);

} // namespace llmopt::test
