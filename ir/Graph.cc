// Graph IR mutation: use-list upkeep, node creation and removal, cloning.
#include "ir/Graph.h"

#include <algorithm>
#include <cassert>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace llmopt {

// ---------------------------------------------------------------- Attribute

Attribute Attribute::makeInt(std::string n, int64_t v) {
  Attribute a;
  a.name = std::move(n);
  a.kind = Kind::Int;
  a.i = v;
  return a;
}
Attribute Attribute::makeFloat(std::string n, float v) {
  Attribute a;
  a.name = std::move(n);
  a.kind = Kind::Float;
  a.f = v;
  return a;
}
Attribute Attribute::makeString(std::string n, std::string v) {
  Attribute a;
  a.name = std::move(n);
  a.kind = Kind::String;
  a.s = std::move(v);
  return a;
}
Attribute Attribute::makeInts(std::string n, std::vector<int64_t> v) {
  Attribute a;
  a.name = std::move(n);
  a.kind = Kind::Ints;
  a.ints = std::move(v);
  return a;
}
Attribute Attribute::makeFloats(std::string n, std::vector<float> v) {
  Attribute a;
  a.name = std::move(n);
  a.kind = Kind::Floats;
  a.floats = std::move(v);
  return a;
}
Attribute Attribute::makeTensor(std::string n, Tensor v) {
  Attribute a;
  a.name = std::move(n);
  a.kind = Kind::Tensor;
  a.t = std::make_shared<Tensor>(std::move(v));
  return a;
}

Attribute Attribute::clone(std::map<const Value *, Value *> *outerMap) const {
  Attribute a;
  a.name = name;
  a.kind = kind;
  a.f = f;
  a.i = i;
  a.s = s;
  a.t = t;
  if (g)
    a.g = g->clone(outerMap);
  a.floats = floats;
  a.ints = ints;
  a.strings = strings;
  a.tensors = tensors;
  for (const auto &sg : graphs)
    a.graphs.push_back(sg->clone(outerMap));
  a.opaque = opaque;
  a.refAttrName = refAttrName;
  a.doc = doc;
  return a;
}

std::string_view attrKindName(Attribute::Kind k) {
  switch (k) {
  case Attribute::Kind::Float: return "float";
  case Attribute::Kind::Int: return "int";
  case Attribute::Kind::String: return "string";
  case Attribute::Kind::Tensor: return "tensor";
  case Attribute::Kind::Graph: return "graph";
  case Attribute::Kind::Floats: return "floats";
  case Attribute::Kind::Ints: return "ints";
  case Attribute::Kind::Strings: return "strings";
  case Attribute::Kind::Tensors: return "tensors";
  case Attribute::Kind::Graphs: return "graphs";
  case Attribute::Kind::TypeProto: return "type_proto";
  case Attribute::Kind::TypeProtos: return "type_protos";
  case Attribute::Kind::SparseTensor: return "sparse_tensor";
  case Attribute::Kind::SparseTensors: return "sparse_tensors";
  }
  return "?";
}

// ---------------------------------------------------------------- Value

void Value::setConstant(std::shared_ptr<Tensor> t) {
  std::optional<QuantEncoding> q = type_.quant;
  constant_ = std::move(t);
  if (constant_) {
    DType elem = q ? type_.elem : constant_->dtype();
    type_ = Type::tensorOf(elem, constant_->shape());
    type_.quant = q;
  }
}

bool Value::isGraphOutput() const {
  if (!graph_)
    return false;
  const auto &outs = graph_->outputs();
  return std::find(outs.begin(), outs.end(), this) != outs.end();
}

std::vector<Node *> Value::users() const {
  std::vector<Node *> out;
  for (const Use &u : uses_)
    if (std::find(out.begin(), out.end(), u.user) == out.end())
      out.push_back(u.user);
  return out;
}

// ---------------------------------------------------------------- Node

std::string Node::qualifiedOpType() const {
  return domain_.empty() ? opType_ : domain_ + "::" + opType_;
}

void removeUse(Value *v, Node *user, unsigned index) {
  auto &uses = v->uses_;
  auto it = std::find(uses.begin(), uses.end(), Use{user, index});
  assert(it != uses.end() && "use list out of sync");
  uses.erase(it);
}

void Node::setInput(size_t i, Value *v) {
  assert(i < inputs_.size());
  if (inputs_[i])
    removeUse(inputs_[i], this, static_cast<unsigned>(i));
  inputs_[i] = v;
  if (v)
    v->uses_.push_back(Use{this, static_cast<unsigned>(i)});
}

