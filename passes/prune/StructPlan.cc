// prune-struct's choice of units: scoring, selection, drop=, cuts (see StructPlan.h).
#include "passes/prune/StructPlan.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <fmt/format.h>

#include "ir/QuantFormats.h"

namespace llmopt::structprune {

std::vector<std::string> splitList(const std::string &s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return out;
}


std::optional<UnitId> parseUnitId(const std::string &s) {
  auto number = [](const std::string &t, size_t &pos, int64_t &out) {
    const size_t b = pos;
    while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos])))
      ++pos;
    if (pos == b || pos - b > 9)
      return false;
    out = std::stoll(t.substr(b, pos - b));
    return true;
  };
  UnitId u;
  size_t pos = 0;
  auto eat = [&](const std::string &lit) {
    if (s.compare(pos, lit.size(), lit) != 0)
      return false;
    pos += lit.size();
    return true;
  };
  if (eat("layer")) {
    u.kind = UnitId::LayerUnit;
    return number(s, pos, u.group) && pos == s.size() ? std::optional(u) : std::nullopt;
  }
  const bool attn = eat("attn");
  if (!attn && !eat("mlp"))
    return std::nullopt;
  if (!number(s, pos, u.group) || !eat("."))
    return std::nullopt;
  if (attn && eat("kv"))
    u.kind = UnitId::KvGroup;
  else if (attn && eat("q"))
    u.kind = UnitId::QueryHead;
  else if (!attn && eat("c"))
    u.kind = UnitId::Channel;
  else
    return std::nullopt;
  return number(s, pos, u.index) && pos == s.size() ? std::optional(u) : std::nullopt;
}

/// Types of the graph's non-constant values, restored after shape inference served the
/// analysis (the rewrite changes sizes; the output keeps what the input declared).
std::vector<float> absWeights(const Value *w) {
  std::vector<float> out;
  if (w->type().quant) {
    Expected<Tensor> d = quant::dequantize(*w->constant(), *w->type().quant);
    if (d)
      out.assign(d->view<float>().begin(), d->view<float>().end());
  } else {
    out = w->constant()->toFloats();
  }
  for (float &x : out)
    x = std::fabs(x);
  return out;
}

/// ||X[:, k]|| of the activations reaching `w` (every MatMul reading it); empty without
/// statistics.
std::vector<double> inputNorms(const Value *w, const calib::Stats *stats, int64_t K) {
  if (!stats)
    return {};
  std::vector<double> ss(static_cast<size_t>(K), 0.0);
  for (const Node *u : w->users()) {
    const calib::ActStats *s = stats->find(u->input(0));
    if (!s || s->channels != K)
      return {};
    for (int64_t k = 0; k < K; ++k)
      ss[static_cast<size_t>(k)] += s->sumSq[static_cast<size_t>(k)];
  }
  for (double &x : ss)
    x = std::sqrt(x);
  return ss;
}

