// The soft-label file distill-targets writes: the teacher's top-k log-probabilities at a
// temperature, per position of the calibration text, streamed to disk. Little-endian; the
// layout is in docs/formats.md ("Soft labels") and tools/distill/softlabels.py reads it.
//
//   header (64 bytes)  "LLMOSOFT" u32 version=1 u32 header_bytes=64 u32 vocab u32 topk
//                      f32 temperature u32 flags=0 u64 model_hash u64 positions
//                      u64 windows u64 reserved=0
//   record (8 + 8*topk bytes, `positions` of them)
//                      i32 token, u32 pos (in its window; 0 starts a window),
//                      i32 ids[topk], f32 logp[topk]  (descending logp, ties: lower id first)
//
// Record p holds the teacher's distribution for the token after `token`, i.e.
// log softmax(logits[p] / T) restricted to its topk largest entries.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ir/Status.h"

namespace llmopt::distill {

inline constexpr char kSoftLabelMagic[8] = {'L', 'L', 'M', 'O', 'S', 'O', 'F', 'T'};
inline constexpr uint32_t kSoftLabelVersion = 1;
inline constexpr uint32_t kSoftLabelHeaderBytes = 64;

struct SoftLabelHeader {
  uint32_t vocab = 0, topk = 0;
  float temperature = 1.f;
  uint64_t modelHash = 0;
  uint64_t positions = 0, windows = 0; ///< filled in by the writer when it finishes
  /// Bytes of one record.
  uint64_t recordBytes() const { return 8 + 8 * static_cast<uint64_t>(topk); }
};

/// One position: the input token, its index in its window, the top-k ids and log-probs.
struct SoftLabelRecord {
  int32_t token = 0;
  uint32_t pos = 0;
  std::vector<int32_t> ids;
  std::vector<float> logp;
};

/// The `topk` largest entries of log softmax(logits / T) over `logits` (one position),
/// descending, ties to the lower id; the softmax sums in double.
void topKLogProbs(std::span<const float> logits, uint32_t topk, float temperature,
                  std::vector<int32_t> &ids, std::vector<float> &logp);

/// Streams records to a temporary file beside `path`; finish() writes the counts into the
/// header and renames the file into place. Destroyed unfinished, it removes the temporary.
class SoftLabelWriter {
public:
  static Expected<std::unique_ptr<SoftLabelWriter>> create(const std::string &path,
                                                           const SoftLabelHeader &h);
  ~SoftLabelWriter();
  /// Adds one window: `tokens` [n] and the teacher's `logits` [n, vocab], row-major.
  Status addWindow(std::span<const int64_t> tokens, std::span<const float> logits);
  Status finish();
  const SoftLabelHeader &header() const { return h_; }

private:
  SoftLabelWriter(std::string path, std::string tmp, std::FILE *f, const SoftLabelHeader &h)
      : path_(std::move(path)), tmp_(std::move(tmp)), f_(f), h_(h) {}
  Status writeHeader();
  std::string path_, tmp_;
  std::FILE *f_;
  SoftLabelHeader h_;
  std::vector<uint8_t> buf_;
  std::vector<int32_t> ids_;
  std::vector<float> logp_;
};

/// Reads a soft-label file record by record (checks magic, version, sizes).
class SoftLabelReader {
public:
  static Expected<std::unique_ptr<SoftLabelReader>> open(const std::string &path);
  ~SoftLabelReader();
  const SoftLabelHeader &header() const { return h_; }
  /// The next record; false after the last one (or on a short file: see status()).
  bool next(SoftLabelRecord &r);
  const Status &status() const { return st_; }

private:
  SoftLabelReader(std::string path, std::FILE *f) : path_(std::move(path)), f_(f) {}
  std::string path_;
  std::FILE *f_;
  SoftLabelHeader h_;
  uint64_t read_ = 0;
  std::vector<uint8_t> buf_;
  Status st_;
};

} // namespace llmopt::distill