void Node::addInput(Value *v) {
  inputs_.push_back(nullptr);
  setInput(inputs_.size() - 1, v);
}

void Node::truncateInputs(size_t n) {
  while (inputs_.size() > n) {
    setInput(inputs_.size() - 1, nullptr);
    inputs_.pop_back();
  }
}

Value *Node::addOutput(std::string name, Type t) {
  Value *v = graph_->newValue(std::move(name), std::move(t));
  v->producer_ = this;
  v->producerIndex_ = static_cast<unsigned>(outputs_.size());
  outputs_.push_back(v);
  return v;
}

const Attribute *Node::attr(std::string_view n) const {
  for (const Attribute &a : attrs_)
    if (a.name == n)
      return &a;
  return nullptr;
}
Attribute *Node::attr(std::string_view n) {
  for (Attribute &a : attrs_)
    if (a.name == n)
      return &a;
  return nullptr;
}
int64_t Node::attrInt(std::string_view n, int64_t dflt) const {
  const Attribute *a = attr(n);
  return a && a->kind == Attribute::Kind::Int ? a->i : dflt;
}
float Node::attrFloat(std::string_view n, float dflt) const {
  const Attribute *a = attr(n);
  return a && a->kind == Attribute::Kind::Float ? a->f : dflt;
}
std::string Node::attrString(std::string_view n, const std::string &dflt) const {
  const Attribute *a = attr(n);
  return a && a->kind == Attribute::Kind::String ? a->s : dflt;
}
std::vector<int64_t> Node::attrInts(std::string_view n) const {
  const Attribute *a = attr(n);
  return a && a->kind == Attribute::Kind::Ints ? a->ints : std::vector<int64_t>{};
}

void Node::setAttr(Attribute a) {
  for (Attribute &old : attrs_)
    if (old.name == a.name) {
      old = std::move(a);
      graph_->attachSubgraphs(this);
      return;
    }
  attrs_.push_back(std::move(a));
  graph_->attachSubgraphs(this);
}

bool Node::removeAttr(std::string_view n) {
  auto it = std::find_if(attrs_.begin(), attrs_.end(), [&](const Attribute &a) { return a.name == n; });
  if (it == attrs_.end())
    return false;
  attrs_.erase(it);
  return true;
}

std::vector<Graph *> Node::subgraphs() const {
  std::vector<Graph *> out;
  for (const Attribute &a : attrs_) {
    if (a.g)
      out.push_back(a.g.get());
    for (const auto &g : a.graphs)
      out.push_back(g.get());
  }
  return out;
}

int64_t Node::opsetVersion() const {
  Model *m = graph_ ? graph_->model() : nullptr;
  return m ? m->opsetVersion(domain_) : 0;
}

// ---------------------------------------------------------------- Graph

Graph::~Graph() {
  // Subgraphs go first, while the values they capture from here are still alive.
  for (auto &n : nodes_)
    n->attrs_.clear();
  // Drop uses held by this graph's nodes on values of enclosing graphs first.
  for (auto &n : nodes_)
    for (size_t i = 0; i < n->inputs_.size(); ++i)
      if (n->inputs_[i] && n->inputs_[i]->graph_ != this) {
        removeUse(n->inputs_[i], n.get(), static_cast<unsigned>(i));
        n->inputs_[i] = nullptr;
      }
}

Graph *Graph::parentGraph() const { return parentNode_ ? parentNode_->graph_ : nullptr; }

Graph *Graph::root() {
  Graph *g = this;
  while (g->parentGraph())
    g = g->parentGraph();
  return g;
}

Model *Graph::model() const { return const_cast<Graph *>(this)->root()->model_; }

Value *Graph::newValue(std::string name, Type t) {
  values_.push_back(std::make_unique<Value>());
  Value *v = values_.back().get();
  v->name_ = std::move(name);
  v->type_ = std::move(t);
  v->graph_ = this;
  valueSlots_[v] = std::prev(values_.end());
  return v;
}

void Graph::eraseValue(Value *v) {
  assert(v->uses_.empty() && "erasing a value that is still used");
  auto it = valueSlots_.find(v);
  assert(it != valueSlots_.end());
  values_.erase(it->second);
  valueSlots_.erase(it);
}

Value *Graph::addInput(std::string name, Type t) {
  Value *v = newValue(std::move(name), std::move(t));
  v->isInput_ = true;
  inputs_.push_back(v);
  return v;
}

Value *Graph::addConstant(std::string name, Tensor t) {
  return addConstant(std::move(name), std::make_shared<Tensor>(std::move(t)));
}