namespace {

/// Per-channel scores of a space (see PruneStruct.h for the metrics).
std::vector<double> channelScores(const Space &sp, const std::string &metric,
                                  const calib::Stats *stats) {
  const int64_t C = sp.channels;
  std::vector<double> score(static_cast<size_t>(C), 0.0);
  if (metric == "activation") {
    for (const Value *w : sp.rows)
      for (const Node *u : w->users())
        if (const calib::ActStats *s = stats->find(u->input(0)); s && s->channels == C)
          for (int64_t c = 0; c < C; ++c)
            score[static_cast<size_t>(c)] += s->meanAbs(c);
    return score;
  }
  // Wanda scores a channel where it is read (Wanda-sp, as in FLAP's baseline): the columns'
  // inputs are the same activation for every channel, so they add only magnitude noise.
  const bool wanda = metric == "wanda";
  for (const Value *w : wanda ? std::vector<Value *>{} : sp.columns) {
    const int64_t K = w->constant()->shape()[0];
    const std::vector<float> a = absWeights(w);
    const std::vector<double> nk = wanda ? inputNorms(w, stats, K) : std::vector<double>{};
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        score[static_cast<size_t>(c)] +=
            a[static_cast<size_t>(k * C + c)] * (nk.empty() ? 1.0 : nk[static_cast<size_t>(k)]);
  }
  for (const Value *w : sp.rows) {
    const int64_t N = w->constant()->shape()[1];
    const std::vector<float> a = absWeights(w);
    const std::vector<double> nc = wanda ? inputNorms(w, stats, C) : std::vector<double>{};
    for (int64_t c = 0; c < C; ++c) {
      double row = 0;
      for (int64_t n = 0; n < N; ++n)
        row += a[static_cast<size_t>(c * N + n)];
      score[static_cast<size_t>(c)] += row * (nc.empty() ? 1.0 : nc[static_cast<size_t>(c)]);
    }
  }
  return score;
}

int64_t paramsPerChannel(const Space &sp) {
  int64_t p = 0;
  for (const Value *w : sp.columns)
    p += w->constant()->shape()[0];
  for (const Value *w : sp.rows)
    p += w->constant()->shape()[1];
  return p;
}

std::vector<double> unitScores(const Space &sp, const std::vector<double> &ch) {
  std::vector<double> u(static_cast<size_t>(sp.units()), 0.0);
  for (int64_t c = 0; c < sp.channels; ++c)
    u[static_cast<size_t>(c / sp.unitSize)] += ch[static_cast<size_t>(c)];
  return u;
}

} // namespace

Plan emptyPlan(const StructInfo &info, size_t layers) {
  Plan p;
  for (const MlpGroup &g : info.mlps)
    p.mlp.emplace_back(static_cast<size_t>(info.spaces[static_cast<size_t>(g.space)].channels), false);
  for (const AttentionGroup &a : info.attns) {
    p.q.emplace_back(static_cast<size_t>(a.heads), false);
    p.kv.emplace_back(static_cast<size_t>(a.kvHeads), false);
  }
  p.layers.assign(layers, false);
  return p;
}


void normalize(std::vector<Cand> &cands, size_t begin) {
  double sum = 0;
  for (size_t i = begin; i < cands.size(); ++i)
    sum += cands[i].score / static_cast<double>(std::max<int64_t>(1, cands[i].params));
  const double mean = (cands.size() > begin) ? sum / static_cast<double>(cands.size() - begin) : 0;
  for (size_t i = begin; i < cands.size(); ++i)
    cands[i].rel = mean > 0 ? cands[i].score / static_cast<double>(std::max<int64_t>(1, cands[i].params)) / mean : 0;
}

/// Greedy: lowest relative score first, until `target` parameters are gone; every group
/// keeps one unit, and rounds of query heads go in order. Returns the parameters removed.
int64_t select(std::vector<Cand> &cands, Plan &p, int64_t target) {
  std::stable_sort(cands.begin(), cands.end(), [](const Cand &a, const Cand &b) {
    return a.rel < b.rel || (a.rel == b.rel && (a.group < b.group || (a.group == b.group && a.index < b.index)));
  });
  std::map<int64_t, int64_t> rounds;
  auto count = [](const std::vector<bool> &v) { return std::count(v.begin(), v.end(), false); };
  int64_t removed = 0;
  for (const Cand &c : cands) {
    if (removed >= target)
      break;
    const size_t g = static_cast<size_t>(c.group), i = static_cast<size_t>(c.index);
    switch (c.kind) {
    case 0:
      if (count(p.mlp[g]) <= 1)
        continue;
      p.mlp[g][i] = true;
      break;
    case 1: {
      if (count(p.kv[g]) <= 1)
        continue;
      p.kv[g][i] = true;
      const size_t rep = p.q[g].size() / p.kv[g].size();
      for (size_t h = i * rep; h < (i + 1) * rep; ++h)
        p.q[g][h] = true;
      break;
    }
    case 2:
      if (rounds[c.group] != c.index)
        continue;
      ++rounds[c.group];
      for (int64_t h : c.heads)
        p.q[g][static_cast<size_t>(h)] = true;
      break;
    default:
      if (count(p.layers) <= 1)
        continue;
      p.layers[i] = true;
    }
    removed += c.params;
  }
  return removed;
}

