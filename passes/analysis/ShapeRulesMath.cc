// Shape rules for contractions and reductions: MatMul family, Gemm, MatMulNBits,
// Einsum, Reduce*, ArgMax/ArgMin, TopK, and ORT's attention ops.
#include <map>

#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt::shape {
namespace {

/// numpy matmul of inputs a and b: 1-D operands are promoted and the promoted dim
/// dropped again; batch dims broadcast.
Expected<std::optional<SymShape>> matmulShape(InferContext &c, size_t a, size_t b) {
  if (!c.dims(a) || !c.dims(b))
    return std::optional<SymShape>();
  SymShape A = *c.dims(a), B = *c.dims(b);
  if (A.empty() || B.empty())
    return c.error("matmul operands must not be scalars");
  const bool aVec = A.size() == 1, bVec = B.size() == 1;
  if (aVec)
    A.insert(A.begin(), DimExpr::constant(1));
  if (bVec)
    B.push_back(DimExpr::constant(1));
  if (!unifyDim(A.back(), B[B.size() - 2]))
    return c.error(fmt::format("inner dims differ: {} x {}", toString(*c.dims(a)), toString(*c.dims(b))));
  std::optional<SymShape> ba = SymShape(A.begin(), A.end() - 2), bb = SymShape(B.begin(), B.end() - 2);
  LLMOPT_ASSIGN_OR_RETURN(auto batch, broadcast(c, {&ba, &bb}));
  SymShape out = *batch;
  if (!aVec)
    out.push_back(A[A.size() - 2]);
  if (!bVec)
    out.push_back(B.back());
  return std::optional<SymShape>(std::move(out));
}

Status matmul(InferContext &c) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, matmulShape(c, 0, 1));
  c.setTensor(0, firstElem(c, {0, 1}), dims);
  return Status::ok();
}

Status matmulInteger(InferContext &c) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, matmulShape(c, 0, 1));
  c.setTensor(0, DType::I32, dims);
  return Status::ok();
}

// com.microsoft::DynamicQuantizeMatMul(A, B int8/uint8, b_scale, ...): A's type.
Status dynamicQuantizeMatmul(InferContext &c) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, matmulShape(c, 0, 1));
  c.setTensor(0, c.elem(0), dims);
  return Status::ok();
}

// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp): y_zp's type.
Status qlinearMatmul(InferContext &c) {
  LLMOPT_ASSIGN_OR_RETURN(auto dims, matmulShape(c, 0, 3));
  c.setTensor(0, c.elem(7), dims);
  return Status::ok();
}

// Gemm(A, B, C): [M, K] x [K, N] after the optional transposes.
Status gemm(InferContext &c) {
  DType elem = firstElem(c, {0, 1});
  if (c.rank(0) != 2 || c.rank(1) != 2) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const SymShape &A = *c.dims(0), &B = *c.dims(1);
  bool ta = c.attrInt("transA", 0), tb = c.attrInt("transB", 0);
  DimExpr m = A[ta ? 1 : 0], ka = A[ta ? 0 : 1], kb = B[tb ? 1 : 0], n = B[tb ? 0 : 1];
  if (!unifyDim(ka, kb))
    return c.error(fmt::format("inner dims differ: {} x {}", toString(A), toString(B)));
  c.setTensor(0, elem, SymShape{m, n});
  return Status::ok();
}

// com.microsoft::MatMulNBits(A[..., K], B, scales, ...) -> [..., N] (attributes K, N).
Status matmulNBits(InferContext &c) {
  if (!c.dims(0)) {
    c.setTensor(0, c.elem(0), std::nullopt);
    return Status::ok();
  }
  SymShape s = *c.dims(0);
  if (s.empty())
    return c.error("input A must have rank >= 1");
  int64_t k = c.attrInt("K", -1), n = c.attrInt("N", -1);
  if (k > 0 && !unifyDim(s.back(), DimExpr::constant(k)))
    return c.error(fmt::format("A is {} but K = {}", toString(s), k));
  s.back() = n > 0 ? DimExpr::constant(n) : DimExpr();
  c.setTensor(0, c.elem(0), s);
  return Status::ok();
}

/// One operand of an einsum equation: its labels, with '.' standing for the ellipsis.
Expected<std::string> einsumTerm(InferContext &c, std::string_view t) {
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t.substr(i, 3) == "...") {
      if (out.find('.') != std::string::npos)
        return c.error("an einsum term has two ellipses");
      out += '.';
      i += 2;
    } else if (std::isalpha(static_cast<unsigned char>(t[i]))) {
      out += t[i];
    } else if (t[i] != ' ') {
      return c.error(fmt::format("bad einsum equation '{}'", c.node.attrString("equation", "")));
    }
  }
  return out;
}

