// ONNX frontend: converts ModelProto into the IR, resolving names through scopes,
// mapping external data, and reporting malformed input with its location.
#include "frontend/OnnxImporter.h"

#include <climits>
#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/defs/parser.h>
#include <onnx/onnx_pb.h>

#include "frontend/TypeConversion.h"
#include "ir/Verifier.h"

namespace llmopt {
namespace {

namespace fs = std::filesystem;

/// Name -> value bindings of one graph, chained to the enclosing graph's scope.
struct Scope {
  const Scope *parent = nullptr;
  std::unordered_map<std::string, Value *> names;
  Value *lookup(const std::string &n) const {
    for (const Scope *s = this; s; s = s->parent) {
      auto it = s->names.find(n);
      if (it != s->names.end())
        return it->second;
    }
    return nullptr;
  }
};

class Importer {
public:
  Importer(std::string source, std::string baseDir)
      : source_(std::move(source)), baseDir_(std::move(baseDir)) {}

  Expected<std::unique_ptr<Model>> run(const onnx::ModelProto &p) {
    auto m = std::make_unique<Model>();
    if (!p.has_graph())
      return errorf("{}: model has no graph", source_);
    if (p.ir_version() <= 0)
      return errorf("{}: model has no ir_version (is this an ONNX model?)", source_);
    m->irVersion = p.ir_version();
    m->opsets.clear();
    for (const auto &op : p.opset_import())
      m->opsets[std::string(canonicalDomain(op.domain()))] = op.version();
    if (m->opsets.empty() && p.ir_version() < 3)
      m->opsets[""] = 1; // IR < 3 models predate opset_import
    m->producerName = p.producer_name();
    m->producerVersion = p.producer_version();
    m->domain = p.domain();
    m->modelVersion = p.model_version();
    m->doc = p.doc_string();
    m->baseDir = baseDir_;
    for (const auto &kv : p.metadata_props())
      m->metadata.emplace_back(kv.key(), kv.value());
    for (const auto &f : p.functions())
      m->functions.push_back(f.SerializeAsString());
    for (const auto &t : p.training_info())
      m->trainingInfo.push_back(t.SerializeAsString());
    Scope root;
    LLMOPT_RETURN_IF_ERROR(graph(p.graph(), m->graph(), root));
    return m;
  }

private:
  Status graph(const onnx::GraphProto &gp, Graph &g, Scope &scope) {
    g.setName(gp.name());
    g.doc = gp.doc_string();
    if (gp.sparse_initializer_size() > 0)
      return errorf("{}: graph '{}': sparse initializers are not supported", source_, gp.name());
    for (const auto &tp : gp.initializer()) {
      LLMOPT_ASSIGN_OR_RETURN(Tensor t, tensor(tp));
      if (scope.names.count(tp.name()))
        return errorf("{}: graph '{}': initializer '{}' is defined twice", source_, gp.name(),
                      tp.name());
      Value *v = g.addConstant(tp.name(), std::move(t));
      v->doc = tp.doc_string();
      scope.names[tp.name()] = v;
    }
    for (const auto &vi : gp.input()) {
      LLMOPT_ASSIGN_OR_RETURN(Type t, convertType(vi.type(), source_ + ": input '" + vi.name() + "'"));
      auto it = scope.names.find(vi.name());
      if (it != scope.names.end() && it->second->isConstant() && !it->second->isGraphInput()) {
        // An initializer listed as input: an overridable default.
        g.markInput(it->second);
        it->second->doc = vi.doc_string();
        continue;
      }
      if (it != scope.names.end())
        return errorf("{}: graph '{}': input '{}' is declared twice", source_, gp.name(), vi.name());
      Value *v = g.addInput(vi.name(), std::move(t));
      v->doc = vi.doc_string();
      scope.names[vi.name()] = v;
    }
    LLMOPT_ASSIGN_OR_RETURN(std::vector<int> order, nodeOrder(gp, scope));
    for (int idx : order)
      LLMOPT_RETURN_IF_ERROR(node(gp.node(idx), g, scope));
    for (const auto &vi : gp.value_info()) {
      Value *v = scope.lookup(vi.name());
      if (!v || v->graph() != &g)
        continue; // value_info for a name that no longer exists: dropped, as ORT does
      LLMOPT_ASSIGN_OR_RETURN(Type t, convertType(vi.type(), source_ + ": value_info '" + vi.name() + "'"));
      if (!v->isConstant())
        v->setType(std::move(t));
      v->hadValueInfo = true;
      v->doc = vi.doc_string();
    }
    for (const auto &vi : gp.output()) {
      Value *v = scope.lookup(vi.name());
      if (!v)
        return errorf("{}: graph '{}': output '{}' is not produced by any node, input or initializer",
                      source_, gp.name(), vi.name());
      LLMOPT_ASSIGN_OR_RETURN(Type t, convertType(vi.type(), source_ + ": output '" + vi.name() + "'"));
      if (t.kind != Type::Kind::Unknown && !v->isConstant())
        v->setType(std::move(t));
      if (!vi.doc_string().empty())
        v->doc = vi.doc_string();
      g.addOutput(v);
    }
    return Status::ok();
  }