Value *Graph::addConstant(std::string name, std::shared_ptr<Tensor> t) {
  Value *v = newValue(std::move(name), {});
  v->setConstant(std::move(t));
  return v;
}

std::vector<Value *> Graph::constants() const {
  std::vector<Value *> out;
  for (const auto &v : values_)
    if (v->constant_)
      out.push_back(v.get());
  return out;
}

std::vector<Value *> Graph::values() const {
  std::vector<Value *> out;
  out.reserve(values_.size());
  for (const auto &v : values_)
    out.push_back(v.get());
  return out;
}

void Graph::addOutput(Value *v) { outputs_.push_back(v); }
void Graph::setOutput(size_t i, Value *v) { outputs_.at(i) = v; }
void Graph::removeOutput(size_t i) { outputs_.erase(outputs_.begin() + static_cast<long>(i)); }
void Graph::removeInput(size_t i) {
  Value *v = inputs_.at(i);
  inputs_.erase(inputs_.begin() + static_cast<long>(i));
  v->isInput_ = false;
}

void Graph::markInput(Value *v) {
  assert(v->graph_ == this && !v->producer_);
  v->isInput_ = true;
  inputs_.push_back(v);
}

void Graph::attachSubgraphs(Node *n) {
  for (Graph *g : n->subgraphs())
    g->parentNode_ = n;
}

Node *Graph::addNode(std::string_view domain, std::string_view opType, std::vector<Value *> inputs,
                     size_t numOutputs, std::string name, Node *before) {
  auto owned = std::make_unique<Node>();
  Node *n = owned.get();
  n->domain_ = std::string(canonicalDomain(domain));
  n->opType_ = std::string(opType);
  n->kind_ = lookupOp(n->domain_, n->opType_);
  n->name_ = std::move(name);
  n->graph_ = this;
  auto pos = before ? before->self_ : nodes_.end();
  n->self_ = nodes_.insert(pos, std::move(owned));
  for (Value *v : inputs)
    n->addInput(v);
  for (size_t i = 0; i < numOutputs; ++i)
    n->addOutput();
  return n;
}

Node *Graph::addNode(OpKind kind, std::vector<Value *> inputs, size_t numOutputs, std::string name,
                     Node *before) {
  const OpInfo &info = opInfo(kind);
  return addNode(info.domain, info.name, std::move(inputs), numOutputs, std::move(name), before);
}

void Graph::eraseNode(Node *n) {
  assert(n->graph_ == this);
  for (size_t i = 0; i < n->inputs_.size(); ++i)
    n->setInput(i, nullptr);
  for (Value *out : n->outputs_) {
    assert(!out->hasUses() && !out->isGraphOutput() && "erasing a node whose outputs are used");
    out->producer_ = nullptr;
    eraseValue(out);
  }
  n->outputs_.clear();
  n->attrs_.clear(); // destroys subgraphs, which drop their outer uses
  nodes_.erase(n->self_);
}

void Graph::moveBefore(Node *n, Node *pos) {
  auto target = pos ? pos->self_ : nodes_.end();
  nodes_.splice(target, nodes_, n->self_);
}

std::vector<Node *> Graph::nodeList() const {
  std::vector<Node *> out;
  out.reserve(nodes_.size());
  for (const auto &n : nodes_)
    out.push_back(n.get());
  return out;
}

void Graph::replaceAllUsesWith(Value *from, Value *to) {
  if (from == to)
    return;
  std::vector<Use> uses = from->uses_;
  for (const Use &u : uses)
    u.user->setInput(u.index, to);
  // Subgraph bodies may return a captured outer value directly.
  std::function<void(Graph &)> fixNested = [&](Graph &g) {
    for (auto &n : g.nodes_)
      for (Attribute &a : n->attrs_) {
        auto fix = [&](Graph &sg) {
          std::replace(sg.outputs_.begin(), sg.outputs_.end(), from, to);
          fixNested(sg);
        };
        if (a.g)
          fix(*a.g);
        for (auto &sg : a.graphs)
          fix(*sg);
      }
  };
  fixNested(*this);
  bool wasOutput = false;
  const bool toWasOutput = std::count(outputs_.begin(), outputs_.end(), to) > 0;
  for (Value *&o : outputs_)
    if (o == from) {
      o = to;
      wasOutput = true;
    }
  if (wasOutput && !toWasOutput && to->graph_ == this && !to->isInput_ && !to->isConstant()) {
    // `to` now stands at the boundary: it takes the old name so consumers of the
    // model see the same output names.
    std::string keep = from->name_;
    from->name_ = freshName(keep + ".replaced");
    to->name_ = keep;
  }
}

