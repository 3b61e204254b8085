// DimExpr: a dimension or small integer as a polynomial over named symbols
// (`batch*seq`, `past+seq`, `2*heads`, 64) or unknown; the currency of shape inference.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/Type.h"

namespace llmopt {

/// An integer-valued expression over dimension symbols: a polynomial with integer
/// coefficients, kept in a canonical form so that equal expressions compare equal
/// (`seq*batch` == `batch*seq`). Symbols stand for non-negative sizes. Arithmetic on
/// an unknown operand, or one that overflows, yields unknown.
///
/// A symbol string read from a Dim is parsed (`past_sequence_length + 1`, `2*s0`);
/// strings that do not parse as + - * over identifiers and integers are one atom.
class DimExpr {
public:
  /// Unknown.
  DimExpr() = default;
  static DimExpr constant(int64_t v);
  /// A symbol, parsed as an expression where it is one (see the class comment).
  static DimExpr symbol(std::string_view s);
  static DimExpr fromDim(const Dim &d);
  /// Static for constants in [0, 2^40], symbolic for expressions, unknown otherwise.
  Dim toDim() const;

  bool known() const { return known_; }
  bool isConstant() const;
  /// The value when isConstant().
  std::optional<int64_t> asConstant() const;
  bool isConstant(int64_t v) const { return asConstant() == v; }
  /// Known and never negative: every coefficient (and the constant term) is >= 0,
  /// since symbols stand for sizes.
  bool isNonNegative() const;
  /// Canonical text (`2*batch*seq+1`); `?` when unknown.
  std::string str() const;

  DimExpr operator+(const DimExpr &o) const;
  DimExpr operator-(const DimExpr &o) const;
  DimExpr operator*(const DimExpr &o) const;
  DimExpr operator-() const { return constant(0) - *this; }
  /// this / o when the division is exact as polynomials (or as integers); else unknown.
  DimExpr divExact(const DimExpr &o) const;
  /// ceil(this / o) for constants; exact division otherwise; else unknown.
  DimExpr ceilDiv(const DimExpr &o) const;
  /// floor(this / o) for constants; exact division otherwise; else unknown.
  DimExpr floorDiv(const DimExpr &o) const;

  /// Structural equality of known expressions; unknown equals only unknown.
  bool operator==(const DimExpr &o) const = default;

private:
  using Monomial = std::vector<std::string>; // sorted symbols, repeated for powers
  struct MonoLess {
    bool operator()(const Monomial &a, const Monomial &b) const;
  };
  using Terms = std::map<Monomial, int64_t, MonoLess>;
  static DimExpr fromTerms(Terms t);
  friend struct DimExprParser;

  bool known_ = false;
  Terms terms_; ///< No zero coefficients; the empty monomial is the constant term.
};

using SymShape = std::vector<DimExpr>;

/// Converts between IR dims and expressions.
SymShape toSymShape(const Dims &d);
Dims toDims(const SymShape &s);
/// The product of `s[begin, end)`.
DimExpr product(const SymShape &s, size_t begin = 0, size_t end = SIZE_MAX);
std::string toString(const SymShape &s);

} // namespace llmopt
