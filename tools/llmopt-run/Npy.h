// NumPy .npy files (format 1.0-3.0, C order, little-endian) <-> Tensor.
#pragma once

#include <string>

#include "ir/Tensor.h"

namespace llmopt {

Expected<Tensor> readNpy(const std::string &path);
Status writeNpy(const Tensor &t, const std::string &path);

} // namespace llmopt
