// The graph IR: SSA Values with use lists, Nodes with attributes and subgraphs,
// Graphs (ordered node lists) and the Model around the main graph.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/Op.h"
#include "ir/Tensor.h"
#include "ir/Type.h"

namespace llmopt {

class Graph;
class Node;

/// A node attribute. Kinds mirror ONNX's AttributeProto; type protos and sparse
/// tensors are carried as serialized protobuf bytes (`opaque`) so they round-trip.
class Value;

struct Attribute {
  enum class Kind : uint8_t {
    Float, Int, String, Tensor, Graph, Floats, Ints, Strings, Tensors, Graphs,
    TypeProto, TypeProtos, SparseTensor, SparseTensors
  };
  std::string name;
  Kind kind = Kind::Int;
  float f = 0;
  int64_t i = 0;
  std::string s;
  std::shared_ptr<Tensor> t;
  std::unique_ptr<Graph> g;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::vector<std::shared_ptr<Tensor>> tensors;
  std::vector<std::unique_ptr<Graph>> graphs;
  std::vector<std::string> opaque; ///< Serialized TypeProto / SparseTensorProto values.
  std::string refAttrName;         ///< Set inside function bodies only.
  std::string doc;

  static Attribute makeInt(std::string n, int64_t v);
  static Attribute makeFloat(std::string n, float v);
  static Attribute makeString(std::string n, std::string v);
  static Attribute makeInts(std::string n, std::vector<int64_t> v);
  static Attribute makeFloats(std::string n, std::vector<float> v);
  static Attribute makeTensor(std::string n, Tensor v);
  /// A deep copy; subgraphs are cloned with captured outer values remapped by `outerMap`.
  Attribute clone(std::map<const Value *, Value *> *outerMap = nullptr) const;
};

std::string_view attrKindName(Attribute::Kind k);

/// One use of a Value: operand `index` of `user`.
struct Use {
  Node *user;
  unsigned index;
  bool operator==(const Use &) const = default;
};

/// An SSA value: a graph input, a constant (initializer) or a node output.
class Value {
public:
  const std::string &name() const { return name_; }
  void setName(std::string n) { name_ = std::move(n); }
  const Type &type() const { return type_; }
  Type &mutableType() { return type_; }
  void setType(Type t) { type_ = std::move(t); }

  /// The producing node, or null for graph inputs and constants.
  Node *producer() const { return producer_; }
  unsigned producerIndex() const { return producerIndex_; }
  Graph *graph() const { return graph_; }

  bool isConstant() const { return constant_ != nullptr; }
  const std::shared_ptr<Tensor> &constant() const { return constant_; }
  /// Makes this value a constant with data `t` (type follows t, keeping quant info).
  void setConstant(std::shared_ptr<Tensor> t);
  bool isGraphInput() const { return isInput_; }
  bool isGraphOutput() const;

  const std::vector<Use> &uses() const { return uses_; }
  bool hasUses() const { return !uses_.empty(); }
  /// Users other than graph outputs, de-duplicated, in use order.
  std::vector<Node *> users() const;

  std::string doc;
  /// True if the imported model listed this value in value_info (kept for round-trips).
  bool hadValueInfo = false;

private:
  friend class Graph;
  friend class Node;
  friend void removeUse(Value *v, Node *user, unsigned index);
  std::string name_;
  Type type_;
  Node *producer_ = nullptr;
  unsigned producerIndex_ = 0;
  Graph *graph_ = nullptr;
  std::shared_ptr<Tensor> constant_;
  bool isInput_ = false;
  std::vector<Use> uses_;
};

/// An operation. Inputs may be null (an omitted optional input, "" in ONNX).
class Node {
public:
  OpKind kind() const { return kind_; }
  const std::string &domain() const { return domain_; }
  const std::string &opType() const { return opType_; }
  /// `Add`, or `com.microsoft::MatMulNBits` outside the default domain.
  std::string qualifiedOpType() const;
  bool is(OpKind k) const { return kind_ == k; }
  const std::string &name() const { return name_; }
  void setName(std::string n) { name_ = std::move(n); }
  Graph *graph() const { return graph_; }

  size_t numInputs() const { return inputs_.size(); }
  Value *input(size_t i) const { return i < inputs_.size() ? inputs_[i] : nullptr; }
  const std::vector<Value *> &inputs() const { return inputs_; }
  void setInput(size_t i, Value *v);
  void addInput(Value *v);
  /// Drops trailing inputs so that numInputs() == n.
  void truncateInputs(size_t n);

  size_t numOutputs() const { return outputs_.size(); }
  Value *output(size_t i = 0) const { return outputs_[i]; }
  const std::vector<Value *> &outputs() const { return outputs_; }
  /// Adds a new output value owned by this node's graph.
  Value *addOutput(std::string name = {}, Type t = {});

  std::vector<Attribute> &attributes() { return attrs_; }
  const std::vector<Attribute> &attributes() const { return attrs_; }
  const Attribute *attr(std::string_view n) const;
  Attribute *attr(std::string_view n);
  bool hasAttr(std::string_view n) const { return attr(n) != nullptr; }
  int64_t attrInt(std::string_view n, int64_t dflt) const;
  float attrFloat(std::string_view n, float dflt) const;
  std::string attrString(std::string_view n, const std::string &dflt) const;
  std::vector<int64_t> attrInts(std::string_view n) const;
  /// Adds or replaces an attribute.
  void setAttr(Attribute a);
  bool removeAttr(std::string_view n);

  /// Every subgraph held by this node's attributes.
  std::vector<Graph *> subgraphs() const;
  /// Opset version of this node's domain in the enclosing model (0 if unknown).
  int64_t opsetVersion() const;

