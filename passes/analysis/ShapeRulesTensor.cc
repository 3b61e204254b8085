// Shape rules for data movement: Transpose, Reshape, Flatten, Squeeze/Unsqueeze,
// Concat, Split, Slice, Gather*, Expand, Tile, Pad. The shape-producing ops (Shape,
// Size, Range, Constant, ConstantOfShape) live in ShapeRulesShapeOps.cc.
#include <numeric>

#include <fmt/format.h>

#include "passes/analysis/ShapeRules.h"

namespace llmopt::shape {
namespace {

// Transpose(x): dims permuted by `perm` (default: reversed).
Status transpose(InferContext &c) {
  if (!c.dims(0)) {
    c.setTensor(0, c.elem(0), std::nullopt);
    return Status::ok();
  }
  const SymShape &s = *c.dims(0);
  std::vector<int64_t> perm = c.attrInts("perm");
  if (!c.hasAttr("perm"))
    for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i)
      perm.push_back(i);
  if (perm.size() != s.size())
    return c.error(fmt::format("perm has {} entries for input {}", perm.size(), toString(s)));
  SymShape out;
  std::vector<bool> seen(s.size(), false);
  for (int64_t p : perm) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t a, c.axis(p, static_cast<int64_t>(s.size())));
    if (seen[a])
      return c.error(fmt::format("perm repeats axis {}", p));
    seen[a] = true;
    out.push_back(s[a]);
  }
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

// Reshape(x, shape): 0 copies x's dim (unless allowzero), -1 is what is left over.
Status reshape(InferContext &c) {
  DType elem = c.elem(0);
  if (const KnownValue *k = c.known(0))
    c.setKnown(0, KnownValue{k->elems, false});
  std::optional<KnownValue> attrTarget; // the `shape` attribute before opset 5
  if (c.opset < 5 && c.hasAttr("shape")) {
    attrTarget = KnownValue();
    for (int64_t v : c.attrInts("shape"))
      attrTarget->elems.push_back(DimExpr::constant(v));
  }
  const KnownValue *target = attrTarget ? &*attrTarget : c.known(1);
  if (!target) {
    std::optional<SymShape> out;
    if (c.dims(1) && c.dims(1)->size() == 1)
      if (auto n = c.dims(1)->at(0).asConstant())
        out = SymShape(static_cast<size_t>(*n), DimExpr());
    c.setTensor(0, elem, out);
    return Status::ok();
  }
  const bool allowZero = c.opset >= 14 && c.attrInt("allowzero", 0) != 0;
  const std::optional<SymShape> &in = c.dims(0);
  SymShape out = target->elems;
  std::optional<size_t> inferred;
  for (size_t i = 0; i < out.size(); ++i) {
    auto v = out[i].asConstant();
    if (!v)
      continue;
    if (*v == 0 && !allowZero) {
      if (in && i >= in->size())
        return c.error(fmt::format("shape entry {} is 0 but the input {} has no dim {}", i, toString(*in), i));
      out[i] = in ? (*in)[i] : DimExpr();
    } else if (*v == -1) {
      if (inferred)
        return c.error("shape has more than one -1");
      inferred = i;
    } else if (*v < -1) {
      return c.error(fmt::format("shape entry {} is {}", i, *v));
    }
  }
  DimExpr total = in ? product(*in) : DimExpr();
  if (inferred) {
    DimExpr rest = DimExpr::constant(1);
    for (size_t i = 0; i < out.size(); ++i)
      if (i != *inferred)
        rest = rest * out[i];
    out[*inferred] = rest.isConstant(0) ? DimExpr() : total.divExact(rest);
    if (total.isConstant() && rest.isConstant() && !out[*inferred].known())
      return c.error(fmt::format("cannot reshape {} to {}", toString(*in), toString(target->elems)));
  } else if (total.isConstant() && product(out).isConstant() && total != product(out)) {
    return c.error(fmt::format("cannot reshape {} ({} elements) to {}", toString(*in), total.str(),
                               toString(out)));
  }
  c.setTensor(0, elem, out);
  return Status::ok();
}

