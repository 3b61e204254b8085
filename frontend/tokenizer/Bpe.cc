// The BPE model: a piece becomes its characters' ids, then the lowest-ranked adjacent pair is
// merged until none is left (tokenizers' Word::merge_all, same tie-break, same result).
#include <mutex>
#include <queue>

#include <fmt/format.h>

#include "frontend/tokenizer/Components.h"
#include "frontend/tokenizer/Unicode.h"

namespace llmopt::tok {
namespace {

struct Merge {
  uint32_t rank;
  int32_t id; ///< the merged token
};

/// (left id, right id) -> Merge, open addressing with linear probing: one cache line per lookup
/// where a node-based map chases pointers (merge lookups dominate encoding).
class MergeTable {
public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n)
      cap *= 2;
    slots_.assign(cap, Slot{kEmpty, {}});
    mask_ = cap - 1;
  }
  /// Inserts or overwrites (a repeated pair keeps its last rank, as in tokenizers).
  void set(int32_t a, int32_t b, Merge m) {
    if (2 * (size_ + 1) > slots_.size())
      grow();
    uint64_t k = key(a, b);
    size_t i = hash(k);
    while (slots_[i].key != kEmpty && slots_[i].key != k)
      i = (i + 1) & mask_;
    size_ += slots_[i].key == kEmpty;
    slots_[i] = {k, m};
  }
  const Merge *find(int32_t a, int32_t b) const {
    if (slots_.empty())
      return nullptr;
    uint64_t k = key(a, b);
    for (size_t i = hash(k);; i = (i + 1) & mask_) {
      if (slots_[i].key == k)
        return &slots_[i].merge;
      if (slots_[i].key == kEmpty)
        return nullptr;
    }
  }

private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b);
  }
  size_t hash(uint64_t k) const { // splitmix64's finalizer
    k = (k ^ (k >> 30)) * 0xBF58476D1CE4E5B9ull;
    k = (k ^ (k >> 27)) * 0x94D049BB133111EBull;
    return (k ^ (k >> 31)) & mask_;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    reserve(std::max<size_t>(old.size(), 8));
    size_ = 0;
    for (const Slot &s : old)
      if (s.key != kEmpty)
        set(static_cast<int32_t>(s.key >> 32), static_cast<int32_t>(s.key & 0xFFFFFFFF), s.merge);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

class Bpe final : public Model {
public:
  Vocab vocab;
  MergeTable merges;
  std::optional<int32_t> unk;
  std::string prefix, suffix; ///< continuing_subword_prefix, end_of_word_suffix
  bool fuseUnk = false, byteFallback = false, ignoreMerges = false;

  void tokenize(std::string_view piece, std::vector<int32_t> &out) const override {
    if (ignoreMerges)
      if (auto id = vocab.find(piece)) {
        out.push_back(*id);
        return;
      }
    {
      std::lock_guard<std::mutex> lock(cacheMutex_);
      if (auto it = cache_.find(piece); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids = mergeAll(initialSymbols(piece));
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cacheMutex_);
    if (cache_.size() < kCacheCapacity)
      cache_.emplace(std::string(piece), std::move(ids));
  }
  std::optional<int32_t> tokenToId(std::string_view t) const override { return vocab.find(t); }
  const std::string *idToToken(int32_t id) const override { return vocab.token(id); }
  int32_t size() const override { return static_cast<int32_t>(vocab.tokens.size()); }
  std::optional<int32_t> unkId() const override { return unk; }
  std::string_view type() const override { return "BPE"; }

private:
  static constexpr size_t kCacheCapacity = 10000;

  struct Symbol {
    int32_t id;
    int32_t prev, next; ///< neighbours; -1 at the ends
    bool live;
  };

  /// One symbol per character (with the subword prefix / word suffix where they apply);
  /// unknown characters become byte tokens or unk, or vanish when there is neither.
  std::vector<int32_t> initialSymbols(std::string_view w) const {
    std::vector<int32_t> ids;
    int32_t pendingUnk = -1;
    std::string s;
    for (size_t i = 0; i < w.size();) {
      size_t len = std::min(utf8Len(static_cast<unsigned char>(w[i])), w.size() - i);
      s.clear();
      if (i > 0)
        s += prefix;
      s += w.substr(i, len);
      i += len;
      if (i == w.size())
        s += suffix;
      if (auto id = vocab.find(s)) {
        if (pendingUnk >= 0)
          ids.push_back(pendingUnk), pendingUnk = -1;
        ids.push_back(*id);
        continue;
      }
      if (byteFallback && appendByteTokens(s, ids))
        continue;
      if (unk) {
        if (pendingUnk >= 0 && !fuseUnk)
          ids.push_back(pendingUnk);
        pendingUnk = *unk; // fused unknowns share one unk
      }
    }
    if (pendingUnk >= 0)
      ids.push_back(pendingUnk);
    return ids;
  }

  /// <0xAB> tokens for each byte of s, if the vocabulary has them all.
  bool appendByteTokens(std::string_view s, std::vector<int32_t> &ids) const {
    size_t mark = ids.size();
    for (unsigned char b : s) {
      auto id = vocab.find(fmt::format("<0x{:02X}>", b));
      if (!id) {
        ids.resize(mark);
        return false;
      }
      ids.push_back(*id);
    }
    return true;
  }

  const Merge *mergeOf(int32_t a, int32_t b) const { return merges.find(a, b); }

  std::vector<int32_t> mergeAll(const std::vector<int32_t> &ids) const {
    const int32_t n = static_cast<int32_t>(ids.size());
    std::vector<Symbol> sym(n);
    for (int32_t i = 0; i < n; ++i)
      sym[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};
    // Queue entries: lowest rank first, then leftmost position.
    struct Entry {
      uint32_t rank;
      int32_t pos, id;
      bool operator>(const Entry &o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
    for (int32_t i = 0; i + 1 < n; ++i)
      if (auto m = mergeOf(ids[i], ids[i + 1]))
        queue.push({m->rank, i, m->id});
    while (!queue.empty()) {
      Entry top = queue.top();
      queue.pop();
      Symbol &cur = sym[top.pos];
      if (!cur.live || cur.next < 0)
        continue;
      Symbol &right = sym[cur.next];
      auto m = mergeOf(cur.id, right.id);
      if (!m || m->id != top.id) // stale: a neighbour has changed since this was queued
        continue;
      cur.id = top.id;
      right.live = false;
      cur.next = right.next;
      if (right.next >= 0)
        sym[right.next].prev = top.pos;
      if (cur.prev >= 0)
        if (auto pm = mergeOf(sym[cur.prev].id, cur.id))
          queue.push({pm->rank, cur.prev, pm->id});
      if (cur.next >= 0)
        if (auto nm = mergeOf(cur.id, sym[cur.next].id))
          queue.push({nm->rank, top.pos, nm->id});
    }
    std::vector<int32_t> out;
    for (const Symbol &s : sym)
      if (s.live)
        out.push_back(s.id);
    return out;
  }

  mutable std::mutex cacheMutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

/// A merge is "a b" or ["a", "b"].
Expected<std::pair<std::string, std::string>> mergePair(const JsonAt &at) {
  if (at.j.is_string()) {
    const std::string &s = at.j.get_ref<const std::string &>();
    size_t sp = s.find(' ');
    if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
      return at.error(fmt::format("merge '{}' is not two tokens separated by one space", s));
    return std::pair(s.substr(0, sp), s.substr(sp + 1));
  }
  if (at.j.is_array() && at.j.size() == 2 && at.j[0].is_string() && at.j[1].is_string())
    return std::pair(at.j[0].get<std::string>(), at.j[1].get<std::string>());
  return at.error("a merge must be \"a b\" or [\"a\", \"b\"]");
}

} // namespace

Expected<std::unique_ptr<Model>> makeBpe(const JsonAt &at) {
  auto bpe = std::make_unique<Bpe>();
  if (JsonAt d = at["dropout"]; !d.j.is_null() && !(d.j.is_number() && d.j.get<double>() == 0))
    return d.unsupported("BPE dropout", d.j.dump(), "null or 0: encoding is deterministic");
  LLMOPT_ASSIGN_OR_RETURN(bpe->vocab, Vocab::fromJson(at["vocab"]));
  LLMOPT_ASSIGN_OR_RETURN(auto unk, at.optString("unk_token"));
  LLMOPT_ASSIGN_OR_RETURN(auto prefix, at.optString("continuing_subword_prefix"));
  LLMOPT_ASSIGN_OR_RETURN(auto suffix, at.optString("end_of_word_suffix"));
  LLMOPT_ASSIGN_OR_RETURN(bpe->fuseUnk, at.boolean("fuse_unk", false));
  LLMOPT_ASSIGN_OR_RETURN(bpe->byteFallback, at.boolean("byte_fallback", false));
  LLMOPT_ASSIGN_OR_RETURN(bpe->ignoreMerges, at.boolean("ignore_merges", false));
  bpe->prefix = prefix.value_or("");
  bpe->suffix = suffix.value_or("");
  if (unk) {
    bpe->unk = bpe->vocab.find(*unk);
    if (!bpe->unk)
      return at["unk_token"].error(fmt::format("unk_token '{}' is not in the vocabulary", *unk));
  }
  JsonAt list = at["merges"];
  if (!list.j.is_array())
    return list.error("expected an array");
  bpe->merges.reserve(list.j.size());
  for (size_t r = 0; r < list.j.size(); ++r) {
    LLMOPT_ASSIGN_OR_RETURN(auto pair, mergePair(list[r]));
    auto a = bpe->vocab.find(pair.first), b = bpe->vocab.find(pair.second);
    std::string_view bTail = pair.second;
    if (!bpe->prefix.empty() && bTail.substr(0, bpe->prefix.size()) == bpe->prefix)
      bTail.remove_prefix(bpe->prefix.size());
    auto merged = bpe->vocab.find(pair.first + std::string(bTail));
    if (!a || !b || !merged)
      return list[r].error(fmt::format("merge '{} {}' names a token not in the vocabulary",
                                       pair.first, pair.second));
    bpe->merges.set(*a, *b, {static_cast<uint32_t>(r), *merged});
  }
  return std::unique_ptr<Model>(std::move(bpe));
}

Expected<std::unique_ptr<Model>> makeModel(const JsonAt &at) {
  std::string type;
  if (at.has("type")) {
    LLMOPT_ASSIGN_OR_RETURN(type, at.type());
  } else if (at.has("merges")) { // files from older tokenizers leave the type out
    type = "BPE";
  } else if (at.has("max_input_chars_per_word")) {
    type = "WordPiece";
  }
  if (type == "BPE")
    return makeBpe(at);
  if (type == "WordPiece")
    return makeWordPiece(at);
  return at["type"].unsupported("model type", type, "BPE, WordPiece");
}

} // namespace llmopt::tok
