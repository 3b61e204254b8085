// DType names, widths and storage sizes, generated from ir/DTypes.def.
#include "ir/DType.h"

namespace llmopt {

std::string_view dtypeName(DType t) {
  switch (t) {
#define LLMOPT_DTYPE(ENUM, CODE, NAME, BITS) case DType::ENUM: return NAME;
#include "ir/DTypes.def"
  }
  return "undef";
}

std::optional<DType> parseDType(std::string_view name) {
#define LLMOPT_DTYPE(ENUM, CODE, NAME, BITS) if (name == NAME) return DType::ENUM;
#include "ir/DTypes.def"
  return std::nullopt;
}

int dtypeBits(DType t) {
  switch (t) {
#define LLMOPT_DTYPE(ENUM, CODE, NAME, BITS) case DType::ENUM: return BITS;
#include "ir/DTypes.def"
  }
  return 0;
}

bool isKnownDTypeCode(int32_t code) {
  switch (code) {
#define LLMOPT_DTYPE(ENUM, CODE, NAME, BITS) case CODE: return true;
#include "ir/DTypes.def"
  }
  return false;
}

size_t storageBytes(DType t, int64_t count) {
  int bits = dtypeBits(t);
  return static_cast<size_t>((count * bits + 7) / 8);
}

} // namespace llmopt