// Flatten(x, axis): [prod(dims[:axis]), prod(dims[axis:])].
Status flatten(InferContext &c) {
  if (!c.dims(0)) {
    c.setTensor(0, c.elem(0), SymShape(2, DimExpr()));
    return Status::ok();
  }
  const SymShape &s = *c.dims(0);
  int64_t r = static_cast<int64_t>(s.size());
  int64_t a = c.attrInt("axis", 1);
  if (a < -r || a > r)
    return c.error(fmt::format("axis {} is out of range for rank {}", a, r));
  size_t ax = static_cast<size_t>(a < 0 ? a + r : a);
  c.setTensor(0, c.elem(0), SymShape{product(s, 0, ax), product(s, ax)});
  return Status::ok();
}

// Squeeze(x[, axes]): axes are an input from opset 13; no axes drop every static 1.
Status squeeze(InferContext &c) {
  bool present = false;
  auto axes = axesOf(c, 13, 1, &present);
  DType elem = c.elem(0);
  std::optional<SymShape> out;
  if (c.dims(0)) {
    const SymShape &s = *c.dims(0);
    int64_t r = static_cast<int64_t>(s.size());
    if (!present || (axes && axes->empty())) {
      out = SymShape();
      for (const DimExpr &d : s) {
        if (!d.isConstant()) { // might be 1: the rank is unknown
          out.reset();
          break;
        }
        if (!d.isConstant(1))
          out->push_back(d);
      }
    } else if (axes) {
      std::vector<bool> drop(s.size(), false);
      for (int64_t a : *axes) {
        LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(a, r));
        if (s[ax].isConstant() && !s[ax].isConstant(1))
          return c.error(fmt::format("cannot squeeze axis {} of {}", a, toString(s)));
        drop[ax] = true;
      }
      out = SymShape();
      for (size_t i = 0; i < s.size(); ++i)
        if (!drop[i])
          out->push_back(s[i]);
    } else if (c.dims(1) && c.dims(1)->size() == 1 && c.dims(1)->at(0).isConstant()) {
      out = SymShape(static_cast<size_t>(r - *c.dims(1)->at(0).asConstant()), DimExpr());
    }
  }
  c.setTensor(0, elem, out);
  if (const KnownValue *k = c.known(0))
    c.setKnown(0, KnownValue{k->elems, out && out->empty()});
  return Status::ok();
}

// Unsqueeze(x, axes): axes (an input from opset 13) index the output's dims.
Status unsqueeze(InferContext &c) {
  bool present = false;
  auto axes = axesOf(c, 13, 1, &present);
  DType elem = c.elem(0);
  if (const KnownValue *k = c.known(0))
    c.setKnown(0, KnownValue{k->elems, false});
  if (!c.dims(0) || !axes) {
    std::optional<SymShape> out;
    if (c.dims(0) && c.dims(1) && c.dims(1)->size() == 1 && c.dims(1)->at(0).isConstant())
      out = SymShape(c.dims(0)->size() + static_cast<size_t>(*c.dims(1)->at(0).asConstant()), DimExpr());
    c.setTensor(0, elem, out);
    return Status::ok();
  }
  const SymShape &s = *c.dims(0);
  int64_t r = static_cast<int64_t>(s.size() + axes->size());
  std::vector<bool> ones(static_cast<size_t>(r), false);
  for (int64_t a : *axes) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(a, r));
    if (ones[ax])
      return c.error(fmt::format("axes repeat axis {}", a));
    ones[ax] = true;
  }
  SymShape out;
  size_t next = 0;
  for (int64_t i = 0; i < r; ++i)
    out.push_back(ones[i] ? DimExpr::constant(1) : s[next++]);
  c.setTensor(0, elem, out);
  return Status::ok();
}