  /// Names a node (or its subgraphs, transitively) reads.
  static void readNames(const onnx::NodeProto &n, std::vector<std::string> &out) {
    for (const auto &in : n.input())
      if (!in.empty())
        out.push_back(in);
    for (const auto &a : n.attribute()) {
      auto scanGraph = [&](const onnx::GraphProto &g) {
        for (const auto &inner : g.node())
          readNames(inner, out);
        for (const auto &o : g.output())
          out.push_back(o.name());
      };
      if (a.has_g())
        scanGraph(a.g());
      for (const auto &g : a.graphs())
        scanGraph(g);
    }
  }

  /// File order when it is topological (the ONNX rule); otherwise a stable
  /// topological order, or an error naming a node on a cycle.
  Expected<std::vector<int>> nodeOrder(const onnx::GraphProto &gp, const Scope &scope) {
    const int n = gp.node_size();
    std::unordered_map<std::string, int> producer;
    for (int i = 0; i < n; ++i)
      for (const auto &o : gp.node(i).output())
        if (!o.empty() && !producer.emplace(o, i).second)
          return errorf("{}: graph '{}': value '{}' is produced by two nodes ('{}' and '{}')",
                        source_, gp.name(), o, gp.node(producer[o]).name(), gp.node(i).name());
    std::vector<std::vector<int>> deps(static_cast<size_t>(n));
    bool sorted = true;
    std::vector<std::string> reads;
    for (int i = 0; i < n; ++i) {
      reads.clear();
      readNames(gp.node(i), reads);
      for (const auto &r : reads) {
        auto it = producer.find(r);
        if (it == producer.end())
          continue;
        deps[static_cast<size_t>(i)].push_back(it->second);
        if (it->second >= i)
          sorted = false;
      }
    }
    std::vector<int> order;
    if (sorted) {
      for (int i = 0; i < n; ++i)
        order.push_back(i);
      return order;
    }
    // Depth-first with colours: 1 = on the stack (a back edge means a cycle), 2 = done.
    std::vector<int> colour(static_cast<size_t>(n), 0);
    std::function<Status(int)> visit = [&](int i) -> Status {
      colour[static_cast<size_t>(i)] = 1;
      for (int d : deps[static_cast<size_t>(i)]) {
        if (colour[static_cast<size_t>(d)] == 1)
          return errorf("{}: graph '{}' has a cycle through node '{}' ({})", source_, gp.name(),
                        gp.node(d).name(), gp.node(d).op_type());
        if (colour[static_cast<size_t>(d)] == 0)
          LLMOPT_RETURN_IF_ERROR(visit(d));
      }
      colour[static_cast<size_t>(i)] = 2;
      order.push_back(i);
      return Status::ok();
    };
    for (int i = 0; i < n; ++i)
      if (colour[static_cast<size_t>(i)] == 0)
        LLMOPT_RETURN_IF_ERROR(visit(i));
    return order;
  }

