// ONNX writer: names unnamed values, converts types/tensors/attributes, writes the
// model (and external data) through temporary files renamed into place.
#include "backend/onnx/OnnxExporter.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fcntl.h>
#include <sys/stat.h>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <onnx/onnx_pb.h>

#include "backend/onnx/FusionLowering.h"
#include "backend/onnx/QuantLowering.h"

namespace llmopt {
namespace {

namespace fs = std::filesystem;

void typeToProto(const Type &t, onnx::TypeProto *tp) {
  auto shape = [&](onnx::TensorShapeProto *sp) {
    for (const Dim &d : *t.dims) {
      auto *dp = sp->add_dim();
      if (d.kind == Dim::Kind::Static)
        dp->set_dim_value(d.value);
      else if (d.kind == Dim::Kind::Symbolic)
        dp->set_dim_param(d.symbol);
    }
  };
  switch (t.kind) {
  case Type::Kind::Unknown: break;
  case Type::Kind::Tensor: {
    auto *tt = tp->mutable_tensor_type();
    tt->set_elem_type(static_cast<int32_t>(t.elem));
    if (t.dims)
      shape(tt->mutable_shape());
    break;
  }
  case Type::Kind::SparseTensor: {
    auto *tt = tp->mutable_sparse_tensor_type();
    tt->set_elem_type(static_cast<int32_t>(t.elem));
    if (t.dims)
      shape(tt->mutable_shape());
    break;
  }
  case Type::Kind::Sequence: {
    auto *st = tp->mutable_sequence_type();
    if (t.inner)
      typeToProto(*t.inner, st->mutable_elem_type());
    break;
  }
  case Type::Kind::Optional: {
    auto *ot = tp->mutable_optional_type();
    if (t.inner)
      typeToProto(*t.inner, ot->mutable_elem_type());
    break;
  }
  case Type::Kind::Map: {
    auto *mt = tp->mutable_map_type();
    mt->set_key_type(static_cast<int32_t>(t.key));
    if (t.inner)
      typeToProto(*t.inner, mt->mutable_value_type());
    break;
  }
  }
}

/// Appends large tensors to the external data file as the proto is built.
struct ExternalSink {
  FILE *file = nullptr;
  std::string location; ///< Relative name written into the protos.
  size_t threshold = 0;
  size_t offset = 0;
  Status status;
};

const ExportOptions &defaultExportOptions() {
  static const ExportOptions o;
  return o;
}

class Exporter {
public:
  explicit Exporter(ExternalSink *sink, const ExportOptions &opts = defaultExportOptions())
      : sink_(sink), opts_(opts) {}

  Expected<onnx::ModelProto> run(const Model &m) {
    collectNames(m.graph());
    onnx::ModelProto p;
    p.set_ir_version(m.irVersion);
    for (const auto &[domain, version] : m.opsets) {
      if (domain == "llmopt") // llmopt's own ops are always written as standard ones
        continue;
      auto *op = p.add_opset_import();
      op->set_domain(domain);
      op->set_version(version);
    }
    if (!m.producerName.empty())
      p.set_producer_name(m.producerName);
    if (!m.producerVersion.empty())
      p.set_producer_version(m.producerVersion);
    if (!m.domain.empty())
      p.set_domain(m.domain);
    if (m.modelVersion)
      p.set_model_version(m.modelVersion);
    if (!m.doc.empty())
      p.set_doc_string(m.doc);
    for (const auto &[k, v] : m.metadata) {
      auto *kv = p.add_metadata_props();
      kv->set_key(k);
      kv->set_value(v);
    }
    for (const auto &bytes : m.functions)
      if (!p.add_functions()->ParseFromString(bytes))
        return internalErrorf("model-local function bytes do not parse");
    for (const auto &bytes : m.trainingInfo)
      if (!p.add_training_info()->ParseFromString(bytes))
        return internalErrorf("training_info bytes do not parse");
    if (opts_.target != "ort" && opts_.target != "onnx")
      return errorf("unknown export target '{}'; accepted: ort, onnx", opts_.target);
    model_ = &m;
    LLMOPT_RETURN_IF_ERROR(graph(m.graph(), p.mutable_graph()));
    if (sink_)
      LLMOPT_RETURN_IF_ERROR(sink_->status);
    if (usedContrib_ && !m.opsets.count("com.microsoft")) {
      auto *op = p.add_opset_import();
      op->set_domain("com.microsoft");
      op->set_version(1);
    }
    return p;
  }

