// Prints a Model or Graph as IR text, the MLIR-flavoured form that ir/Parser.h reads
// back. The full grammar is in docs/ir-text.md; in short:
//
//   model ir_version=8 opsets={"": 17, "com.microsoft": 1} producer="pytorch" ... {
//     metadata "llmopt.pipeline" = "dce"
//     function hex"0a03..."                        // FunctionProto bytes
//     graph main(%ids: i64[batch,seq], %mask: f32[2,4]) {
//       value_info %ids                            // Value::hadValueInfo
//       doc %ids "token ids"                       // Value::doc
//       %mask = default f32[2,4] [...]             // initializer that is also an input
//       %w = const f32[2,2] [1.0, -2.5, 3.0, 4.0]  // <= elideThreshold numeric elements
//       %big = const f16[64,64] hex"00..."         // raw little-endian bytes (Tensor::data())
//       %q = const f32[64,64] q<i4,bits=4,axis=0,block=32,sym> hex"..."
//                scales=tensor<f32[64,2] ...>           // quantized: stored ints + side data
//       %y: f32[batch,seq,64] = MatMul(%x, %w) {name = "/q_proj/MatMul"}
//       %o, %$0 = com.microsoft::Op(%x, _, %b) {K = 64, alpha = 0.5, "name" = "real attr"}
//       %r = If(%c) {then_branch = graph then_g() { ... return %t }, else_branch = ...}
//       return %y, %o
//     }
//   }
//
// Names print bare when they are `[A-Za-z0-9_.\-/:]+` (not ending in `:`), else quoted;
// empty-named values print as `%$N` (N counts per print, so it never collides with a
// real name). The node's name and doc string print as the bare keys `name` and
// `doc_string` in its attribute dict; a real attribute with either name prints its key
// quoted. Floats always carry `.`, `e`, `inf` or `nan` and read back bit-exactly.
#pragma once

#include <cstddef>
#include <string>

#include "ir/Graph.h"

namespace llmopt {

struct PrintOptions {
  /// Print constants with more than `elideThreshold` elements as `elided<hash=...>`
  /// (Tensor::hash()) instead of their bytes. Such text does not parse back.
  bool elideLargeConstants = true;
  /// Constants with at most this many numeric elements print as a value list.
  size_t elideThreshold = 16;
};

/// The whole model: header fields, metadata, functions, training info, main graph.
std::string printModel(const Model &m, const PrintOptions &opts = {});
/// One graph (and its subgraphs), as it appears inside `model { ... }`.
std::string printGraph(const Graph &g, const PrintOptions &opts = {});

} // namespace llmopt