  Status node(const onnx::NodeProto &np, Graph &g, Scope &scope) {
    auto where = [&] {
      return fmt::format("{}: node '{}' ({})", source_, np.name(), np.op_type());
    };
    if (np.op_type().empty())
      return errorf("{} has no op_type", where());
    std::vector<Value *> ins;
    for (const auto &in : np.input()) {
      if (in.empty()) {
        ins.push_back(nullptr);
        continue;
      }
      Value *v = scope.lookup(in);
      if (!v)
        return errorf("{}: input '{}' is not defined by any node, input or initializer", where(), in);
      ins.push_back(v);
    }
    Node *n = g.addNode(np.domain(), np.op_type(), ins, 0, np.name());
    n->doc = np.doc_string();
    for (const auto &out : np.output()) {
      if (!out.empty() && scope.lookup(out))
        return errorf("{}: output '{}' redefines an existing value", where(), out);
      Value *v = n->addOutput(out);
      if (!out.empty())
        scope.names[out] = v;
    }
    std::unordered_set<std::string> seen;
    for (const auto &ap : np.attribute()) {
      if (!seen.insert(ap.name()).second)
        return errorf("{}: attribute '{}' appears twice", where(), ap.name());
      LLMOPT_ASSIGN_OR_RETURN(Attribute a, attribute(ap, n, scope, where()));
      n->setAttr(std::move(a));
    }
    return Status::ok();
  }

  Expected<Attribute> attribute(const onnx::AttributeProto &ap, Node *n, Scope &scope,
                                const std::string &where) {
    using AP = onnx::AttributeProto;
    Attribute a;
    a.name = ap.name();
    a.doc = ap.doc_string();
    a.refAttrName = ap.ref_attr_name();
    AP::AttributeType t = ap.type();
    if (t == AP::UNDEFINED) { // IR < 2 models: infer the kind from the field set
      t = ap.has_f() ? AP::FLOAT : ap.has_i() ? AP::INT : ap.has_s() ? AP::STRING
        : ap.has_t() ? AP::TENSOR : ap.has_g() ? AP::GRAPH : ap.floats_size() ? AP::FLOATS
        : ap.ints_size() ? AP::INTS : ap.strings_size() ? AP::STRINGS
        : ap.tensors_size() ? AP::TENSORS : ap.graphs_size() ? AP::GRAPHS : AP::UNDEFINED;
      if (t == AP::UNDEFINED)
        return errorf("{}: attribute '{}' has no type and no value", where, ap.name());
    }
    auto subgraph = [&](const onnx::GraphProto &gp) -> Expected<std::unique_ptr<Graph>> {
      auto sg = std::make_unique<Graph>(gp.name());
      Scope inner;
      inner.parent = &scope;
      LLMOPT_RETURN_IF_ERROR(graph(gp, *sg, inner));
      return sg;
    };
    switch (t) {
    case AP::FLOAT: a.kind = Attribute::Kind::Float; a.f = ap.f(); break;
    case AP::INT: a.kind = Attribute::Kind::Int; a.i = ap.i(); break;
    case AP::STRING: a.kind = Attribute::Kind::String; a.s = ap.s(); break;
    case AP::FLOATS:
      a.kind = Attribute::Kind::Floats;
      a.floats.assign(ap.floats().begin(), ap.floats().end());
      break;
    case AP::INTS:
      a.kind = Attribute::Kind::Ints;
      a.ints.assign(ap.ints().begin(), ap.ints().end());
      break;
    case AP::STRINGS:
      a.kind = Attribute::Kind::Strings;
      a.strings.assign(ap.strings().begin(), ap.strings().end());
      break;
    case AP::TENSOR: {
      a.kind = Attribute::Kind::Tensor;
      LLMOPT_ASSIGN_OR_RETURN(Tensor v, tensor(ap.t()));
      a.t = std::make_shared<Tensor>(std::move(v));
      break;
    }
    case AP::TENSORS:
      a.kind = Attribute::Kind::Tensors;
      for (const auto &tp : ap.tensors()) {
        LLMOPT_ASSIGN_OR_RETURN(Tensor v, tensor(tp));
        a.tensors.push_back(std::make_shared<Tensor>(std::move(v)));
      }
      break;
    case AP::GRAPH: {
      a.kind = Attribute::Kind::Graph;
      LLMOPT_ASSIGN_OR_RETURN(a.g, subgraph(ap.g()));
      break;
    }
    case AP::GRAPHS:
      a.kind = Attribute::Kind::Graphs;
      for (const auto &gp : ap.graphs()) {
        LLMOPT_ASSIGN_OR_RETURN(auto sg, subgraph(gp));
        a.graphs.push_back(std::move(sg));
      }
      break;
    case AP::TYPE_PROTO:
      a.kind = Attribute::Kind::TypeProto;
      a.opaque.push_back(ap.tp().SerializeAsString());
      break;
    case AP::TYPE_PROTOS:
      a.kind = Attribute::Kind::TypeProtos;
      for (const auto &tp : ap.type_protos())
        a.opaque.push_back(tp.SerializeAsString());
      break;
    case AP::SPARSE_TENSOR:
      a.kind = Attribute::Kind::SparseTensor;
      a.opaque.push_back(ap.sparse_tensor().SerializeAsString());
      break;
    case AP::SPARSE_TENSORS:
      a.kind = Attribute::Kind::SparseTensors;
      for (const auto &st : ap.sparse_tensors())
        a.opaque.push_back(st.SerializeAsString());
      break;
    default:
      return errorf("{}: attribute '{}' has unknown type {}", where, ap.name(), static_cast<int>(t));
    }
    return a;
  }