// Concat(xs..., axis): dims along `axis` add up, the others must agree.
Status concat(InferContext &c) {
  DType elem = DType::Undefined;
  std::optional<SymShape> out;
  for (size_t i = 0; i < c.numInputs(); ++i) {
    if (elem == DType::Undefined)
      elem = c.elem(i);
    if (c.dims(i) && !out)
      out = *c.dims(i);
  }
  if (!out) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const int64_t r = static_cast<int64_t>(out->size());
  LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", c.opset < 4 ? 1 : 0), r));
  DimExpr sum = DimExpr::constant(0);
  for (size_t i = 0; i < c.numInputs(); ++i) {
    if (!c.has(i))
      continue;
    if (!c.dims(i)) {
      sum = DimExpr();
      continue;
    }
    const SymShape &s = *c.dims(i);
    if (static_cast<int64_t>(s.size()) != r)
      return c.error(fmt::format("inputs of rank {} and {} ({})", r, s.size(), toString(s)));
    for (int64_t d = 0; d < r; ++d) {
      if (d == ax)
        continue;
      auto u = unifyDim((*out)[d], s[d]);
      if (!u)
        return c.error(fmt::format("input {} {} differs from {} off the concat axis", i, toString(s),
                                   toString(*out)));
      (*out)[d] = *u;
    }
    sum = sum + s[ax];
  }
  (*out)[ax] = sum;
  c.setTensor(0, elem, out);
  if (r == 1) {
    KnownValue k;
    for (size_t i = 0; i < c.numInputs(); ++i) {
      const KnownValue *ki = c.known(i);
      if (!ki)
        return Status::ok();
      k.elems.insert(k.elems.end(), ki->elems.begin(), ki->elems.end());
    }
    c.setKnown(0, std::move(k));
  }
  return Status::ok();
}

// Split(x[, split], axis): sizes from the `split` attribute (< 13) or input, else
// equal parts (opset 18: the last part may be smaller).
Status split(InferContext &c) {
  const size_t n = c.numOutputs();
  DType elem = c.elem(0);
  if (!c.dims(0)) {
    for (size_t i = 0; i < n; ++i)
      c.setTensor(i, elem, std::nullopt);
    return Status::ok();
  }
  const SymShape &s = *c.dims(0);
  LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), static_cast<int64_t>(s.size())));
  std::vector<DimExpr> sizes;
  if (c.opset >= 13 && c.has(1)) {
    if (const KnownValue *k = c.known(1))
      sizes = k->elems;
    else
      sizes.assign(n, DimExpr());
  } else if (c.hasAttr("split")) { // the attribute form (before opset 13)
    for (int64_t v : c.attrInts("split"))
      sizes.push_back(DimExpr::constant(v));
  } else {
    const DimExpr &d = s[ax];
    DimExpr part = d.divExact(DimExpr::constant(static_cast<int64_t>(n)));
    sizes.assign(n, part);
    if (!part.known() && d.isConstant() && c.opset >= 18) {
      part = d.ceilDiv(DimExpr::constant(static_cast<int64_t>(n)));
      sizes.assign(n, part);
      sizes.back() = d - part * DimExpr::constant(static_cast<int64_t>(n - 1));
    }
  }
  if (sizes.size() != n)
    return c.error(fmt::format("{} split sizes for {} outputs", sizes.size(), n));
  DimExpr total = DimExpr::constant(0);
  for (const DimExpr &d : sizes)
    total = total + d;
  if (total.isConstant() && s[ax].isConstant() && total != s[ax])
    return c.error(fmt::format("split sizes add up to {} but the axis has {}", total.str(), s[ax].str()));
  for (size_t i = 0; i < n; ++i) {
    SymShape o = s;
    o[ax] = sizes[i];
    c.setTensor(i, elem, o);
  }
  return Status::ok();
}

constexpr int64_t kBig = 2147483647; // |index| at or past this means "to the end"