/// Candidates of every MLP and attention group.
std::vector<Cand> unitCandidates(const StructInfo &info, const PruneStructOptions &o,
                                 const calib::Stats *stats) {
  std::vector<Cand> cands;
  if (o.channels)
    for (size_t i = 0; i < info.mlps.size(); ++i) {
      const Space &sp = info.spaces[static_cast<size_t>(info.mlps[i].space)];
      const std::vector<double> s = channelScores(sp, o.metric, stats);
      const size_t begin = cands.size();
      for (int64_t c = 0; c < sp.channels; ++c)
        cands.push_back({0, static_cast<int64_t>(i), c, s[static_cast<size_t>(c)], paramsPerChannel(sp), 0, {}});
      normalize(cands, begin);
    }
  if (!o.heads)
    return cands;
  for (size_t i = 0; i < info.attns.size(); ++i) {
    const AttentionGroup &a = info.attns[i];
    const Space &q = info.spaces[static_cast<size_t>(a.q)];
    const std::vector<double> qs = unitScores(q, channelScores(q, o.metric, stats));
    const int64_t qParams = q.unitSize * paramsPerChannel(q);
    std::vector<double> kvs(static_cast<size_t>(a.kvHeads), 0.0);
    int64_t kvParams = 0;
    for (int s : a.kv) {
      const Space &sp = info.spaces[static_cast<size_t>(s)];
      const std::vector<double> u = unitScores(sp, channelScores(sp, o.metric, stats));
      for (size_t g = 0; g < kvs.size(); ++g)
        kvs[g] += u[g];
      kvParams += sp.unitSize * paramsPerChannel(sp);
    }
    const size_t begin = cands.size();
    if (o.gqa == "kv" || a.rep == 1) {
      for (int64_t g = 0; g < a.kvHeads; ++g) {
        double s = a.kv.empty() ? 0 : kvs[static_cast<size_t>(g)];
        for (int64_t h = g * a.rep; h < (g + 1) * a.rep; ++h)
          s += qs[static_cast<size_t>(h)];
        cands.push_back({1, static_cast<int64_t>(i), g, s, a.rep * qParams + kvParams, 0, {}});
      }
    } else {
      std::vector<std::vector<int64_t>> order(static_cast<size_t>(a.kvHeads));
      for (int64_t g = 0; g < a.kvHeads; ++g) {
        auto &ord = order[static_cast<size_t>(g)];
        for (int64_t h = g * a.rep; h < (g + 1) * a.rep; ++h)
          ord.push_back(h);
        std::stable_sort(ord.begin(), ord.end(), [&](int64_t x, int64_t y) {
          return qs[static_cast<size_t>(x)] < qs[static_cast<size_t>(y)];
        });
      }
      for (int64_t r = 0; r + 1 < a.rep; ++r) {
        Cand c{2, static_cast<int64_t>(i), r, 0, a.kvHeads * qParams, 0, {}};
        for (const auto &ord : order) {
          c.heads.push_back(ord[static_cast<size_t>(r)]);
          c.score += qs[static_cast<size_t>(ord[static_cast<size_t>(r)])];
        }
        cands.push_back(std::move(c));
      }
    }
    normalize(cands, begin);
  }
  return cands;
}

