// Unicode lookups over the generated tables, and UTF-8 coding.
#include "frontend/tokenizer/Unicode.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <memory>

namespace llmopt::tok {
namespace {

#include "frontend/tokenizer/UnicodeTables.inc"

static_assert(kGcCount == static_cast<int>(Gc::Co) + 1, "Gc enum out of step with the tables");

constexpr char32_t kReplacement = 0xFFFD;

/// True if c lies in one of the sorted [first, last] pairs.
template <size_t N> bool inPairs(const uint32_t (&pairs)[N], char32_t c) {
  static_assert(N % 2 == 0);
  size_t lo = 0, hi = N / 2;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (pairs[2 * mid + 1] < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < N / 2 && pairs[2 * lo] <= c;
}

Gc lookupCategory(char32_t c) {
  // Last run whose start is <= c.
  const uint32_t key = (static_cast<uint32_t>(c) << 5) | 31u;
  const uint32_t *it = std::upper_bound(std::begin(kGcRuns), std::end(kGcRuns), key);
  return static_cast<Gc>(*(it - 1) & 31u);
}

/// The BMP, expanded once: most text never leaves it, and a byte lookup beats a search.
const std::array<Gc, 0x10000> &bmpCategories() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<Gc, 0x10000>>();
    for (char32_t c = 0; c < 0x10000; ++c)
      (*t)[c] = lookupCategory(c);
    return t;
  }();
  return *table;
}

} // namespace

const char *unicodeVersion() { return kUnicodeVersion; }

Gc category(char32_t c) {
  if (c < 0x10000)
    return bmpCategories()[c];
  if (c > 0x10FFFF)
    return Gc::Cn;
  return lookupCategory(c);
}

bool isWhitespace(char32_t c) {
  if (c < 0x80)
    return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return inPairs(kWhiteSpace, c);
}

bool isWordChar(char32_t c) {
  Gc g = category(c);
  if (isLetter(g) || isMark(g) || g == Gc::Nd || g == Gc::Nl || g == Gc::Pc)
    return true;
  // Join_Control and the Other_Alphabetic symbols (circled/parenthesized/squared Latin letters).
  return c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
         (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
         (c >= 0x1F170 && c <= 0x1F189);
}

bool isBertPunctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  return inPairs(kBertPunct, c);
}

bool isBertNonspacingMark(char32_t c) { return c >= 0x300 && inPairs(kBertMn, c); }

bool isBertControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r')
    return false;
  return inPairs(kBertOther, c);
}

bool isBertChineseChar(char32_t c) {
  // tokenizers' bert.rs; note 0x2B920 where BERT's original has 0x2B820.
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void appendLower(char32_t c, std::u32string &out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  if (c == 0x130) { // LATIN CAPITAL LETTER I WITH DOT ABOVE -> i + COMBINING DOT ABOVE
    out.push_back(U'i');
    out.push_back(0x307);
    return;
  }
  constexpr size_t n = std::size(kLower) / 2;
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kLower[2 * mid] < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  out.push_back(lo < n && kLower[2 * lo] == c ? static_cast<char32_t>(kLower[2 * lo + 1]) : c);
}

uint8_t combiningClass(char32_t c) {
  if (c < 0x300)
    return 0;
  constexpr size_t n = std::size(kCombiningClass) / 3;
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kCombiningClass[3 * mid + 1] < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && kCombiningClass[3 * lo] <= c ? static_cast<uint8_t>(kCombiningClass[3 * lo + 2])
                                                : 0;
}

static void appendDecomposition(char32_t c, std::u32string &out) {
  constexpr char32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
  constexpr char32_t TCount = 28, NCount = 21 * 28, SCount = 19 * 21 * 28;
  if (c >= SBase && c < SBase + SCount) { // Hangul syllables decompose algorithmically.
    char32_t s = c - SBase;
    out.push_back(LBase + s / NCount);
    out.push_back(VBase + (s % NCount) / TCount);
    if (s % TCount)
      out.push_back(TBase + s % TCount);
    return;
  }
  if (c < 0xC0) {
    out.push_back(c);
    return;
  }
  constexpr size_t n = std::size(kDecompIndex) / 2;
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kDecompIndex[2 * mid] < c)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < n && kDecompIndex[2 * lo] == c) {
    uint32_t packed = kDecompIndex[2 * lo + 1];
    out.append(kDecompData + (packed >> 3), kDecompData + (packed >> 3) + (packed & 7));
    return;
  }
  out.push_back(c);
}

std::u32string nfd(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s)
    appendDecomposition(c, out);
  // Canonical ordering: stable sort of each run of nonzero-class marks by class.
  for (size_t i = 0; i < out.size();) {
    if (combiningClass(out[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < out.size() && combiningClass(out[j]) != 0)
      ++j;
    std::stable_sort(out.begin() + i, out.begin() + j,
                     [](char32_t a, char32_t b) { return combiningClass(a) < combiningClass(b); });
    i = j;
  }
  return out;
}

char32_t decodeUtf8(std::string_view s, size_t &i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  if (b < 0x80) {
    ++i;
    return b;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
  char32_t c;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1, c = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2, c = b & 0x0F;
    if (b == 0xE0)
      lo = 0xA0;
    else if (b == 0xED)
      hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3, c = b & 0x07;
    if (b == 0xF0)
      lo = 0x90;
    else if (b == 0xF4)
      hi = 0x8F;
  } else {
    ++i;
    return kReplacement;
  }
  size_t k = i + 1;
  for (size_t n = 0; n < need; ++n, ++k) {
    if (k >= s.size() || byte(k) < lo || byte(k) > hi) {
      i = k; // skip the maximal invalid subpart: the lead and the valid continuations so far
      return kReplacement;
    }
    c = (c << 6) | (byte(k) & 0x3F);
    lo = 0x80, hi = 0xBF;
  }
  i = k;
  return c;
}

void appendUtf8(char32_t c, std::string &out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::u32string toUtf32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();)
    out.push_back(decodeUtf8(s, i));
  return out;
}

std::string toUtf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s)
    appendUtf8(c, out);
  return out;
}

std::string utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    size_t start = i;
    char32_t c = decodeUtf8(bytes, i);
    if (c == kReplacement && !(i - start == 3 && bytes.substr(start, 3) == "\xEF\xBF\xBD"))
      appendUtf8(c, out);
    else
      out.append(bytes.substr(start, i - start));
  }
  return out;
}

CodePoints::CodePoints(std::string_view s) {
  cps.reserve(s.size());
  off.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size();) {
    off.push_back(static_cast<uint32_t>(i));
    cps.push_back(decodeUtf8(s, i));
  }
  off.push_back(static_cast<uint32_t>(s.size()));
}

} // namespace llmopt::tok