  /// One tensor, inline (raw_data / string_data).
  Status tensorToProto(const Tensor &t, const std::string &tname, onnx::TensorProto *tp) {
    return tensor(t, tname, tp);
  }

private:
  void collectNames(const Graph &g) {
    for (Value *v : g.values())
      if (!v->name().empty())
        used_.insert(v->name());
    for (const auto &n : g.nodes())
      for (Graph *sg : n->subgraphs())
        collectNames(*sg);
  }

  /// The value's name, or a fresh one for unnamed values that are referenced.
  const std::string &name(const Value *v) {
    auto it = names_.find(v);
    if (it != names_.end())
      return it->second;
    std::string n = v->name();
    if (n.empty()) {
      std::string base = v->producer() && !v->producer()->name().empty()
                             ? v->producer()->name() + "_out" + std::to_string(v->producerIndex())
                             : "llmopt_v";
      n = base;
      for (int k = 1; used_.count(n); ++k)
        n = base + "_" + std::to_string(k);
      used_.insert(n);
    }
    return names_.emplace(v, std::move(n)).first->second;
  }

  Status tensor(const Tensor &t, const std::string &tname, onnx::TensorProto *tp) {
    tp->set_name(tname);
    tp->set_data_type(static_cast<int32_t>(t.dtype()));
    for (int64_t d : t.shape())
      tp->add_dims(d);
    if (t.dtype() == DType::String) {
      for (const auto &s : t.stringData())
        tp->add_string_data(s);
      return Status::ok();
    }
    if (sink_ && sink_->file && t.nbytes() >= sink_->threshold) {
      // Align each tensor to 64 bytes so mmapped weights suit SIMD loads.
      size_t pad = (64 - sink_->offset % 64) % 64;
      static const char zeros[64] = {};
      if (pad && std::fwrite(zeros, 1, pad, sink_->file) != pad)
        return errorf("writing external data '{}': {}", sink_->location, std::strerror(errno));
      // In 16 MiB pieces, dropping a mapped tensor's pages behind the write, so that even
      // the largest tensor (an embedding table) never becomes resident as a whole.
      constexpr size_t kPiece = size_t(16) << 20;
      for (size_t done = 0; done < t.nbytes(); done += kPiece) {
        const size_t n = std::min(kPiece, t.nbytes() - done);
        if (std::fwrite(t.data() + done, 1, n, sink_->file) != n)
          return errorf("writing external data '{}': {}", sink_->location, std::strerror(errno));
        if (t.isMapped())
          t.mapping()->release(t.mappingOffset() + done, n);
      }
      sink_->offset += pad;
      tp->set_data_location(onnx::TensorProto::EXTERNAL);
      auto add = [&](const char *k, const std::string &v) {
        auto *kv = tp->add_external_data();
        kv->set_key(k);
        kv->set_value(v);
      };
      add("location", sink_->location);
      add("offset", std::to_string(sink_->offset));
      add("length", std::to_string(t.nbytes()));
      sink_->offset += t.nbytes();
      return Status::ok();
    }
    tp->set_raw_data(t.data(), t.nbytes());
    if (t.isMapped()) // copied into the proto: the mapped pages need not stay resident too
      t.mapping()->release(t.mappingOffset(), t.nbytes());
    return Status::ok();
  }

  Status constant(const Value *v, onnx::TensorProto *tp) {
    return tensor(*v->constant(), name(v), tp);
  }

  /// A name no value or initializer of the model uses yet.
  std::string fresh(const std::string &base) {
    std::string n = base;
    for (int k = 1; used_.count(n); ++k)
      n = base + "_" + std::to_string(k);
    used_.insert(n);
    return n;
  }

