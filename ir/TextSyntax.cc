// Quoting, number spelling and hex for the IR text form.
#include "ir/TextSyntax.h"

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace llmopt::text {

std::string quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    case '\r': out += "\\r"; break;
    default:
      if (c >= 0x20 && c < 0x7f)
        out += ch;
      else
        out += fmt::format("\\x{:02x}", c);
    }
  }
  out += '"';
  return out;
}

bool isBareWord(std::string_view s) {
  if (s.empty() || !isWordStart(s[0]))
    return false;
  for (char c : s)
    if (!isWordChar(c))
      return false;
  return true;
}

bool isBareValueName(std::string_view s) {
  if (s.empty() || s.back() == ':')
    return false;
  for (char c : s)
    if (!isValueNameChar(c))
      return false;
  return true;
}

// Shared by f32 and f64: `Bits` is the unsigned integer of the same width.
template <typename F, typename Bits> static std::string formatReal(F v, int hexDigits) {
  const Bits bits = std::bit_cast<Bits>(v);
  if (std::isnan(v)) {
    const Bits quiet = std::bit_cast<Bits>(std::numeric_limits<F>::quiet_NaN());
    const Bits sign = Bits(1) << (sizeof(Bits) * 8 - 1);
    if (bits == quiet)
      return "nan";
    if (bits == (quiet | sign))
      return "-nan";
    return fmt::format("nan(0x{:0{}x})", bits, hexDigits);
  }
  if (std::isinf(v))
    return v < 0 ? "-inf" : "inf";
  std::string s = fmt::format("{}", v); // shortest round-trip spelling
  if (s.find_first_of(".e") == std::string::npos)
    s += ".0";
  return s;
}

std::string formatFloat(float f) { return formatReal<float, uint32_t>(f, 8); }
std::string formatDouble(double d) { return formatReal<double, uint64_t>(d, 16); }

template <typename F, typename Bits> static std::optional<F> parseReal(std::string_view s) {
  const bool neg = !s.empty() && s[0] == '-';
  const std::string_view body = neg ? s.substr(1) : s;
  if (body == "inf")
    return neg ? -std::numeric_limits<F>::infinity() : std::numeric_limits<F>::infinity();
  if (body == "nan")
    return neg ? -std::numeric_limits<F>::quiet_NaN() : std::numeric_limits<F>::quiet_NaN();
  if (body.starts_with("nan(0x") && body.ends_with(")") && !neg) {
    std::string_view hex = body.substr(6, body.size() - 7);
    Bits bits = 0;
    auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), bits, 16);
    if (ec != std::errc() || p != hex.data() + hex.size() || hex.empty())
      return std::nullopt;
    F v = std::bit_cast<F>(bits);
    return std::isnan(v) ? std::optional<F>(v) : std::nullopt;
  }
  if (body.empty() || !(body[0] >= '0' && body[0] <= '9')) // from_chars also takes "infinity"
    return std::nullopt;
  F v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size())
    return std::nullopt;
  return v;
}

std::optional<float> parseFloat(std::string_view s) { return parseReal<float, uint32_t>(s); }
std::optional<double> parseDouble(std::string_view s) { return parseReal<double, uint64_t>(s); }

bool looksLikeFloat(std::string_view s) {
  return s.find_first_of(".eE") != std::string_view::npos || s.find("inf") != s.npos ||
         s.find("nan") != s.npos;
}

template <typename I> static std::optional<I> parseInteger(std::string_view s) {
  I v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size())
    return std::nullopt;
  return v;
}

std::optional<int64_t> parseInt(std::string_view s) { return parseInteger<int64_t>(s); }
std::optional<uint64_t> parseUInt(std::string_view s) { return parseInteger<uint64_t>(s); }

std::string hexEncode(const uint8_t *p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

static int hexValue(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::optional<std::string> hexDecode(std::string_view s) {
  if (s.size() % 2)
    return std::nullopt;
  std::string out(s.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = hexValue(s[2 * i]), lo = hexValue(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

} // namespace llmopt::text