/// Length of a slice of a static dim, with ONNX's clamping.
int64_t sliceLen(int64_t d, int64_t s, int64_t e, int64_t step) {
  auto clamp = [](int64_t v, int64_t lo, int64_t hi) { return std::max(lo, std::min(v, hi)); };
  if (s < 0)
    s += d;
  if (e < 0)
    e += d;
  if (step > 0) {
    s = clamp(s, 0, d);
    e = clamp(e, 0, d);
    return e > s ? (e - s + step - 1) / step : 0;
  }
  s = clamp(s, 0, d - 1);
  e = clamp(e, -1, d - 1);
  return s > e ? (s - e - step - 1) / -step : 0;
}

/// Length of a slice of a possibly symbolic dim; symbolic bounds are assumed in range.
DimExpr sliceLenSym(const DimExpr &d, const DimExpr &s, const DimExpr &e, int64_t step) {
  auto dc = d.asConstant(), sc = s.asConstant(), ec = e.asConstant();
  if (dc && sc && ec)
    return DimExpr::constant(sliceLen(*dc, *sc, *ec, step));
  auto norm = [&](const DimExpr &v, bool isEnd) -> DimExpr {
    auto k = v.asConstant();
    if (!k)
      return v;
    if (*k >= kBig)
      return step > 0 ? d : d - DimExpr::constant(1);
    if (*k <= -kBig)
      return DimExpr::constant(step > 0 ? 0 : -1);
    if (*k < 0)
      return d + v;
    // A non-negative number against a symbolic dim: only 0 is sure to be in range.
    return *k == 0 || !isEnd ? v : DimExpr();
  };
  DimExpr ns = norm(s, false), ne = norm(e, true);
  DimExpr len = step > 0 ? ne - ns : ns - ne;
  int64_t a = step > 0 ? step : -step;
  return a == 1 ? len : len.ceilDiv(DimExpr::constant(a));
}

/// Slice's operands: starts / ends as expressions, axes / steps as numbers; nullopt
/// where an input's value is unknown (attributes before opset 10).
struct SliceParams {
  std::optional<std::vector<DimExpr>> starts, ends;
  std::optional<std::vector<int64_t>> axes, steps;
};

SliceParams sliceParams(const InferContext &c) {
  SliceParams p;
  if (c.opset < 10) {
    auto exprs = [](const std::vector<int64_t> &v) {
      std::vector<DimExpr> out;
      for (int64_t x : v)
        out.push_back(DimExpr::constant(x));
      return out;
    };
    p.starts = exprs(c.attrInts("starts"));
    p.ends = exprs(c.attrInts("ends"));
    if (c.hasAttr("axes"))
      p.axes = c.attrInts("axes");
    p.steps = std::vector<int64_t>();
    return p;
  }
  if (const KnownValue *k = c.known(1))
    p.starts = k->elems;
  if (const KnownValue *k = c.known(2))
    p.ends = k->elems;
  if (c.has(3))
    p.axes = c.ints(3);
  p.steps = c.has(4) ? c.ints(4) : std::vector<int64_t>();
  return p;
}

/// The entries of a known 1-D value that a static slice selects.
std::vector<DimExpr> sliceKnown(const std::vector<DimExpr> &in, int64_t s, int64_t e, int64_t step) {
  const int64_t len = static_cast<int64_t>(in.size());
  const int64_t cnt = sliceLen(len, s, e, step);
  s = s < 0 ? s + len : s;
  s = std::max<int64_t>(0, std::min(s, step > 0 ? len : len - 1));
  std::vector<DimExpr> out;
  for (int64_t j = 0; j < cnt; ++j)
    out.push_back(in[static_cast<size_t>(s + j * step)]);
  return out;
}