  /// Writes a node the quantization lowering made.
  Status emitted(onnxw::EmittedNode e, onnx::NodeProto *np) {
    np->set_op_type(e.opType);
    if (!e.domain.empty())
      np->set_domain(e.domain);
    if (!e.name.empty())
      np->set_name(e.name);
    for (const auto &in : e.inputs)
      np->add_input(in);
    for (const auto &out : e.outputs)
      np->add_output(out);
    for (const Attribute &a : e.attrs)
      LLMOPT_RETURN_IF_ERROR(attribute(a, np->add_attribute()));
    return Status::ok();
  }

  void valueInfo(const Value *v, onnx::ValueInfoProto *vi) {
    vi->set_name(name(v));
    if (!v->doc.empty())
      vi->set_doc_string(v->doc);
    if (v->type().kind != Type::Kind::Unknown)
      typeToProto(v->type(), vi->mutable_type());
  }

  Status graph(const Graph &g, onnx::GraphProto *gp) {
    gp->set_name(g.name());
    if (!g.doc.empty())
      gp->set_doc_string(g.doc);
    // Quantized constants are written by the lowering, in the form each consumer needs.
    onnxw::LoweringSink sink{
        [this](const Value *v) { return name(v); }, [this](const std::string &b) { return fresh(b); },
        [this, gp](const std::string &n, const Tensor &t) { return tensor(t, n, gp->add_initializer()); },
        [this, gp](onnxw::EmittedNode e) { return emitted(std::move(e), gp->add_node()); }};
    onnxw::QuantLowering lowering(*model_, g, opts_, sink);
    for (Value *c : g.constants()) {
      if (!c->type().quant)
        LLMOPT_RETURN_IF_ERROR(constant(c, gp->add_initializer()));
      else if (c->isGraphInput())
        return errorf("quantized constant '{}' is also a graph input (an overridable initializer); "
                      "it has no ONNX form", c->name());
    }
    for (Value *in : g.inputs())
      valueInfo(in, gp->add_input());
    onnxw::FusionLowering fusion(*model_, opts_, sink);
    for (const auto &n : g.nodes()) {
      LLMOPT_ASSIGN_OR_RETURN(bool lowered, lowering.lowerNode(*n));
      if (!lowered) {
        LLMOPT_ASSIGN_OR_RETURN(lowered, fusion.lowerNode(*n));
      }
      if (!lowered)
        LLMOPT_RETURN_IF_ERROR(node(*n, gp->add_node()));
    }
    LLMOPT_RETURN_IF_ERROR(lowering.lowerOutputs());
    usedContrib_ = usedContrib_ || lowering.usedContribOps();
    for (Value *out : g.outputs())
      valueInfo(out, gp->add_output());
    for (Value *v : g.values())
      if (v->hadValueInfo && !v->isGraphInput() && !v->isGraphOutput() && !v->isConstant())
        valueInfo(v, gp->add_value_info());
    return Status::ok();
  }

  Status node(const Node &n, onnx::NodeProto *np) {
    np->set_op_type(n.opType());
    if (!n.domain().empty())
      np->set_domain(n.domain());
    if (!n.name().empty())
      np->set_name(n.name());
    if (!n.doc.empty())
      np->set_doc_string(n.doc);
    for (Value *in : n.inputs())
      np->add_input(in ? name(in) : std::string());
    for (Value *out : n.outputs()) {
      const bool referenced = out->hasUses() || out->isGraphOutput() || !out->name().empty();
      np->add_output(referenced ? name(out) : std::string());
    }
    for (const Attribute &a : n.attributes())
      LLMOPT_RETURN_IF_ERROR(attribute(a, np->add_attribute()));
    return Status::ok();
  }