/// The cuts a plan makes, checking GQA consistency (every kept KV group keeps the same
/// number of query heads; a removed KV group takes its query heads along).
Expected<std::map<int, SpaceCut>> planCuts(const StructInfo &info, const Plan &p) {
  std::map<int, SpaceCut> cuts;
  auto kept = [](const std::vector<bool> &cut) {
    std::vector<int64_t> k;
    for (size_t i = 0; i < cut.size(); ++i)
      if (!cut[i])
        k.push_back(static_cast<int64_t>(i));
    return k;
  };
  for (size_t i = 0; i < info.mlps.size(); ++i) {
    if (std::none_of(p.mlp[i].begin(), p.mlp[i].end(), [](bool b) { return b; }))
      continue;
    SpaceCut c{kept(p.mlp[i]), 1};
    if (c.keptUnits.empty())
      return errorf("pass '{}': MLP group mlp{} would lose all its channels", kPass, i);
    cuts[info.mlps[i].space] = c;
  }
  for (size_t i = 0; i < info.attns.size(); ++i) {
    const AttentionGroup &a = info.attns[i];
    if (std::none_of(p.q[i].begin(), p.q[i].end(), [](bool b) { return b; }))
      continue;
    const int64_t R = a.rep;
    std::optional<int64_t> repAfter;
    std::vector<bool> kvCut(static_cast<size_t>(a.kvHeads), false);
    for (int64_t g = 0; g < a.kvHeads; ++g) {
      int64_t left = 0;
      for (int64_t h = g * R; h < (g + 1) * R; ++h)
        left += !p.q[i][static_cast<size_t>(h)];
      if (left == 0) {
        kvCut[static_cast<size_t>(g)] = true;
        continue;
      }
      if (p.kv[i][static_cast<size_t>(g)] || (repAfter && *repAfter != left))
        return errorf("pass '{}': attention group attn{} would keep different numbers of query "
                      "heads per KV head; with GQA remove whole KV groups or the same number of "
                      "query heads from every group",
                      kPass, i);
      repAfter = left;
    }
    if (!repAfter)
      return errorf("pass '{}': attention group attn{} would lose all its heads", kPass, i);
    if (a.kv.empty()) {
      cuts[a.q] = SpaceCut{kept(p.q[i]), 1};
      continue;
    }
    cuts[a.q] = SpaceCut{kept(p.q[i]), *repAfter};
    for (int s : a.kv)
      cuts[s] = SpaceCut{kept(kvCut), *repAfter};
  }
  return cuts;
}

/// Applies drop= to a plan.
Status planFromDrop(const std::vector<std::string> &ids, const StructInfo &info, Plan &p) {
  for (const std::string &id : ids) {
    const UnitId u = *parseUnitId(id);
    const size_t g = static_cast<size_t>(u.group), i = static_cast<size_t>(u.index);
    auto bad = [&](const std::string &what, size_t n) {
      return errorf("pass '{}': drop={}: there {} {} {}", kPass, id, n == 1 ? "is" : "are", n, what);
    };
    switch (u.kind) {
    case UnitId::Channel:
      if (g >= p.mlp.size())
        return bad("MLP groups", p.mlp.size());
      if (i >= p.mlp[g].size())
        return bad(fmt::format("channels in mlp{}", g), p.mlp[g].size());
      p.mlp[g][i] = true;
      break;
    case UnitId::QueryHead:
    case UnitId::KvGroup: {
      if (g >= p.q.size())
        return bad("attention groups", p.q.size());
      const bool kv = u.kind == UnitId::KvGroup;
      const size_t n = kv ? p.kv[g].size() : p.q[g].size();
      if (i >= n)
        return bad(fmt::format("{} heads in attn{}", kv ? "KV" : "query", g), n);
      if (!kv) {
        p.q[g][i] = true;
        break;
      }
      const size_t rep = static_cast<size_t>(info.attns[g].rep);
      for (size_t h = i * rep; h < (i + 1) * rep; ++h)
        p.q[g][h] = true;
      break;
    }
    case UnitId::LayerUnit:
      if (g >= p.layers.size())
        return bad("layers", p.layers.size());
      p.layers[g] = true;
    }
  }
  return Status::ok();
}

} // namespace llmopt::structprune