// Slice(x, starts, ends[, axes, steps]) (attributes before opset 10).
Status slice(InferContext &c) {
  DType elem = c.elem(0);
  if (!c.dims(0)) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  SliceParams p = sliceParams(c);
  SymShape out = *c.dims(0);
  const int64_t r = static_cast<int64_t>(out.size());
  const SymShape allUnknown(out.size(), DimExpr());
  if ((c.opset >= 10 && c.has(3) && !p.axes) || !p.steps) { // which axes move is unknown
    c.setTensor(0, elem, allUnknown);
    return Status::ok();
  }
  size_t n = p.starts ? p.starts->size() : p.ends ? p.ends->size() : p.axes ? p.axes->size() : 0;
  if (!p.starts && !p.ends && !p.axes) { // how many leading axes are sliced: the starts' length
    auto len = c.dims(1) && c.dims(1)->size() == 1 ? c.dims(1)->at(0).asConstant() : std::nullopt;
    if (!len || *len > r) {
      c.setTensor(0, elem, allUnknown);
      return Status::ok();
    }
    n = static_cast<size_t>(*len);
  }
  if (!p.axes) {
    p.axes = std::vector<int64_t>(n);
    std::iota(p.axes->begin(), p.axes->end(), 0);
  }
  std::vector<int64_t> &axes = *p.axes, &steps = *p.steps;
  if (steps.empty())
    steps.assign(axes.size(), 1);
  if ((p.starts && p.starts->size() != axes.size()) || (p.ends && p.ends->size() != axes.size()) ||
      steps.size() != axes.size())
    return c.error("starts, ends, axes and steps differ in length");
  const bool bounds = p.starts && p.ends;
  for (size_t i = 0; i < axes.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(axes[i], r));
    if (steps[i] == 0)
      return c.error("slice step is 0");
    out[ax] = bounds ? sliceLenSym(out[ax], (*p.starts)[i], (*p.ends)[i], steps[i]) : DimExpr();
  }
  c.setTensor(0, elem, out);
  const KnownValue *kin = c.known(0);
  if (kin && r == 1 && bounds && axes.size() == 1) {
    auto s = (*p.starts)[0].asConstant(), e = (*p.ends)[0].asConstant();
    if (s && e)
      c.setKnown(0, KnownValue{sliceKnown(kin->elems, *s, *e, steps[0]), false});
  }
  return Status::ok();
}

// Gather(data, indices, axis): data[:axis] + indices + data[axis+1:].
Status gather(InferContext &c) {
  DType elem = c.elem(0);
  if (!c.dims(0) || !c.dims(1)) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  const SymShape &d = *c.dims(0), &idx = *c.dims(1);
  LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(c.attrInt("axis", 0), static_cast<int64_t>(d.size())));
  SymShape out(d.begin(), d.begin() + ax);
  out.insert(out.end(), idx.begin(), idx.end());
  out.insert(out.end(), d.begin() + ax + 1, d.end());
  c.setTensor(0, elem, out);
  const KnownValue *kd = c.known(0);
  auto ki = c.ints(1);
  if (kd && ki && d.size() == 1) {
    KnownValue k;
    k.scalar = idx.empty();
    const int64_t n = static_cast<int64_t>(kd->elems.size());
    for (int64_t i : *ki) {
      if (i < -n || i >= n)
        return c.error(fmt::format("index {} is out of range for {} elements", i, n));
      k.elems.push_back(kd->elems[static_cast<size_t>(i < 0 ? i + n : i)]);
    }
    c.setKnown(0, std::move(k));
  }
  return Status::ok();
}

// GatherElements(data, indices): the indices' shape.
Status gatherElements(InferContext &c) {
  c.setTensor(0, c.elem(0), c.dims(1));
  return Status::ok();
}

// GatherND(data, indices, batch_dims): indices[:-1] + data[batch_dims + indices[-1]:].
Status gatherND(InferContext &c) {
  DType elem = c.elem(0);
  const auto &d = c.dims(0), &idx = c.dims(1);
  std::optional<int64_t> q = idx && !idx->empty() ? idx->back().asConstant() : std::nullopt;
  if (!d || !q) {
    c.setTensor(0, elem, std::nullopt);
    return Status::ok();
  }
  size_t from = static_cast<size_t>(c.attrInt("batch_dims", 0) + *q);
  if (from > d->size())
    return c.error(fmt::format("index tuples of {} exceed data {}", *q, toString(*d)));
  SymShape out(idx->begin(), idx->end() - 1);
  out.insert(out.end(), d->begin() + static_cast<long>(from), d->end());
  c.setTensor(0, elem, out);
  return Status::ok();
}

