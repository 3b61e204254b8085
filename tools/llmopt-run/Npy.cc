// .npy reader/writer: the header is a Python dict literal with descr, fortran_order
// and shape; only what numpy writes for plain arrays is accepted.
#include "tools/llmopt-run/Npy.h"

#include <cstring>
#include <fstream>
#include <regex>

#include <fmt/format.h>

namespace llmopt {
namespace {

struct DescrMap {
  const char *descr;
  DType dtype;
};
constexpr DescrMap kDescrs[] = {
    {"<f4", DType::F32}, {"<f8", DType::F64}, {"<f2", DType::F16}, {"<i8", DType::I64},
    {"<i4", DType::I32}, {"<i2", DType::I16}, {"|i1", DType::I8},  {"|u1", DType::U8},
    {"<u2", DType::U16}, {"<u4", DType::U32}, {"<u8", DType::U64}, {"|b1", DType::Bool}};

} // namespace

Expected<Tensor> readNpy(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("{}: cannot open", path);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0)
    return errorf("{}: not a .npy file (bad magic)", path);
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t headerLen, headerStart;
  if (major == 1) {
    headerLen = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    headerStart = 10;
  } else {
    if (bytes.size() < 12)
      return errorf("{}: truncated .npy header", path);
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    headerLen = len;
    headerStart = 12;
  }
  if (headerStart + headerLen > bytes.size())
    return errorf("{}: truncated .npy header", path);
  std::string header = bytes.substr(headerStart, headerLen);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr':\s*'([^']+)')")))
    return errorf("{}: .npy header has no descr", path);
  std::string descr = m[1];
  if (descr == "<b1")
    descr = "|b1";
  if (std::regex_search(header, std::regex(R"('fortran_order':\s*True)")))
    return errorf("{}: Fortran-order arrays are not supported; save with np.ascontiguousarray", path);
  if (!std::regex_search(header, m, std::regex(R"('shape':\s*\(([^)]*)\))")))
    return errorf("{}: .npy header has no shape", path);
  std::vector<int64_t> shape;
  std::string dims = m[1];
  std::regex num(R"(\d+)");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));
  const DescrMap *found = nullptr;
  for (const DescrMap &d : kDescrs)
    if (descr == d.descr)
      found = &d;
  if (!found)
    return errorf("{}: .npy dtype '{}' is not supported", path, descr);
  Tensor t = Tensor::zeros(found->dtype, shape);
  const size_t dataStart = headerStart + headerLen;
  if (bytes.size() - dataStart != t.nbytes())
    return errorf("{}: .npy holds {} data bytes, shape {} of {} needs {}", path,
                  bytes.size() - dataStart, dims, descr, t.nbytes());
  if (t.nbytes())
    std::memcpy(t.mutableData(), bytes.data() + dataStart, t.nbytes());
  return t;
}

Status writeNpy(const Tensor &t, const std::string &path) {
  const DescrMap *found = nullptr;
  for (const DescrMap &d : kDescrs)
    if (d.dtype == t.dtype())
      found = &d;
  if (!found)
    return errorf("{}: cannot write {} tensors as .npy", path, dtypeName(t.dtype()));
  std::string shape;
  for (int64_t d : t.shape())
    shape += std::to_string(d) + ",";
  if (t.shape().size() > 1)
    shape.pop_back();
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}",
                                   found->descr, shape);
  // Pad with spaces so the data starts 64-byte aligned; the header ends in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out)
    return errorf("{}: cannot create", path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char *>(&len), 2);
  out << header;
  out.write(reinterpret_cast<const char *>(t.data()), static_cast<std::streamsize>(t.nbytes()));
  if (!out)
    return errorf("{}: write failed", path);
  return Status::ok();
}

} // namespace llmopt