  Status attribute(const Attribute &a, onnx::AttributeProto *ap) {
    using AP = onnx::AttributeProto;
    ap->set_name(a.name);
    if (!a.doc.empty())
      ap->set_doc_string(a.doc);
    if (!a.refAttrName.empty())
      ap->set_ref_attr_name(a.refAttrName);
    auto parseInto = [&](auto *msg, const std::string &bytes) -> Status {
      if (!msg->ParseFromString(bytes))
        return internalErrorf("attribute '{}': opaque proto bytes do not parse", a.name);
      return Status::ok();
    };
    switch (a.kind) {
    case Attribute::Kind::Float: ap->set_type(AP::FLOAT); ap->set_f(a.f); break;
    case Attribute::Kind::Int: ap->set_type(AP::INT); ap->set_i(a.i); break;
    case Attribute::Kind::String: ap->set_type(AP::STRING); ap->set_s(a.s); break;
    case Attribute::Kind::Floats:
      ap->set_type(AP::FLOATS);
      for (float f : a.floats) ap->add_floats(f);
      break;
    case Attribute::Kind::Ints:
      ap->set_type(AP::INTS);
      for (int64_t i : a.ints) ap->add_ints(i);
      break;
    case Attribute::Kind::Strings:
      ap->set_type(AP::STRINGS);
      for (const auto &s : a.strings) ap->add_strings(s);
      break;
    case Attribute::Kind::Tensor:
      ap->set_type(AP::TENSOR);
      LLMOPT_RETURN_IF_ERROR(inlineTensor(*a.t, ap->mutable_t()));
      break;
    case Attribute::Kind::Tensors:
      ap->set_type(AP::TENSORS);
      for (const auto &t : a.tensors)
        LLMOPT_RETURN_IF_ERROR(inlineTensor(*t, ap->add_tensors()));
      break;
    case Attribute::Kind::Graph:
      ap->set_type(AP::GRAPH);
      LLMOPT_RETURN_IF_ERROR(graph(*a.g, ap->mutable_g()));
      break;
    case Attribute::Kind::Graphs:
      ap->set_type(AP::GRAPHS);
      for (const auto &g : a.graphs)
        LLMOPT_RETURN_IF_ERROR(graph(*g, ap->add_graphs()));
      break;
    case Attribute::Kind::TypeProto:
      ap->set_type(AP::TYPE_PROTO);
      LLMOPT_RETURN_IF_ERROR(parseInto(ap->mutable_tp(), a.opaque.at(0)));
      break;
    case Attribute::Kind::TypeProtos:
      ap->set_type(AP::TYPE_PROTOS);
      for (const auto &b : a.opaque)
        LLMOPT_RETURN_IF_ERROR(parseInto(ap->add_type_protos(), b));
      break;
    case Attribute::Kind::SparseTensor:
      ap->set_type(AP::SPARSE_TENSOR);
      LLMOPT_RETURN_IF_ERROR(parseInto(ap->mutable_sparse_tensor(), a.opaque.at(0)));
      break;
    case Attribute::Kind::SparseTensors:
      ap->set_type(AP::SPARSE_TENSORS);
      for (const auto &b : a.opaque)
        LLMOPT_RETURN_IF_ERROR(parseInto(ap->add_sparse_tensors(), b));
      break;
    }
    return Status::ok();
  }

  // Attribute tensors stay inline (ORT and the checker expect Constant values inline).
  Status inlineTensor(const Tensor &t, onnx::TensorProto *tp) {
    ExternalSink *saved = sink_;
    sink_ = nullptr;
    Status st = tensor(t, "", tp);
    sink_ = saved;
    tp->clear_name();
    return st;
  }

