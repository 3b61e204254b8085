// `--emit=cpp`: a decoder LLM's IR (after fuse-llm and int4 quantization) as a
// self-contained C++ project: model.h (C API), model.cpp (the straight-line program),
// weights.bin (mmapped; int4 weights repacked into the kernel library's format), the
// runtime and kernel sources, and a CMakeLists.txt. See docs/codegen.md.
#pragma once

#include <string>

#include "ir/Graph.h"
#include "ir/Status.h"

namespace llmopt::codegen {

struct CppEmitOptions {
  /// 4: int8 activations per block (ORT accuracy_level 4), 0: f32 compute. The generated
  /// code can change it at run time (LLMOPT_ACCURACY_LEVEL, llmopt_model_set_accuracy_level).
  int64_t accuracyLevel = 4;
  /// Rows of the rotary tables when the model's metadata names no max_position_embeddings.
  int64_t defaultMaxPositions = 2048;
};

/// Writes the project into `dir` atomically (a temporary directory renamed into place).
/// An op, operand or shape the emitter does not handle is an error naming the node.
Status emitCpp(const Model &model, const std::string &dir, const CppEmitOptions &opts = {});

} // namespace llmopt::codegen