/// The values of a 1-D shape input: known entries, or unknowns of its static length.
std::optional<SymShape> shapeOperand(const InferContext &c, size_t i) {
  if (const KnownValue *k = c.known(i))
    return k->elems;
  if (c.dims(i) && c.dims(i)->size() == 1)
    if (auto n = c.dims(i)->at(0).asConstant())
      return SymShape(static_cast<size_t>(*n), DimExpr());
  return std::nullopt;
}

// Expand(x, shape): x broadcast against `shape`.
Status expand(InferContext &c) {
  std::optional<SymShape> target = shapeOperand(c, 1);
  LLMOPT_ASSIGN_OR_RETURN(auto out, broadcast(c, {&c.dims(0), &target}));
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

// Tile(x, repeats): each dim times its repeat.
Status tile(InferContext &c) {
  std::optional<SymShape> out = c.dims(0);
  if (out) {
    const KnownValue *k = c.known(1);
    if (k && k->elems.size() != out->size())
      return c.error(fmt::format("{} repeats for input {}", k->elems.size(), toString(*out)));
    for (size_t i = 0; i < out->size(); ++i)
      (*out)[i] = k ? (*out)[i] * k->elems[i] : DimExpr();
  }
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

// Pad(x, pads[, value, axes]): begin and end pads added (attributes before opset 11).
Status pad(InferContext &c) {
  std::optional<SymShape> out = c.dims(0);
  if (!out) {
    c.setTensor(0, c.elem(0), std::nullopt);
    return Status::ok();
  }
  std::optional<std::vector<DimExpr>> pads;
  if (c.opset < 11) {
    std::vector<int64_t> p = c.attrInts(c.hasAttr("pads") ? "pads" : "paddings");
    pads = std::vector<DimExpr>();
    for (int64_t v : p)
      pads->push_back(DimExpr::constant(v));
  } else if (const KnownValue *k = c.known(1)) {
    pads = k->elems;
  }
  const int64_t r = static_cast<int64_t>(out->size());
  std::vector<int64_t> axes(static_cast<size_t>(r));
  std::iota(axes.begin(), axes.end(), 0);
  if (c.opset >= 18 && c.has(3)) {
    auto a = c.ints(3);
    if (!a) {
      c.setTensor(0, c.elem(0), SymShape(out->size(), DimExpr()));
      return Status::ok();
    }
    axes = *a;
  }
  if (!pads) {
    for (int64_t a : axes)
      if (a >= -r && a < r)
        (*out)[a < 0 ? a + r : a] = DimExpr();
    c.setTensor(0, c.elem(0), out);
    return Status::ok();
  }
  if (pads->size() != 2 * axes.size())
    return c.error(fmt::format("{} pads for {} axes", pads->size(), axes.size()));
  for (size_t i = 0; i < axes.size(); ++i) {
    LLMOPT_ASSIGN_OR_RETURN(int64_t ax, c.axis(axes[i], r));
    (*out)[ax] = (*out)[ax] + (*pads)[i] + (*pads)[i + axes.size()];
  }
  c.setTensor(0, c.elem(0), out);
  return Status::ok();
}

constexpr RuleEntry kRules[] = {
    {"", "Transpose", transpose}, {"", "Reshape", reshape}, {"", "Flatten", flatten},
    {"", "Squeeze", squeeze}, {"", "Unsqueeze", unsqueeze}, {"", "Concat", concat},
    {"", "Split", split}, {"", "Slice", slice}, {"", "Gather", gather},
    {"", "GatherElements", gatherElements}, {"", "GatherND", gatherND}, {"", "Expand", expand},
    {"", "Tile", tile}, {"", "Pad", pad},
};

} // namespace

std::span<const RuleEntry> tensorRules() { return kRules; }

} // namespace llmopt::shape
