// DimExpr arithmetic, canonical printing and parsing of symbol strings.
#include "passes/analysis/DimExpr.h"

#include <algorithm>
#include <cctype>

namespace llmopt {

// Graded order: higher degree first, then lexicographic; the constant term sorts last.
bool DimExpr::MonoLess::operator()(const Monomial &a, const Monomial &b) const {
  if (a.size() != b.size())
    return a.size() > b.size();
  return a < b;
}

DimExpr DimExpr::constant(int64_t v) {
  DimExpr e;
  e.known_ = true;
  if (v != 0)
    e.terms_[{}] = v;
  return e;
}

DimExpr DimExpr::fromTerms(Terms t) {
  DimExpr e;
  e.known_ = true;
  for (auto &[m, c] : t)
    if (c != 0)
      e.terms_.emplace(m, c);
  return e;
}

bool DimExpr::isConstant() const {
  return known_ && (terms_.empty() || (terms_.size() == 1 && terms_.begin()->first.empty()));
}

std::optional<int64_t> DimExpr::asConstant() const {
  if (!isConstant())
    return std::nullopt;
  return terms_.empty() ? 0 : terms_.begin()->second;
}

bool DimExpr::isNonNegative() const {
  if (!known_)
    return false;
  for (const auto &[m, c] : terms_)
    if (c < 0)
      return false;
  return true;
}

static bool isIdentStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
static bool isIdentChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
}
static bool isIdentifier(std::string_view s) {
  if (s.empty() || !isIdentStart(s[0]))
    return false;
  return std::all_of(s.begin(), s.end(), isIdentChar);
}

std::string DimExpr::str() const {
  if (!known_)
    return "?";
  if (terms_.empty())
    return "0";
  if (terms_.size() == 1 && terms_.begin()->second == 1 && terms_.begin()->first.size() == 1)
    return terms_.begin()->first[0]; // a lone symbol, however it is spelled
  std::string out;
  bool first = true;
  for (const auto &[mono, coeff] : terms_) {
    int64_t c = coeff;
    if (!first)
      out += c < 0 ? "-" : "+";
    else if (c < 0)
      out += "-";
    first = false;
    uint64_t mag = c < 0 ? 0 - static_cast<uint64_t>(c) : static_cast<uint64_t>(c);
    std::string body;
    if (mono.empty() || mag != 1)
      body = std::to_string(mag);
    for (const std::string &s : mono) {
      if (!body.empty())
        body += '*';
      body += isIdentifier(s) ? s : "(" + s + ")";
    }
    out += body;
  }
  return out;
}

// ---------------------------------------------------------------- arithmetic

static bool addOv(int64_t a, int64_t b, int64_t &r) { return __builtin_add_overflow(a, b, &r); }
static bool mulOv(int64_t a, int64_t b, int64_t &r) { return __builtin_mul_overflow(a, b, &r); }

DimExpr DimExpr::operator+(const DimExpr &o) const {
  if (!known_ || !o.known_)
    return {};
  Terms t = terms_;
  for (const auto &[m, c] : o.terms_)
    if (addOv(t[m], c, t[m]))
      return {};
  return fromTerms(std::move(t));
}

DimExpr DimExpr::operator-(const DimExpr &o) const {
  if (!known_ || !o.known_)
    return {};
  Terms t = terms_;
  for (const auto &[m, c] : o.terms_) {
    int64_t neg;
    if (mulOv(c, -1, neg) || addOv(t[m], neg, t[m]))
      return {};
  }
  return fromTerms(std::move(t));
}

static std::vector<std::string> mergeMono(const std::vector<std::string> &a,
                                          const std::vector<std::string> &b) {
  std::vector<std::string> m;
  m.reserve(a.size() + b.size());
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(m));
  return m;
}

DimExpr DimExpr::operator*(const DimExpr &o) const {
  if (!known_ || !o.known_)
    return {};
  if (terms_.size() * o.terms_.size() > 64)
    return {}; // keep expressions small
  Terms t;
  for (const auto &[ma, ca] : terms_)
    for (const auto &[mb, cb] : o.terms_) {
      int64_t c;
      Monomial m = mergeMono(ma, mb);
      if (mulOv(ca, cb, c) || addOv(t[m], c, t[m]))
        return {};
    }
  return fromTerms(std::move(t));
}

// Divides monomial term (ma, ca) by (mb, cb) exactly, or fails.
static bool divTerm(const std::vector<std::string> &ma, int64_t ca, const std::vector<std::string> &mb,
                    int64_t cb, std::vector<std::string> &mq, int64_t &cq) {
  if (cb == 0 || ca % cb != 0 || !std::includes(ma.begin(), ma.end(), mb.begin(), mb.end()))
    return false;
  cq = ca / cb;
  mq.clear();
  std::set_difference(ma.begin(), ma.end(), mb.begin(), mb.end(), std::back_inserter(mq));
  return true;
}

DimExpr DimExpr::divExact(const DimExpr &o) const {
  if (!known_ || !o.known_ || o.terms_.empty())
    return {};
  // Multivariate division by the leading term; exact division by a single polynomial
  // always terminates with a zero remainder under a monomial order.
  DimExpr rem = *this;
  DimExpr quot = constant(0);
  const auto &[lm, lc] = *o.terms_.begin();
  for (int guard = 0; guard < 64 && !rem.terms_.empty(); ++guard) {
    const auto &[rm, rc] = *rem.terms_.begin();
    Monomial qm;
    int64_t qc;
    if (!divTerm(rm, rc, lm, lc, qm, qc))
      return {};
    DimExpr q = fromTerms(Terms{{qm, qc}});
    quot = quot + q;
    rem = rem - q * o;
    if (!rem.known_ || !quot.known_)
      return {};
  }
  return rem.terms_.empty() ? quot : DimExpr();
}

