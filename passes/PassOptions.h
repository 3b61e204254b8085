// Options of one pass as written in the pipeline (`key=value;flag`), and a checked
// reader that turns them into a pass's option struct.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ir/Status.h"

namespace llmopt {

/// Raw `key=value;flag` entries in the order written.
struct PassOptionList {
  std::vector<std::pair<std::string, std::optional<std::string>>> entries;
};

/// Reads options for pass `pass`; every accessor marks its key as known, and
/// finish() rejects any entry that no accessor asked for, listing the accepted keys.
class OptionReader {
public:
  OptionReader(std::string pass, const PassOptionList &opts) : pass_(std::move(pass)), opts_(opts) {}

  Expected<int64_t> getInt(const std::string &key, int64_t dflt, int64_t lo = INT64_MIN,
                           int64_t hi = INT64_MAX);
  Expected<double> getDouble(const std::string &key, double dflt, double lo, double hi);
  Expected<std::string> getString(const std::string &key, const std::string &dflt);
  /// One of `choices` (e.g. method=rtn|gptq).
  Expected<std::string> getChoice(const std::string &key, const std::vector<std::string> &choices,
                                  const std::string &dflt);
  /// A bare flag (`sym`); `flag=true|false` is accepted too.
  Expected<bool> getFlag(const std::string &key, bool dflt);
  /// Comma-separated integers (`keep=0,2,4`).
  Expected<std::vector<int64_t>> getIntList(const std::string &key, std::vector<int64_t> dflt);
  Status finish() const;

private:
  const std::optional<std::string> *find(const std::string &key);
  Status bad(const std::string &key, const std::string &value, const std::string &expected) const;
  std::string pass_;
  const PassOptionList &opts_;
  std::vector<std::string> known_;
};

} // namespace llmopt
