// The soft-label file: top-k at a temperature, writer and reader (see SoftLabels.h).
#include "passes/distill/SoftLabels.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <numeric>

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

namespace llmopt::distill {

namespace {

// The file is little-endian; so is every host llmopt builds on (x86-64, aarch64).
static_assert(std::endian::native == std::endian::little, "soft-label I/O assumes little-endian");

template <typename T> void put(std::vector<uint8_t> &b, T v) {
  const auto *p = reinterpret_cast<const uint8_t *>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}
template <typename T> T get(const uint8_t *&p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  p += sizeof(T);
  return v;
}

} // namespace

void topKLogProbs(std::span<const float> logits, uint32_t topk, float temperature,
                  std::vector<int32_t> &ids, std::vector<float> &logp) {
  const int64_t V = static_cast<int64_t>(logits.size());
  const double invT = 1.0 / temperature;
  double mx = -INFINITY;
  for (float x : logits)
    mx = std::max(mx, static_cast<double>(x) * invT);
  double sum = 0;
  for (float x : logits)
    sum += std::exp(static_cast<double>(x) * invT - mx);
  const double lse = mx + std::log(sum);
  ids.resize(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  const size_t k = std::min<size_t>(topk, static_cast<size_t>(V));
  std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                    [&](int32_t a, int32_t b) {
                      const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
                      return la > lb || (la == lb && a < b);
                    });
  ids.resize(k);
  logp.resize(k);
  for (size_t i = 0; i < k; ++i)
    logp[i] = static_cast<float>(static_cast<double>(logits[static_cast<size_t>(ids[i])]) * invT - lse);
}

Expected<std::unique_ptr<SoftLabelWriter>> SoftLabelWriter::create(const std::string &path,
                                                                   const SoftLabelHeader &h) {
  if (h.topk == 0 || h.topk > h.vocab)
    return errorf("{}: top-k {} must be in [1, vocab {}]", path, h.topk, h.vocab);
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0)
    return errorf("{}: cannot create a temporary file beside it: {}", path, std::strerror(errno));
  ::fchmod(fd, 0644); // mkstemp makes 0600; the finished file gets what the ONNX writer gives
  std::FILE *f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return errorf("{}: cannot open the temporary file: {}", path, std::strerror(errno));
  }
  std::unique_ptr<SoftLabelWriter> w(new SoftLabelWriter(path, tmp, f, h));
  w->h_.positions = w->h_.windows = 0;
  LLMOPT_RETURN_IF_ERROR(w->writeHeader());
  return w;
}

SoftLabelWriter::~SoftLabelWriter() {
  if (f_) {
    std::fclose(f_);
    ::unlink(tmp_.c_str());
  }
}

Status SoftLabelWriter::writeHeader() {
  buf_.clear();
  buf_.insert(buf_.end(), kSoftLabelMagic, kSoftLabelMagic + 8);
  put<uint32_t>(buf_, kSoftLabelVersion);
  put<uint32_t>(buf_, kSoftLabelHeaderBytes);
  put<uint32_t>(buf_, h_.vocab);
  put<uint32_t>(buf_, h_.topk);
  put<float>(buf_, h_.temperature);
  put<uint32_t>(buf_, 0);
  put<uint64_t>(buf_, h_.modelHash);
  put<uint64_t>(buf_, h_.positions);
  put<uint64_t>(buf_, h_.windows);
  put<uint64_t>(buf_, 0);
  if (std::fseek(f_, 0, SEEK_SET) != 0 || std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
    return errorf("{}: cannot write the header: {}", path_, std::strerror(errno));
  return Status::ok();
}

Status SoftLabelWriter::addWindow(std::span<const int64_t> tokens, std::span<const float> logits) {
  const size_t n = tokens.size(), V = h_.vocab;
  if (logits.size() != n * V)
    return errorf("{}: a window of {} tokens needs {} x {} logits, got {} values", path_, n, n, V,
                  logits.size());
  if (std::fseek(f_, 0, SEEK_END) != 0)
    return errorf("{}: cannot seek: {}", path_, std::strerror(errno));
  for (size_t p = 0; p < n; ++p) {
    topKLogProbs(logits.subspan(p * V, V), h_.topk, h_.temperature, ids_, logp_);
    buf_.clear();
    put<int32_t>(buf_, static_cast<int32_t>(tokens[p]));
    put<uint32_t>(buf_, static_cast<uint32_t>(p));
    for (int32_t id : ids_)
      put<int32_t>(buf_, id);
    for (float lp : logp_)
      put<float>(buf_, lp);
    if (std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
      return errorf("{}: cannot write: {}", path_, std::strerror(errno));
  }
  h_.positions += n;
  h_.windows += 1;
  return Status::ok();
}

Status SoftLabelWriter::finish() {
  LLMOPT_RETURN_IF_ERROR(writeHeader());
  const bool flushed = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!flushed || !closed) {
    ::unlink(tmp_.c_str());
    return errorf("{}: cannot write: {}", path_, std::strerror(errno));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    ::unlink(tmp_.c_str());
    return errorf("{}: cannot rename into place: {}", path_, std::strerror(errno));
  }
  return Status::ok();
}

Expected<std::unique_ptr<SoftLabelReader>> SoftLabelReader::open(const std::string &path) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    return errorf("{}: cannot open: {}", path, std::strerror(errno));
  std::unique_ptr<SoftLabelReader> r(new SoftLabelReader(path, f));
  uint8_t hb[kSoftLabelHeaderBytes];
  if (std::fread(hb, 1, sizeof hb, f) != sizeof hb)
    return errorf("{}: shorter than the {}-byte soft-label header", path, kSoftLabelHeaderBytes);
  if (std::memcmp(hb, kSoftLabelMagic, 8) != 0)
    return errorf("{}: not a soft-label file (magic is not LLMOSOFT)", path);
  const uint8_t *p = hb + 8;
  const uint32_t version = get<uint32_t>(p), headerBytes = get<uint32_t>(p);
  if (version != kSoftLabelVersion || headerBytes != kSoftLabelHeaderBytes)
    return errorf("{}: soft-label version {} with a {}-byte header; this reader knows version {} "
                  "({} bytes)", path, version, headerBytes, kSoftLabelVersion, kSoftLabelHeaderBytes);
  SoftLabelHeader &h = r->h_;
  h.vocab = get<uint32_t>(p);
  h.topk = get<uint32_t>(p);
  h.temperature = get<float>(p);
  (void)get<uint32_t>(p);
  h.modelHash = get<uint64_t>(p);
  h.positions = get<uint64_t>(p);
  h.windows = get<uint64_t>(p);
  if (h.topk == 0 || h.topk > h.vocab)
    return errorf("{}: top-k {} is not in [1, vocab {}]", path, h.topk, h.vocab);
  return r;
}

SoftLabelReader::~SoftLabelReader() { std::fclose(f_); }

bool SoftLabelReader::next(SoftLabelRecord &r) {
  if (read_ == h_.positions || !st_)
    return false;
  buf_.resize(h_.recordBytes());
  if (std::fread(buf_.data(), 1, buf_.size(), f_) != buf_.size()) {
    st_ = errorf("{}: ends after {} of {} records", path_, read_, h_.positions);
    return false;
  }
  const uint8_t *p = buf_.data();
  r.token = get<int32_t>(p);
  r.pos = get<uint32_t>(p);
  r.ids.resize(h_.topk);
  r.logp.resize(h_.topk);
  for (int32_t &id : r.ids)
    id = get<int32_t>(p);
  for (float &lp : r.logp)
    lp = get<float>(p);
  ++read_;
  return true;
}

} // namespace llmopt::distill
