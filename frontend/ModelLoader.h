// Loads a model in any input form llmopt reads, chosen by file extension.
#pragma once

#include <memory>
#include <string>

#include "ir/Graph.h"

namespace llmopt {

/// `.llir`: llmopt IR text; `.onnxtxt`: ONNX text syntax; anything else: an ONNX
/// protobuf file (external data next to it). The result has passed the verifier and
/// checkInputModel (finite weights, known ops, outputs).
Expected<std::unique_ptr<Model>> loadModel(const std::string &path);

} // namespace llmopt
