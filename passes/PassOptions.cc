// OptionReader: typed, checked access to a pass's pipeline options.
#include "passes/PassOptions.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace llmopt {

const std::optional<std::string> *OptionReader::find(const std::string &key) {
  known_.push_back(key);
  const std::optional<std::string> *found = nullptr;
  for (const auto &[k, v] : opts_.entries)
    if (k == key)
      found = &v; // the last occurrence wins, as on command lines
  return found;
}

Status OptionReader::bad(const std::string &key, const std::string &value,
                         const std::string &expected) const {
  return errorf("pass '{}': option '{}' has value '{}', expected {}", pass_, key, value, expected);
}

static bool parseInt(const std::string &s, int64_t &out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

Expected<int64_t> OptionReader::getInt(const std::string &key, int64_t dflt, int64_t lo,
                                       int64_t hi) {
  const auto *v = find(key);
  if (!v)
    return dflt;
  int64_t out = 0;
  if (!*v || !parseInt(**v, out) || out < lo || out > hi)
    return bad(key, v->value_or(""), fmt::format("an integer in [{}, {}]", lo, hi));
  return out;
}

Expected<double> OptionReader::getDouble(const std::string &key, double dflt, double lo,
                                         double hi) {
  const auto *v = find(key);
  if (!v)
    return dflt;
  char *end = nullptr;
  double out = *v ? std::strtod((*v)->c_str(), &end) : 0;
  if (!*v || (*v)->empty() || *end != '\0' || !(out >= lo && out <= hi))
    return bad(key, v->value_or(""), fmt::format("a number in [{}, {}]", lo, hi));
  return out;
}

Expected<std::string> OptionReader::getString(const std::string &key, const std::string &dflt) {
  const auto *v = find(key);
  if (!v)
    return dflt;
  if (!*v)
    return bad(key, "", "key=value");
  return **v;
}

Expected<std::string> OptionReader::getChoice(const std::string &key,
                                              const std::vector<std::string> &choices,
                                              const std::string &dflt) {
  // A bare choice is accepted as a flag too (`quant-int4<sym>` for `mode=sym`).
  for (const auto &c : choices)
    for (const auto &[k, v] : opts_.entries)
      if (k == c && !v) {
        known_.push_back(c);
      }
  const auto *v = find(key);
  std::string chosen = dflt;
  if (v) {
    if (!*v || std::find(choices.begin(), choices.end(), **v) == choices.end())
      return bad(key, v->value_or(""), fmt::format("one of {}", fmt::join(choices, "|")));
    chosen = **v;
  }
  for (const auto &[k, val] : opts_.entries)
    if (!val && std::find(choices.begin(), choices.end(), k) != choices.end())
      chosen = k;
  return chosen;
}

Expected<bool> OptionReader::getFlag(const std::string &key, bool dflt) {
  const auto *v = find(key);
  if (!v)
    return dflt;
  if (!*v || **v == "true" || **v == "1")
    return true;
  if (**v == "false" || **v == "0")
    return false;
  return bad(key, **v, "true|false");
}

Expected<std::vector<int64_t>> OptionReader::getIntList(const std::string &key,
                                                        std::vector<int64_t> dflt) {
  const auto *v = find(key);
  if (!v)
    return dflt;
  if (!*v)
    return bad(key, "", "a comma-separated list of integers");
  std::vector<int64_t> out;
  size_t start = 0;
  const std::string &s = **v;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    int64_t x = 0;
    if (!parseInt(item, x))
      return bad(key, s, "a comma-separated list of integers");
    out.push_back(x);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return out;
}

Status OptionReader::finish() const {
  for (const auto &[k, v] : opts_.entries)
    if (std::find(known_.begin(), known_.end(), k) == known_.end()) {
      if (known_.empty())
        return errorf("pass '{}' takes no options, got '{}'", pass_, k);
      return errorf("pass '{}': unknown option '{}'; accepted: {}", pass_, k,
                    fmt::join(known_, ", "));
    }
  return Status::ok();
}

} // namespace llmopt
