// Tensor storage, element access and the mmap wrapper.
#include "ir/Tensor.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <new>
#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace llmopt {

Expected<std::shared_ptr<MappedFile>> MappedFile::open(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errorf("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return errorf("{}: not a regular file", path);
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<size_t>(st.st_size);
  if (m->size_ > 0) {
    void *p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return errorf("{}: mmap failed: {}", path, std::strerror(errno));
    }
    m->data_ = static_cast<const uint8_t *>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_)
    ::munmap(const_cast<uint8_t *>(data_), size_);
}

void MappedFile::release(size_t offset, size_t len) const {
  if (!data_ || offset >= size_)
    return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t begin = (offset + page - 1) / page * page;
  size_t end = std::min(offset + len, size_) / page * page;
  if (end > begin)
    ::madvise(const_cast<uint8_t *>(data_) + begin, end - begin, MADV_DONTNEED);
}

static int64_t product(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t Tensor::numel() const { return product(shape_); }

static std::shared_ptr<uint8_t> allocate(size_t n) {
  // Large buffers come straight from mmap and go back to the system when freed: glibc
  // keeps freed blocks below its adaptive mmap threshold (up to 32 MiB) in its heap, so a
  // pass rewriting one weight after another grew RSS with the model (prune-magnitude on
  // 2 GiB: 460 MiB, 262 MiB this way). Fresh pages are zero: no memset either.
  constexpr size_t kMapAbove = size_t(1) << 20;
  if (n >= kMapAbove) {
    void *p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED)
      return std::shared_ptr<uint8_t>(static_cast<uint8_t *>(p),
                                      [n](uint8_t *q) { ::munmap(q, n); });
  }
  // 64-byte aligned so SIMD kernels and Eigen maps can use the data directly.
  size_t padded = (n + 63) / 64 * 64;
  void *p = ::operator new[](padded == 0 ? 64 : padded, std::align_val_t(64));
  std::memset(p, 0, padded == 0 ? 64 : padded);
  return std::shared_ptr<uint8_t>(static_cast<uint8_t *>(p), [](uint8_t *q) {
    ::operator delete[](q, std::align_val_t(64));
  });
}

Tensor Tensor::zeros(DType dt, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  if (dt == DType::String) {
    t.strings_.resize(static_cast<size_t>(t.numel()));
    return t;
  }
  t.nbytes_ = storageBytes(dt, t.numel());
  t.data_ = allocate(t.nbytes_);
  return t;
}

Tensor Tensor::fromBytes(DType dt, std::vector<int64_t> shape, const void *bytes, size_t n) {
  Tensor t = zeros(dt, std::move(shape));
  assert(n == t.nbytes_ && "byte count does not match dtype and shape");
  if (n)
    std::memcpy(const_cast<uint8_t *>(t.data_.get()), bytes, n);
  return t;
}

Tensor Tensor::fromMapping(DType dt, std::vector<int64_t> shape,
                           std::shared_ptr<const MappedFile> file, size_t offset) {
  Tensor t;
  t.dtype_ = dt;
  t.shape_ = std::move(shape);
  t.nbytes_ = storageBytes(dt, t.numel());
  t.data_ = std::shared_ptr<const uint8_t>(file, file->data() + offset);
  t.mapped_ = true;
  t.file_ = std::move(file);
  t.mapOffset_ = offset;
  return t;
}

Tensor Tensor::strings(std::vector<int64_t> shape, std::vector<std::string> values) {
  Tensor t;
  t.dtype_ = DType::String;
  t.shape_ = std::move(shape);
  t.strings_ = std::move(values);
  return t;
}

uint8_t *Tensor::mutableData() {
  if (mapped_ || data_.use_count() > 1) {
    auto fresh = allocate(nbytes_);
    if (nbytes_)
      std::memcpy(fresh.get(), data_.get(), nbytes_);
    data_ = fresh;
    mapped_ = false;
    file_.reset();
  }
  return const_cast<uint8_t *>(data_.get());
}

float halfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else { // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t floatToHalf(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) // inf / nan
    return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
  if (absx >= 0x477ff000u) // rounds to >= 65520: overflow to inf
    return static_cast<uint16_t>(sign | 0x7c00u);
  if (absx < 0x38800000u) { // subnormal or zero in half
    float a = std::bit_cast<float>(absx);
    // Scale so the half subnormal ulp (2^-24) becomes 1, round to nearest even.
    float scaled = a * 16777216.0f;
    uint32_t r = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t mant = absx & 0x7fffffu;
  uint32_t exp = (absx >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
    ++h;
  return static_cast<uint16_t>(sign | h);
}

float bf16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t floatToBf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40u); // quiet nan
  uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

static int64_t subByteAt(const uint8_t *p, DType t, int64_t i) {
  const int bits = dtypeBits(t);
  const int perByte = 8 / bits;
  const int shift = static_cast<int>(i % perByte) * bits;
  int64_t v = (p[i / perByte] >> shift) & ((1 << bits) - 1);
  if ((t == DType::I4 || t == DType::I2) && (v & (1 << (bits - 1))))
    v -= (1 << bits);
  return v;
}

double Tensor::getDouble(int64_t i) const {
  const uint8_t *p = data();
  switch (dtype_) {
  case DType::F32: return reinterpret_cast<const float *>(p)[i];
  case DType::F64: return reinterpret_cast<const double *>(p)[i];
  case DType::F16: return halfToFloat(reinterpret_cast<const uint16_t *>(p)[i]);
  case DType::BF16: return bf16ToFloat(reinterpret_cast<const uint16_t *>(p)[i]);
  case DType::U64: return static_cast<double>(reinterpret_cast<const uint64_t *>(p)[i]);
  default: return static_cast<double>(getInt(i));
  }
}

int64_t Tensor::getInt(int64_t i) const {
  const uint8_t *p = data();
  switch (dtype_) {
  case DType::I64: return reinterpret_cast<const int64_t *>(p)[i];
  case DType::I32: return reinterpret_cast<const int32_t *>(p)[i];
  case DType::I16: return reinterpret_cast<const int16_t *>(p)[i];
  case DType::I8: return reinterpret_cast<const int8_t *>(p)[i];
  case DType::U64: return static_cast<int64_t>(reinterpret_cast<const uint64_t *>(p)[i]);
  case DType::U32: return reinterpret_cast<const uint32_t *>(p)[i];
  case DType::U16: return reinterpret_cast<const uint16_t *>(p)[i];
  case DType::U8:
  case DType::Bool: return p[i];
  case DType::I4: case DType::U4: case DType::I2: case DType::U2: return subByteAt(p, dtype_, i);
  case DType::F32: case DType::F64: case DType::F16: case DType::BF16:
    return static_cast<int64_t>(getDouble(i));
  default: assert(false && "getInt on a non-numeric tensor"); return 0;
  }
}

std::vector<int64_t> Tensor::toInts() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i)
    out[static_cast<size_t>(i)] = getInt(i);
  return out;
}

std::vector<float> Tensor::toFloats() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  if (dtype_ == DType::F32) {
    if (!out.empty())
      std::memcpy(out.data(), data(), nbytes_);
    return out;
  }
  for (int64_t i = 0; i < numel(); ++i)
    out[static_cast<size_t>(i)] = static_cast<float>(getDouble(i));
  return out;
}

Tensor Tensor::reshaped(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  assert(t.numel() == numel() && "reshaped: element count differs");
  return t;
}

uint64_t Tensor::hash() const {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const void *p, size_t n) {
    const auto *b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  };
  int32_t code = static_cast<int32_t>(dtype_);
  mix(&code, sizeof code);
  for (int64_t d : shape_)
    mix(&d, sizeof d);
  if (nbytes_)
    mix(data(), nbytes_);
  for (const auto &s : strings_) {
    uint64_t n = s.size();
    mix(&n, sizeof n);
    mix(s.data(), s.size());
  }
  return h;
}

bool Tensor::sameContents(const Tensor &o) const {
  if (dtype_ != o.dtype_ || shape_ != o.shape_ || nbytes_ != o.nbytes_ || strings_ != o.strings_)
    return false;
  return nbytes_ == 0 || std::memcmp(data(), o.data(), nbytes_) == 0;
}

} // namespace llmopt
