// Einsum: two-operand contractions without diagonals run as a batched GEMM
// (e.g. "bhqd,bhkd->bhqk"); every other form (diagonals, traces, 1 or 3+ operands,
// broadcast ellipsis dims) by a direct reference loop.
#include <algorithm>
#include <cctype>
#include <map>

#include "backend/interp/Gemm.h"

namespace llmopt::interp {
namespace {

/// The parsed equation: labels per operand and for the output; ellipsis dims become
/// labels 52.. (right-aligned across operands), letters 0..51.
struct Equation {
  std::vector<std::vector<int>> ins;
  std::vector<int> out;
  std::map<int, int64_t> size;
};

int letterId(char c) { return std::islower(static_cast<unsigned char>(c)) ? c - 'a' : 26 + (c - 'A'); }

Expected<std::vector<int>> parseTerm(const Node &n, const std::string &term, int64_t rank,
                                     int64_t ellRank, bool isOutput) {
  std::vector<int> labels;
  size_t dots = term.find("...");
  int64_t letters = 0;
  for (char c : term)
    letters += std::isalpha(static_cast<unsigned char>(c)) ? 1 : 0;
  for (size_t i = 0; i < term.size(); ++i) {
    if (i == dots) {
      const int64_t e = isOutput ? ellRank : rank - letters;
      if (e < 0 || e > ellRank)
        return nodeError(n, "term '{}' does not fit an input of rank {}", term, rank);
      for (int64_t j = ellRank - e; j < ellRank; ++j)
        labels.push_back(52 + static_cast<int>(j));
      i += 2;
    } else if (std::isalpha(static_cast<unsigned char>(term[i]))) {
      labels.push_back(letterId(term[i]));
    } else {
      return nodeError(n, "bad character '{}' in equation", term[i]);
    }
  }
  if (!isOutput && static_cast<int64_t>(labels.size()) != rank)
    return nodeError(n, "term '{}' does not fit an input of rank {}", term, rank);
  return labels;
}

Expected<Equation> parse(const Node &n, const InputList &in) {
  std::string eq;
  for (char c : n.attrString("equation", ""))
    if (!std::isspace(static_cast<unsigned char>(c)))
      eq += c;
  const size_t arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> terms;
  for (size_t b = 0;;) {
    size_t e = lhs.find(',', b);
    terms.push_back(lhs.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos)
      break;
    b = e + 1;
  }
  if (terms.size() != in.size())
    return nodeError(n, "equation '{}' has {} operands, {} inputs given", eq, terms.size(), in.size());
  int64_t ellRank = 0;
  for (size_t i = 0; i < terms.size(); ++i) {
    if (terms[i].find("...") == std::string::npos)
      continue;
    int64_t letters = 0;
    for (char c : terms[i])
      letters += std::isalpha(static_cast<unsigned char>(c)) ? 1 : 0;
    ellRank = std::max(ellRank, in[i]->rank() - letters);
  }
  Equation e;
  std::map<int, int> count;
  for (size_t i = 0; i < terms.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(std::vector<int> l, parseTerm(n, terms[i], in[i]->rank(), ellRank, false));
    for (size_t d = 0; d < l.size(); ++d) {
      const int64_t sz = in[i]->shape()[d];
      auto it = e.size.find(l[d]);
      if (it == e.size.end() || it->second == 1)
        e.size[l[d]] = sz;
      else if (sz != 1 && sz != it->second)
        return nodeError(n, "label sizes differ ({} vs {}) in '{}'", it->second, sz, eq);
      ++count[l[d]];
    }
    e.ins.push_back(std::move(l));
  }
  if (arrow != std::string::npos) {
    LLMOPT_ASSIGN_OR_RETURN(e.out, parseTerm(n, eq.substr(arrow + 2), 0, ellRank, true));
    for (int l : e.out)
      if (!e.size.count(l))
        return nodeError(n, "output label not in any input of '{}'", eq);
  } else {
    for (int64_t j = 0; j < ellRank; ++j)
      e.out.push_back(52 + static_cast<int>(j));
    for (auto [l, c] : count) // map order: a..z, A..Z
      if (l < 52 && c == 1)
        e.out.push_back(l);
  }
  return e;
}

/// Reference: out[o] = sum over the other labels of the product of the operands.
template <typename T> Tensor einsumNaive(const Equation &e, const InputList &in, DType dt) {
  std::vector<int> labels = e.out;
  for (auto [l, s] : e.size)
    if (std::find(labels.begin(), labels.end(), l) == labels.end())
      labels.push_back(l);
  const size_t nOut = e.out.size();
  Shape outShape;
  for (int l : e.out)
    outShape.push_back(e.size.at(l));
  // strides[k][j]: how far operand k moves when label j steps (0 when broadcast).
  std::vector<std::vector<int64_t>> strides(in.size(), std::vector<int64_t>(labels.size(), 0));
  for (size_t k = 0; k < in.size(); ++k) {
    const Shape st = stridesOf(in[k]->shape());
    for (size_t d = 0; d < e.ins[k].size(); ++d) {
      const size_t j = static_cast<size_t>(std::find(labels.begin(), labels.end(), e.ins[k][d]) - labels.begin());
      if (in[k]->shape()[d] != 1)
        strides[k][j] += st[d];
    }
  }
  Tensor r = Tensor::zeros(dt, outShape);
  for (size_t j = nOut; j < labels.size(); ++j)
    if (e.size.at(labels[j]) == 0)
      return r; // an empty sum is zero
  T *dst = mutableDataOf<T>(r);
  std::vector<int64_t> idx(labels.size(), 0);
  using A = std::conditional_t<std::is_floating_point_v<T>, double, T>;
  const int64_t outN = numelOf(outShape);
  for (int64_t o = 0; o < outN; ++o) {
    int64_t rem = o;
    for (size_t j = nOut; j-- > 0;) {
      idx[j] = rem % e.size.at(labels[j]);
      rem /= e.size.at(labels[j]);
    }
    std::fill(idx.begin() + static_cast<int64_t>(nOut), idx.end(), 0);
    A acc = 0;
    bool done = false;
    while (!done) {
      A prod = 1;
      for (size_t k = 0; k < in.size(); ++k) {
        int64_t off = 0;
        for (size_t j = 0; j < labels.size(); ++j)
          off += idx[j] * strides[k][j];
        prod = static_cast<A>(prod * static_cast<A>(dataOf<T>(*in[k])[off]));
      }
      acc = static_cast<A>(acc + prod);
      done = true;
      for (size_t j = labels.size(); j-- > nOut;) {
        if (++idx[j] < e.size.at(labels[j])) {
          done = false;
          break;
        }
        idx[j] = 0;
      }
    }
    dst[o] = static_cast<T>(acc);
  }
  return r;
}

/// Copy of `t` with its dims reordered so that labels come in `order`.
Tensor permuteTo(const Tensor &t, const std::vector<int> &labels, const std::vector<int> &order) {
  const Shape st = stridesOf(t.shape());
  Shape out, strides;
  for (int l : order) {
    const size_t d = static_cast<size_t>(std::find(labels.begin(), labels.end(), l) - labels.begin());
    out.push_back(t.shape()[d]);
    strides.push_back(st[d]);
  }
  Tensor r = Tensor::zeros(t.dtype(), out);
  copyStrided(t.data(), 0, out, strides, r.mutableData(), elemBytes(t.dtype()));
  return r;
}

/// Two operands, no repeated or broadcast labels, every label in an operand also in
/// the other operand or the output: permute to [batch,M,K] x [batch,K,N] and GEMM.
template <typename T> bool einsumGemm(const Equation &e, const InputList &in, DType dt, Tensor &result) {
  if (in.size() != 2)
    return false;
  auto has = [](const std::vector<int> &v, int l) { return std::find(v.begin(), v.end(), l) != v.end(); };
  for (size_t k = 0; k < 2; ++k) {
    std::vector<int> sorted = e.ins[k];
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      return false;
    for (size_t d = 0; d < e.ins[k].size(); ++d)
      if (in[k]->shape()[d] != e.size.at(e.ins[k][d]))
        return false;
    for (int l : e.ins[k])
      if (!has(e.out, l) && !has(e.ins[1 - k], l))
        return false;
  }
  std::vector<int> batch, m, nn, kk;
  for (int l : e.out) {
    const bool a = has(e.ins[0], l), b = has(e.ins[1], l);
    (a && b ? batch : a ? m : nn).push_back(l);
  }
  for (int l : e.ins[0])
    if (!has(e.out, l))
      kk.push_back(l);
  auto prod = [&](const std::vector<int> &ls) {
    int64_t p = 1;
    for (int l : ls)
      p *= e.size.at(l);
    return p;
  };
  const int64_t B = prod(batch), M = prod(m), N = prod(nn), K = prod(kk);
  auto cat = [](std::vector<int> a, const std::vector<int> &b, const std::vector<int> &c) {
    a.insert(a.end(), b.begin(), b.end());
    a.insert(a.end(), c.begin(), c.end());
    return a;
  };
  const Tensor a = permuteTo(*in[0], e.ins[0], cat(batch, m, kk));
  const Tensor b = permuteTo(*in[1], e.ins[1], cat(batch, kk, nn));
  const std::vector<int> cLabels = cat(batch, m, nn);
  Shape cShape;
  for (int l : cLabels)
    cShape.push_back(e.size.at(l));
  Tensor c = Tensor::zeros(dt, cShape);
  std::vector<int64_t> aOff, bOff;
  for (int64_t i = 0; i < B; ++i) {
    aOff.push_back(i * M * K);
    bOff.push_back(i * K * N);
  }
  batchedGemm<T>(dataOf<T>(a), dataOf<T>(b), mutableDataOf<T>(c), aOff, bOff, M, K, N);
  result = cLabels == e.out ? c : permuteTo(c, cLabels, e.out);
  return true;
}

Expected<TensorList> kEinsum(const Node &n, const InputList &in) {
  for (const Tensor *t : in)
    if (!t || t->dtype() != in[0]->dtype())
      return nodeError(n, "all inputs must be present and of one element type");
  LLMOPT_ASSIGN_OR_RETURN(Equation e, parse(n, in));
  return visitNumeric(n, in[0]->dtype(), [&](auto tag) -> Expected<TensorList> {
    using T = decltype(tag);
    Tensor r;
    if (!einsumGemm<T>(e, in, in[0]->dtype(), r))
      r = einsumNaive<T>(e, in, in[0]->dtype());
    return TensorList{r};
  });
}

} // namespace

void addEinsumKernel(KernelTable &t) {
  t.push_back({OpKind::Einsum, kEinsum, 1, std::numeric_limits<int64_t>::max(), true});
}

} // namespace llmopt::interp