  std::string doc;

private:
  friend class Graph;
  OpKind kind_ = OpKind::Opaque;
  std::string domain_, opType_, name_;
  std::vector<Value *> inputs_;
  std::vector<Value *> outputs_;
  std::vector<Attribute> attrs_;
  Graph *graph_ = nullptr;
  std::list<std::unique_ptr<Node>>::iterator self_;
};

class Model;

/// A graph: inputs, constants, nodes in program order, outputs. Subgraphs (If/Loop/
/// Scan bodies) are Graphs owned by an attribute; their nodes may use values of
/// enclosing graphs directly.
class Graph {
public:
  explicit Graph(std::string name = "main") : name_(std::move(name)) {}
  ~Graph();
  Graph(const Graph &) = delete;
  Graph &operator=(const Graph &) = delete;

  const std::string &name() const { return name_; }
  void setName(std::string n) { name_ = std::move(n); }
  std::string doc;

  /// The node whose attribute holds this graph (null for the main graph).
  Node *parentNode() const { return parentNode_; }
  /// The enclosing graph (null for the main graph).
  Graph *parentGraph() const;
  /// The model this graph belongs to (through its parents); may be null.
  Model *model() const;

  // ---- values ----
  Value *addInput(std::string name, Type t);
  /// A constant (initializer) value.
  Value *addConstant(std::string name, Tensor t);
  Value *addConstant(std::string name, std::shared_ptr<Tensor> t);
  const std::vector<Value *> &inputs() const { return inputs_; }
  const std::vector<Value *> &outputs() const { return outputs_; }
  /// Constants in creation order.
  std::vector<Value *> constants() const;
  void addOutput(Value *v);
  void setOutput(size_t i, Value *v);
  void removeOutput(size_t i);
  void removeInput(size_t i);
  /// Lists an existing value (typically a constant: an overridable initializer) as input.
  void markInput(Value *v);
  /// Every value owned by this graph, in creation order.
  std::vector<Value *> values() const;

  // ---- nodes ----
  /// Creates a node at the end (or before `before`) with fresh output values.
  Node *addNode(std::string_view domain, std::string_view opType, std::vector<Value *> inputs,
                size_t numOutputs = 1, std::string name = {}, Node *before = nullptr);
  Node *addNode(OpKind kind, std::vector<Value *> inputs, size_t numOutputs = 1,
                std::string name = {}, Node *before = nullptr);
  /// Removes a node; its outputs must have no uses left. Subgraph uses are dropped.
  void eraseNode(Node *n);
  /// Moves `n` to just before `pos` (or the end when null).
  void moveBefore(Node *n, Node *pos);
  size_t numNodes() const { return nodes_.size(); }
  /// Nodes in program order; safe against erasing the current node while iterating
  /// if you copy first (see nodeList()).
  const std::list<std::unique_ptr<Node>> &nodes() const { return nodes_; }
  std::vector<Node *> nodeList() const;
  /// Reorders nodes topologically (stable); fails naming a node on a cycle.
  Status topoSort();

  /// Replaces every use of `from` (incl. graph outputs, at any subgraph depth) with `to`.
  /// When `from` is a graph output, `to` takes over its name so boundary names stay.
  void replaceAllUsesWith(Value *from, Value *to);
  /// Replaces every use of `old` (graph outputs included) by a new constant holding
  /// `t`; the constant takes old's name (old is renamed) so names stay stable.
  Value *replaceWithConstant(Value *old, Tensor t);
  /// Drops constants and inputs-less values that nothing uses (never graph inputs/outputs).
  size_t removeUnusedConstants();

  /// A name not used by any value in this graph tree, based on `base`.
  std::string freshName(std::string_view base);
  /// Finds a value by name in this graph (not its parents).
  Value *findValue(std::string_view name) const;

  /// Deep copy into `parentNode` (values of outer graphs referenced by the copy map
  /// through `outerMap`; unmapped outer values are kept as they are).
  std::unique_ptr<Graph> clone(std::map<const Value *, Value *> *outerMap = nullptr) const;

  /// Walks every node of this graph and its subgraphs, pre-order.
  void walk(const std::function<void(Node *)> &fn) const;

  Model *model_ = nullptr; ///< Set on the main graph only.

private:
  friend class Node;
  friend struct Attribute;
  Value *newValue(std::string name, Type t);
  void eraseValue(Value *v);
  void attachSubgraphs(Node *n);
  Graph *root();

  std::string name_;
  Node *parentNode_ = nullptr;
  std::vector<Value *> inputs_;
  std::vector<Value *> outputs_;
  std::list<std::unique_ptr<Node>> nodes_;
  std::list<std::unique_ptr<Value>> values_;
  std::map<const Value *, std::list<std::unique_ptr<Value>>::iterator> valueSlots_;
  uint64_t nameCounter_ = 0;
};

/// A whole model: the main graph plus ONNX model-level fields.
class Model {
public:
  Model() : graph_(std::make_unique<Graph>("main")) { graph_->model_ = this; }
  Graph &graph() { return *graph_; }
  const Graph &graph() const { return *graph_; }

  int64_t irVersion = 8;
  /// Opset imports by canonical domain ("" is the ONNX default domain).
  std::map<std::string, int64_t> opsets{{"", 17}};
  std::string producerName, producerVersion, domain, doc;
  int64_t modelVersion = 0;
  /// metadata_props in file order.
  std::vector<std::pair<std::string, std::string>> metadata;
  /// Model-local functions and training info, kept as serialized protobuf bytes.
  std::vector<std::string> functions;
  std::vector<std::string> trainingInfo;
  /// Directory external data paths are relative to (set by the frontend).
  std::string baseDir;

  int64_t opsetVersion(std::string_view domain) const;
  void setMetadata(const std::string &key, const std::string &value);

private:
  std::unique_ptr<Graph> graph_;
};

} // namespace llmopt