/// An einsum equation split into operand terms and the output term (the implicit
/// output is the ellipsis, then the labels used once, in alphabetical order).
struct EinsumEquation {
  std::vector<std::string> terms;
  std::string output;
};

Expected<EinsumEquation> parseEinsum(InferContext &c) {
  const std::string eq = c.node.attrString("equation", "");
  const size_t arrow = eq.find("->");
  std::string_view lhs = std::string_view(eq).substr(0, arrow);
  EinsumEquation e;
  for (size_t b = 0;;) {
    size_t comma = lhs.find(',', b);
    LLMOPT_ASSIGN_OR_RETURN(std::string t,
                            einsumTerm(c, lhs.substr(b, comma == std::string::npos ? comma : comma - b)));
    e.terms.push_back(t);
    if (comma == std::string::npos)
      break;
    b = comma + 1;
  }
  if (e.terms.size() != c.numInputs())
    return c.error(fmt::format("equation '{}' has {} operands for {} inputs", eq, e.terms.size(), c.numInputs()));
  if (arrow != std::string::npos) {
    LLMOPT_ASSIGN_OR_RETURN(e.output, einsumTerm(c, std::string_view(eq).substr(arrow + 2)));
    return e;
  }
  std::map<char, int> uses;
  bool anyEll = false;
  for (const std::string &t : e.terms)
    for (char ch : t) {
      if (ch == '.')
        anyEll = true;
      else
        ++uses[ch];
    }
  if (anyEll)
    e.output.push_back('.');
  for (auto &[ch, n] : uses)
    if (n == 1)
      e.output += ch;
  return e;
}

// Einsum: labels bind dims across operands; the ellipsis dims broadcast.
Status einsum(InferContext &c) {
  DType elem = firstElem(c, {0});
  LLMOPT_ASSIGN_OR_RETURN(EinsumEquation eq, parseEinsum(c));
  std::map<char, DimExpr> label;
  std::optional<SymShape> ell = SymShape{};
  for (size_t i = 0; i < eq.terms.size(); ++i) {
    const std::string &t = eq.terms[i];
    const bool hasEll = t.find('.') != std::string::npos;
    if (!c.dims(i)) {
      if (hasEll)
        ell.reset();
      continue;
    }
    const SymShape &s = *c.dims(i);
    const size_t nl = t.size() - (hasEll ? 1 : 0);
    if (s.size() < nl || (!hasEll && s.size() != nl))
      return c.error(fmt::format("operand {} {} does not match einsum term '{}'", i, toString(s), t));
    size_t ellRank = s.size() - nl, pos = 0;
    for (char ch : t) {
      if (ch == '.') {
        std::optional<SymShape> part = SymShape(s.begin() + pos, s.begin() + pos + ellRank);
        if (ell) {
          LLMOPT_ASSIGN_OR_RETURN(ell, broadcast(c, {&ell, &part}));
        }
        pos += ellRank;
        continue;
      }
      DimExpr &d = label[ch];
      auto u = unifyDim(d, s[pos]);
      if (!u && !s[pos].isConstant(1) && !d.isConstant(1))
        return c.error(fmt::format("einsum label '{}' is bound to {} and {}", ch, d.str(), s[pos].str()));
      d = u ? *u : (d.isConstant(1) ? s[pos] : d);
      ++pos;
    }
  }
  SymShape shape;
  for (char ch : eq.output) {
    if (ch == '.') {
      if (!ell) {
        c.setTensor(0, elem, std::nullopt);
        return Status::ok();
      }
      shape.insert(shape.end(), ell->begin(), ell->end());
    } else {
      shape.push_back(label.count(ch) ? label[ch] : DimExpr());
    }
  }
  c.setTensor(0, elem, shape);
  return Status::ok();
}

/// Removes (or sets to 1 with keepdims) the given axes of input 0.
std::optional<SymShape> reduceDims(const SymShape &s, const std::vector<int64_t> &axes, bool keep) {
  std::vector<bool> hit(s.size(), false);
  for (int64_t a : axes)
    hit[static_cast<size_t>(a)] = true;
  SymShape out;
  for (size_t i = 0; i < s.size(); ++i)
    if (!hit[i])
      out.push_back(s[i]);
    else if (keep)
      out.push_back(DimExpr::constant(1));
  return out;
}

Status normalizeAxes(InferContext &c, std::vector<int64_t> &axes, int64_t rank) {
  for (int64_t &a : axes) {
    LLMOPT_ASSIGN_OR_RETURN(a, c.axis(a, rank));
  }
  return Status::ok();
}

