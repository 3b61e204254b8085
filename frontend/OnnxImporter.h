// ONNX frontend: ModelProto (file or bytes) -> IR, as written (no pattern lifting).
#pragma once

#include <memory>
#include <string>

#include "ir/Graph.h"

namespace onnx {
class ModelProto;
}

namespace llmopt {

struct ImportOptions {
  /// Run llmopt's verifier on the imported model (off only in tests of the importer).
  bool verify = true;
};

/// Reads an ONNX model file. External data is mmapped relative to the model's
/// directory; paths that escape it are refused. Errors name the file and the node,
/// tensor or field at fault.
Expected<std::unique_ptr<Model>> importOnnxFile(const std::string &path,
                                                const ImportOptions &opts = {});
/// Parses serialized ModelProto bytes (at most 2 GiB) and converts them; `baseDir`
/// resolves external data. The same path as importOnnxFile, minus the file.
Expected<std::unique_ptr<Model>> importOnnxBytes(const void *data, size_t size,
                                                 const std::string &baseDir,
                                                 const std::string &sourceName,
                                                 const ImportOptions &opts = {});
/// Converts an already-parsed ModelProto; `baseDir` resolves external data.
Expected<std::unique_ptr<Model>> importOnnx(const onnx::ModelProto &proto,
                                            const std::string &baseDir,
                                            const std::string &sourceName,
                                            const ImportOptions &opts = {});
/// Parses ONNX's textual syntax (onnx::OnnxParser, e.g. `<ir_version: 8, ...> agraph (...) => (...) {...}`).
Expected<std::unique_ptr<Model>> importOnnxText(const std::string &text,
                                                const ImportOptions &opts = {});

} // namespace llmopt