DimExpr DimExpr::ceilDiv(const DimExpr &o) const {
  auto a = asConstant(), b = o.asConstant();
  if (a && b && *b != 0) {
    int64_t q = *a / *b;
    if ((*a % *b != 0) && ((*a < 0) == (*b < 0)))
      ++q;
    return constant(q);
  }
  return divExact(o);
}

DimExpr DimExpr::floorDiv(const DimExpr &o) const {
  auto a = asConstant(), b = o.asConstant();
  if (a && b && *b != 0) {
    int64_t q = *a / *b;
    if ((*a % *b != 0) && ((*a < 0) != (*b < 0)))
      --q;
    return constant(q);
  }
  return divExact(o);
}

// ---------------------------------------------------------------- parsing

/// Recursive descent over `expr := term (('+'|'-') term)*`, `term := factor ('*' factor)*`,
/// `factor := int | ident | '(' expr ')' | '-' factor`.
struct DimExprParser {
  std::string_view s;
  size_t pos = 0;

  void skip() {
    while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos])))
      ++pos;
  }
  std::optional<DimExpr> expr() {
    auto lhs = term();
    if (!lhs)
      return std::nullopt;
    for (;;) {
      skip();
      if (pos >= s.size() || (s[pos] != '+' && s[pos] != '-'))
        return lhs;
      char op = s[pos++];
      auto rhs = term();
      if (!rhs)
        return std::nullopt;
      lhs = op == '+' ? *lhs + *rhs : *lhs - *rhs;
    }
  }
  std::optional<DimExpr> term() {
    auto lhs = factor();
    if (!lhs)
      return std::nullopt;
    for (;;) {
      skip();
      if (pos >= s.size() || s[pos] != '*')
        return lhs;
      ++pos;
      auto rhs = factor();
      if (!rhs)
        return std::nullopt;
      lhs = *lhs * *rhs;
    }
  }
  std::optional<DimExpr> factor() {
    skip();
    if (pos >= s.size())
      return std::nullopt;
    char c = s[pos];
    if (c == '-') {
      ++pos;
      auto f = factor();
      return f ? std::optional<DimExpr>(-*f) : std::nullopt;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      int64_t v = 0;
      while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos])))
        if (mulOv(v, 10, v) || addOv(v, s[pos++] - '0', v))
          return std::nullopt;
      if (pos < s.size() && isIdentChar(s[pos]))
        return std::nullopt; // `2x`: not an expression
      return DimExpr::constant(v);
    }
    if (isIdentStart(c)) {
      size_t b = pos;
      while (pos < s.size() && isIdentChar(s[pos]))
        ++pos;
      return atom(s.substr(b, pos - b));
    }
    if (c == '(') {
      int depth = 0;
      size_t b = ++pos;
      for (; pos < s.size(); ++pos) {
        if (s[pos] == '(')
          ++depth;
        else if (s[pos] == ')' && depth-- == 0)
          break;
      }
      if (pos >= s.size())
        return std::nullopt;
      std::string_view inner = s.substr(b, pos - b);
      ++pos;
      DimExprParser sub{inner};
      auto e = sub.expr();
      sub.skip();
      if (e && sub.pos == inner.size())
        return e;
      return atom(inner); // `(batch size)`: an opaque symbol printed in parentheses
    }
    return std::nullopt;
  }
  static DimExpr atom(std::string_view name) {
    return DimExpr::fromTerms(DimExpr::Terms{{{std::string(name)}, 1}});
  }
};

DimExpr DimExpr::symbol(std::string_view s) {
  DimExprParser p{s};
  auto e = p.expr();
  p.skip();
  if (e && p.pos == s.size() && e->known_)
    return *e;
  return DimExprParser::atom(s);
}

DimExpr DimExpr::fromDim(const Dim &d) {
  switch (d.kind) {
  case Dim::Kind::Static: return constant(d.value);
  case Dim::Kind::Symbolic: return d.symbol.empty() ? DimExpr() : symbol(d.symbol);
  case Dim::Kind::Unknown: break;
  }
  return {};
}

Dim DimExpr::toDim() const {
  if (!known_)
    return Dim::unknown();
  if (auto c = asConstant()) // the IR bounds static dims to [0, 2^40]
    return *c >= 0 && *c <= (int64_t{1} << 40) ? Dim::of(*c) : Dim::unknown();
  return Dim::sym(str());
}

SymShape toSymShape(const Dims &d) {
  SymShape s;
  s.reserve(d.size());
  for (const Dim &x : d)
    s.push_back(DimExpr::fromDim(x));
  return s;
}

Dims toDims(const SymShape &s) {
  Dims d;
  d.reserve(s.size());
  for (const DimExpr &e : s)
    d.push_back(e.toDim());
  return d;
}

DimExpr product(const SymShape &s, size_t begin, size_t end) {
  DimExpr p = DimExpr::constant(1);
  for (size_t i = begin; i < std::min(end, s.size()); ++i)
    p = p * s[i];
  return p;
}

std::string toString(const SymShape &s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i)
      out += ',';
    out += s[i].str();
  }
  out += ']';
  return out;
}

} // namespace llmopt