Value *Graph::replaceWithConstant(Value *old, Tensor t) {
  std::string keep = old->name_;
  old->name_ = freshName(keep.empty() ? "folded" : keep + ".folded");
  Value *c = addConstant(keep.empty() ? freshName("folded") : keep, std::move(t));
  std::vector<Use> uses = old->uses_;
  for (const Use &u : uses)
    u.user->setInput(u.index, c);
  std::replace(outputs_.begin(), outputs_.end(), old, c);
  return c;
}

size_t Graph::removeUnusedConstants() {
  size_t removed = 0;
  for (Value *v : constants())
    if (!v->hasUses() && !v->isInput_ && !v->isGraphOutput()) {
      eraseValue(v);
      ++removed;
    }
  return removed;
}

std::string Graph::freshName(std::string_view base) {
  Graph *r = root();
  std::unordered_set<std::string> used;
  std::function<void(const Graph *)> collect = [&](const Graph *g) {
    for (const auto &v : g->values_)
      used.insert(v->name_);
    for (const auto &n : g->nodes_)
      for (Graph *sg : n->subgraphs())
        collect(sg);
  };
  collect(r);
  std::string b(base.empty() ? std::string_view("v") : base);
  if (!used.count(b))
    return b;
  for (;;) {
    std::string cand = b + "_" + std::to_string(++r->nameCounter_);
    if (!used.count(cand))
      return cand;
  }
}

Value *Graph::findValue(std::string_view name) const {
  for (const auto &v : values_)
    if (v->name_ == name)
      return v.get();
  return nullptr;
}

void Graph::walk(const std::function<void(Node *)> &fn) const {
  for (const auto &n : nodes_) {
    fn(n.get());
    for (Graph *g : n->subgraphs())
      g->walk(fn);
  }
}

std::unique_ptr<Graph> Graph::clone(std::map<const Value *, Value *> *outerMap) const {
  auto g = std::make_unique<Graph>(name_);
  g->doc = doc;
  std::map<const Value *, Value *> map;
  if (outerMap)
    map = *outerMap;
  // Values in creation order: inputs and constants first need their slots.
  for (const auto &v : values_) {
    if (v->producer_)
      continue;
    Value *nv = g->newValue(v->name_, v->type_);
    nv->constant_ = v->constant_;
    nv->doc = v->doc;
    nv->hadValueInfo = v->hadValueInfo;
    map[v.get()] = nv;
  }
  for (Value *in : inputs_) {
    map[in]->isInput_ = true;
    g->inputs_.push_back(map[in]);
  }
  for (const auto &n : nodes_) {
    std::vector<Value *> ins;
    for (Value *in : n->inputs_) {
      auto it = in ? map.find(in) : map.end();
      ins.push_back(in ? (it != map.end() ? it->second : in) : nullptr);
    }
    Node *c = g->addNode(n->domain_, n->opType_, ins, 0, n->name_);
    c->doc = n->doc;
    for (Value *out : n->outputs_) {
      Value *nv = c->addOutput(out->name_, out->type_);
      nv->doc = out->doc;
      nv->hadValueInfo = out->hadValueInfo;
      map[out] = nv;
    }
    // Subgraph bodies may capture values of this graph: the map remaps those uses.
    for (const Attribute &a : n->attrs_)
      c->attrs_.push_back(a.clone(&map));
    g->attachSubgraphs(c);
  }
  for (Value *out : outputs_) {
    auto it = map.find(out);
    g->outputs_.push_back(it != map.end() ? it->second : out);
  }
  return g;
}

// ---------------------------------------------------------------- Model

int64_t Model::opsetVersion(std::string_view domain) const {
  auto it = opsets.find(std::string(canonicalDomain(domain)));
  return it == opsets.end() ? 0 : it->second;
}

void Model::setMetadata(const std::string &key, const std::string &value) {
  for (auto &kv : metadata)
    if (kv.first == key) {
      kv.second = value;
      return;
    }
  metadata.emplace_back(key, value);
}

} // namespace llmopt

#include "ir/GraphAlgorithms.h"

namespace llmopt {

Status Graph::topoSort() {
  LLMOPT_ASSIGN_OR_RETURN(std::vector<Node *> order, topologicalOrder(*this));
  for (Node *n : order)
    moveBefore(n, nullptr);
  return Status::ok();
}

} // namespace llmopt