  ExternalSink *sink_;
  const ExportOptions &opts_;
  const Model *model_ = nullptr;
  bool usedContrib_ = false;
  std::unordered_set<std::string> used_;
  std::unordered_map<const Value *, std::string> names_;
};

size_t constantBytes(const Graph &g) {
  size_t total = 0;
  for (Value *c : g.constants())
    total += c->constant()->nbytes();
  for (const auto &n : g.nodes())
    for (Graph *sg : n->subgraphs())
      total += constantBytes(*sg);
  return total;
}

/// True when some constant aliases a mapped file: a model read from external data (or
/// whose quantized weights were spilled to disk), i.e. one meant to stream from disk.
bool anyMapped(const Graph &g) {
  for (Value *c : g.constants())
    if (c->constant()->isMapped())
      return true;
  for (const auto &n : g.nodes())
    for (Graph *sg : n->subgraphs())
      if (anyMapped(*sg))
        return true;
  return false;
}

/// A temporary file beside `target`, removed on destruction unless committed.
class TempFile {
public:
  explicit TempFile(const std::string &target) : target_(target) {
    std::string pattern = target + ".tmp.XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    fd_ = ::mkstemp(buf.data());
    if (fd_ >= 0) {
      path_ = buf.data();
      ::fchmod(fd_, 0644);
    }
  }
  ~TempFile() {
    if (fd_ >= 0)
      ::close(fd_);
    if (!path_.empty() && !committed_)
      ::unlink(path_.c_str());
  }
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  Status commit() {
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      fd_ = -1;
      return errorf("{}: cannot write: {}", target_, std::strerror(errno));
    }
    fd_ = -1;
    if (std::rename(path_.c_str(), target_.c_str()) != 0)
      return errorf("{}: cannot rename into place: {}", target_, std::strerror(errno));
    committed_ = true;
    return Status::ok();
  }

private:
  std::string target_, path_;
  int fd_ = -1;
  bool committed_ = false;
};

} // namespace

Expected<onnx::ModelProto> exportOnnx(const Model &m, const ExportOptions &opts) {
  Exporter e(nullptr, opts);
  return e.run(m);
}

Status saveTensorProto(const Tensor &t, const std::string &name, const std::string &path) {
  onnx::TensorProto tp;
  Exporter e(nullptr);
  LLMOPT_RETURN_IF_ERROR(e.tensorToProto(t, name, &tp));
  TempFile tmp(path);
  if (!tmp.ok())
    return errorf("{}: cannot create a temporary file: {}", path, std::strerror(errno));
  {
    google::protobuf::io::FileOutputStream out(tmp.fd());
    if (!tp.SerializeToZeroCopyStream(&out) || !out.Flush())
      return errorf("{}: cannot write: {}", path, std::strerror(out.GetErrno()));
  }
  return tmp.commit();
}

Status saveOnnx(const Model &m, const std::string &path, const ExportOptions &opts) {
  fs::path target(path);
  std::error_code ec;
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec))
    return errorf("{}: output directory '{}' does not exist", path, dir.string());
  // External data when asked, when the weights approach protobuf's 2 GiB limit, or when the
  // model streams from disk (its weights are mapped): then the writer streams them out too,
  // one tensor at a time, instead of holding a second copy of every weight in the proto.
  const bool external = opts.externalData ||
                        constantBytes(m.graph()) >= opts.autoExternalBytes || anyMapped(m.graph());
  ExternalSink sink;
  std::unique_ptr<TempFile> dataTmp;
  std::string dataPath;
  if (external) {
    sink.location = opts.externalFile.empty() ? target.filename().string() + ".data"
                                              : opts.externalFile;
    dataPath = (dir / sink.location).string();
    dataTmp = std::make_unique<TempFile>(dataPath);
    if (!dataTmp->ok())
      return errorf("{}: cannot create a temporary file: {}", dataPath, std::strerror(errno));
    sink.file = ::fdopen(::dup(dataTmp->fd()), "wb");
    sink.threshold = opts.externalThreshold;
  }
  Exporter e(external ? &sink : nullptr, opts);
  auto proto = e.run(m);
  if (sink.file && std::fclose(sink.file) != 0 && proto)
    return errorf("{}: cannot write: {}", dataPath, std::strerror(errno));
  if (!proto)
    return proto.status();
  if (proto->ByteSizeLong() > static_cast<size_t>(INT_MAX))
    return errorf("{}: the model proto would exceed 2 GiB; write weights as external data "
                  "(--external-data)",
                  path);
  TempFile tmp(path);
  if (!tmp.ok())
    return errorf("{}: cannot create a temporary file: {}", path, std::strerror(errno));
  {
    google::protobuf::io::FileOutputStream out(tmp.fd());
    if (!proto->SerializeToZeroCopyStream(&out) || !out.Flush())
      return errorf("{}: cannot write: {}", path, std::strerror(out.GetErrno()));
  }
  if (dataTmp)
    LLMOPT_RETURN_IF_ERROR(dataTmp->commit());
  return tmp.commit();
}

} // namespace llmopt