// Reduce*(x[, axes]): axes are an input from opset 13 (ReduceSum) / 18 (the others);
// no axes reduce everything unless noop_with_empty_axes.
Status reduce(InferContext &c) {
  const bool isSum = c.node.opType() == "ReduceSum";
  bool present = false;
  auto axes = axesOf(c, isSum ? 13 : 18, 1, &present);
  const bool keep = c.attrInt("keepdims", 1) != 0;
  DType elem = c.elem(0);
  if (!c.dims(0)) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const SymShape &s = *c.dims(0);
  const int64_t r = static_cast<int64_t>(s.size());
  if (!axes) { // axes are an input of unknown value
    std::optional<SymShape> out;
    if (keep) {
      out = s;
      for (DimExpr &d : *out)
        d = d.isConstant(1) ? d : DimExpr();
    } else if (c.dims(1) && c.dims(1)->size() == 1 && c.dims(1)->at(0).isConstant()) {
      out = SymShape(static_cast<size_t>(r - *c.dims(1)->at(0).asConstant()), DimExpr());
    }
    c.setTensor(0, elem, out);
    return Status::ok();
  }
  if (axes->empty()) {
    if (c.attrInt("noop_with_empty_axes", 0)) {
      c.passThrough();
      return Status::ok();
    }
    for (int64_t i = 0; i < r; ++i)
      axes->push_back(i);
  }
  LLMOPT_RETURN_IF_ERROR(normalizeAxes(c, *axes, r));
  c.setTensor(0, elem, reduceDims(s, *axes, keep));
  return Status::ok();
}

// ArgMax / ArgMin(x): i64, `axis` reduced (kept as 1 with keepdims).
Status argReduce(InferContext &c) {
  if (!c.dims(0)) {
    c.setTensor(0, DType::I64, std::nullopt);
    return Status::ok();
  }
  LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), c.rank(0)));
  c.setTensor(0, DType::I64, reduceDims(*c.dims(0), {ax}, c.attrInt("keepdims", 1) != 0));
  return Status::ok();
}

// TopK(x, K) -> (values, indices: i64); K is the `k` attribute before opset 10.
Status topK(InferContext &c) {
  DimExpr k;
  if (c.opset < 10) {
    k = DimExpr::constant(c.attrInt("k", 0));
  } else if (const KnownValue *kv = c.known(1); kv && kv->elems.size() == 1) {
    k = kv->elems[0];
  }
  std::optional<SymShape> s = c.dims(0);
  if (s) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", -1), c.rank(0)));
    (*s)[ax] = k;
  }
  c.setTensor(0, c.elem(0), s);
  c.setTensor(1, DType::I64, s);
  return Status::ok();
}

// Attention (opset 23)(Q, K, V[, mask, past_key, past_value]) with 4-D
// [B, heads, seq, head] or 3-D [B, seq, heads*head] operands (q_num_heads /
// kv_num_heads attributes) -> (Y like Q with V's head size, present_key / present_value
// [B, kv_heads, past+kv_seq, head], qk [B, q_heads, q_seq, past+kv_seq]).
Status onnxAttention(InferContext &c) {
  const auto &q = c.dims(0), &k = c.dims(1), &v = c.dims(2);
  if (!q || !k || !v || q->size() < 3 || k->size() < 3 || v->size() < 3) {
    c.setTensor(0, c.elem(0), std::nullopt);
    for (size_t i = 1; i < 3; ++i)
      c.setTensor(i, c.elem(1), std::nullopt);
    c.setTensor(3, c.elem(0), std::nullopt);
    return Status::ok();
  }
  auto attr = [&](const char *n) { return c.hasAttr(n) ? DimExpr::constant(c.attrInt(n, 0)) : DimExpr(); };
  const bool q3 = q->size() == 3, k3 = k->size() == 3, v3 = v->size() == 3;
  DimExpr qh = q3 ? attr("q_num_heads") : (*q)[1], kvh = k3 ? attr("kv_num_heads") : (*k)[1];
  DimExpr b = (*q)[0], s = q3 ? (*q)[1] : (*q)[2], l = k3 ? (*k)[1] : (*k)[2];
  DimExpr headK = k3 ? (*k)[2].divExact(kvh) : (*k)[3], headV = v3 ? (*v)[2].divExact(kvh) : (*v)[3];
  DimExpr past = DimExpr::constant(0);
  if (c.has(4))
    past = c.rank(4) == 4 ? c.dims(4)->at(2) : DimExpr();
  DimExpr total = past + l;
  c.setTensor(0, c.elem(0), q3 ? SymShape{b, s, qh * headV} : SymShape{b, qh, s, headV});
  c.setTensor(1, c.elem(1), SymShape{b, kvh, total, headK});
  c.setTensor(2, c.elem(2), SymShape{b, kvh, total, headV});
  c.setTensor(3, c.elem(0), SymShape{b, qh, s, total});
  return Status::ok();
}