  Expected<Tensor> tensor(const onnx::TensorProto &tp) {
    TensorSource src{source_, baseDir_, &mappings_};
    return convertTensor(tp, src);
  }

  std::string source_;
  std::string baseDir_;
  std::unordered_map<std::string, std::shared_ptr<const MappedFile>> mappings_;
};

} // namespace

Expected<std::unique_ptr<Model>> importOnnx(const onnx::ModelProto &proto,
                                            const std::string &baseDir,
                                            const std::string &sourceName,
                                            const ImportOptions &opts) {
  Importer imp(sourceName, baseDir);
  LLMOPT_ASSIGN_OR_RETURN(std::unique_ptr<Model> m, imp.run(proto));
  if (opts.verify)
    LLMOPT_RETURN_IF_ERROR(verify(*m).withContext(sourceName));
  return m;
}

Expected<std::unique_ptr<Model>> importOnnxFile(const std::string &path,
                                                const ImportOptions &opts) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    return errorf("{}: no such file", path);
  if (fs::is_directory(path, ec))
    return errorf("{}: is a directory, expected an .onnx file", path);
  LLMOPT_ASSIGN_OR_RETURN(auto file, MappedFile::open(path));
  std::string base = fs::absolute(fs::path(path)).parent_path().string();
  return importOnnxBytes(file->data(), file->size(), base, path, opts);
}

Expected<std::unique_ptr<Model>> importOnnxBytes(const void *data, size_t size,
                                                 const std::string &baseDir,
                                                 const std::string &sourceName,
                                                 const ImportOptions &opts) {
  if (size > static_cast<size_t>(INT_MAX))
    return errorf("{}: {} bytes; a protobuf file is at most 2 GiB (store weights as external data)",
                  sourceName, size);
  if (size == 0)
    return errorf("{}: file is empty, expected an ONNX ModelProto", sourceName);
  onnx::ModelProto proto;
  google::protobuf::io::ArrayInputStream raw(data, static_cast<int>(size));
  google::protobuf::io::CodedInputStream coded(&raw);
  coded.SetTotalBytesLimit(INT_MAX);
  if (!proto.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage())
    return errorf("{}: not a valid ONNX protobuf (truncated or corrupt file)", sourceName);
  return importOnnx(proto, baseDir, sourceName, opts);
}

Expected<std::unique_ptr<Model>> importOnnxText(const std::string &text,
                                                const ImportOptions &opts) {
  onnx::ModelProto proto;
  auto st = onnx::OnnxParser::Parse(proto, text.c_str());
  if (!st.IsOK())
    return errorf("<onnx text>: {}", st.ErrorMessage());
  return importOnnx(proto, ".", "<onnx text>", opts);
}

} // namespace llmopt