// com.microsoft::MultiHeadAttention(query[B,S,D], key, value, ...) -> [B, S, v_hidden];
// v_hidden from value ([B,L,Dv] or [B,N,L,H]) or the query's hidden size.
Status multiHeadAttention(InferContext &c) {
  DType elem = c.elem(0);
  for (size_t i = 1; i < c.numOutputs(); ++i)
    c.setTensor(i, elem, std::nullopt);
  if (!c.dims(0) || c.dims(0)->size() < 3) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const SymShape &q = *c.dims(0);
  DimExpr vh;
  if (c.rank(2) == 3)
    vh = c.dims(2)->at(2);
  else if (c.rank(2) == 4)
    vh = c.dims(2)->at(1) * c.dims(2)->at(3);
  else if (q.size() == 3)
    vh = q[2];
  else if (q.size() == 5) // packed QKV [B, S, N, 3, H]
    vh = q[2] * q[4];
  c.setTensor(0, elem, SymShape{q[0], q[1], vh});
  return Status::ok();
}

// com.microsoft::GroupQueryAttention(query, key, value, past_key, past_value, ...) ->
// (output [B, S, num_heads*H], present_key / present_value [B, kv_num_heads, ?, H]).
Status groupQueryAttention(InferContext &c) {
  DType elem = c.elem(0);
  int64_t nh = c.attrInt("num_heads", 0), kvh = c.attrInt("kv_num_heads", 0);
  if (!c.dims(0) || c.dims(0)->size() != 3 || nh <= 0 || kvh <= 0) {
    for (size_t i = 0; i < c.numOutputs(); ++i)
      c.setTensor(i, elem, std::nullopt);
    return Status::ok();
  }
  const SymShape &q = *c.dims(0);
  DimExpr head = c.rank(1) == 3 ? c.dims(1)->at(2).divExact(DimExpr::constant(kvh))
                                : q[2].divExact(DimExpr::constant(nh + 2 * kvh));
  c.setTensor(0, elem, SymShape{q[0], q[1], head * DimExpr::constant(nh)});
  for (size_t i = 1; i < 3; ++i)
    c.setTensor(i, elem, SymShape{q[0], DimExpr::constant(kvh), DimExpr(), head});
  return Status::ok();
}

// com.microsoft::Attention(input[B,S,D], weights[D, 3*hidden], ...) -> [B, S, v_hidden].
Status msAttention(InferContext &c) {
  DType elem = c.elem(0);
  c.setTensor(1, elem, std::nullopt);
  if (!c.dims(0) || c.dims(0)->size() != 3) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  std::vector<int64_t> qkv = c.attrInts("qkv_hidden_sizes");
  DimExpr vh = qkv.size() == 3 ? DimExpr::constant(qkv[2])
               : c.rank(1) == 2 ? c.dims(1)->at(1).divExact(DimExpr::constant(3))
                                : DimExpr();
  const SymShape &x = *c.dims(0);
  c.setTensor(0, elem, SymShape{x[0], x[1], vh});
  return Status::ok();
}

constexpr RuleEntry kRules[] = {
    {"", "MatMul", matmul}, {"llmopt", "MatMulBias", matmul},
    {"", "MatMulInteger", matmulInteger},
    {"", "QLinearMatMul", qlinearMatmul},
    {"", "Gemm", gemm},
    {"", "Einsum", einsum},
    {"com.microsoft", "MatMulNBits", matmulNBits},
    {"com.microsoft", "DynamicQuantizeMatMul", dynamicQuantizeMatmul},
    {"", "ReduceMean", reduce}, {"", "ReduceSum", reduce}, {"", "ReduceMax", reduce},
    {"", "ReduceMin", reduce}, {"", "ReduceProd", reduce}, {"", "ReduceL1", reduce},
    {"", "ReduceL2", reduce}, {"", "ReduceLogSum", reduce}, {"", "ReduceLogSumExp", reduce},
    {"", "ReduceSumSquare", reduce},
    {"", "ArgMax", argReduce}, {"", "ArgMin", argReduce},
    {"", "TopK", topK},
    {"", "Attention", onnxAttention},
    {"com.microsoft", "MultiHeadAttention", multiHeadAttention},
    {"com.microsoft", "GroupQueryAttention", groupQueryAttention},
    {"com.microsoft", "Attention", msAttention},
};

} // namespace

std::span<const RuleEntry> mathRules() { return kRules; }

} // namespace llmopt::shape
