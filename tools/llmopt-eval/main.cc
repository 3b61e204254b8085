// llmopt-eval: measures a model's quality on real text on the reference
// interpreter: perplexity of a decoder (optionally KL / top-1 / logit error
// against the original model) and sentence-embedding agreement of an encoder
// against the original.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/interp/Interpreter.h"
#include "frontend/ModelLoader.h"
#include "frontend/tokenizer/Tokenizer.h"
#include "ir/Progress.h"
#include "tools/llmopt-eval/Metrics.h"

namespace llmopt {
namespace {

namespace fs = std::filesystem;

const char *kUsage = "usage: llmopt-eval MODEL [MODEL...] --ppl TEXT --tokenizer T [--context N] [--stride "
                     "N]\n"
                     "                   [--max-tokens N] [--bos] [--reference ORIG] [--json] "
                     "[--threads N] [--quiet]\n"
                     "       llmopt-eval MODEL --embed TEXT --tokenizer T [--max-lines N] "
                     "[--reference ORIG]\n"
                     "                   [--json] [--threads N]\n\n"
                     "Evaluates MODEL (.onnx, .llir, .onnxtxt) on llmopt's reference "
                     "interpreter.\n"
                     "With --ppl, further MODELs are scored on the same windows in lockstep (the\n"
                     "reference runs once per window); --json lists them under \"more\".\n"
                     "  --ppl TEXT       perplexity of a decoder (input input_ids, output "
                     "logits) on TEXT,\n"
                     "                   tokenized whole without special tokens\n"
                     "  --context N      tokens per forward pass (default 512)\n"
                     "  --stride N       tokens between window starts (default: --context); "
                     "with stride <\n"
                     "                   context each window scores only the tokens not scored "
                     "before\n"
                     "  --max-tokens N   use only the first N tokens of TEXT\n"
                     "  --bos            prepend the tokenizer's BOS token (off: "
                     "scripts/baselines.py adds none)\n"
                     "  --embed TEXT     sentence embeddings of an encoder, one sentence per "
                     "line of TEXT\n"
                     "                   (output sentence_embedding, else mean-pooled "
                     "last_hidden_state)\n"
                     "  --max-lines N    use only the first N lines of TEXT\n"
                     "  --tokenizer T    Hugging Face tokenizer.json\n"
                     "  --reference ORIG also run ORIG on the same inputs: mean KL(P_ref || "
                     "P_model) in nats,\n"
                     "                   top-1 agreement, max |logit diff| and ORIG's "
                     "perplexity (--ppl);\n"
                     "                   mean cosine and nearest-neighbour agreement (--embed)\n"
                     "  --json           one JSON object with every figure and setting on "
                     "stdout\n"
                     "  --threads N      interpreter threads (default: all cores)\n"
                     "  --quiet, -q      no progress on stderr (a bar on a terminal, plain "
                     "lines otherwise)\n\n"
                     "Windows: only full windows of --context tokens are scored (the shorter "
                     "tail is dropped,\n"
                     "unless the text is shorter than one window); a window's first token is "
                     "context only.\n"
                     "exit status: 0 ok, 1 bad input (file, option, model), 2 internal error\n";

struct Options {
  std::string model, reference, tokenizer, pplText, embedText;
  std::vector<std::string> more; ///< further models scored in lockstep (--ppl)
  int64_t context = 512, stride = 0, maxTokens = 0, maxLines = 0;
  bool bos = false, json = false;
  int threads = 0;
};

Expected<int64_t> integer(const std::string &flag, const std::string &v, int64_t min) {
  try {
    size_t used = 0;
    long long d = std::stoll(v, &used);
    if (used == v.size() && d >= min)
      return static_cast<int64_t>(d);
  } catch (const std::exception &) {
  }
  return errorf("{} {}: expected an integer >= {}", flag, v, min);
}

Expected<Options> parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> Expected<std::string> {
      if (i + 1 >= argc)
        return errorf("{} needs a value", a);
      return std::string(argv[++i]);
    };
    auto intValue = [&](int64_t min) -> Expected<int64_t> {
      LLMOPT_ASSIGN_OR_RETURN(std::string v, value());
      return integer(a, v, min);
    };
    if (a.rfind("--", 0) != 0) {
      (o.model.empty() ? o.model : o.more.emplace_back()) = a;
    } else if (a == "--ppl") {
      LLMOPT_ASSIGN_OR_RETURN(o.pplText, value());
    } else if (a == "--embed") {
      LLMOPT_ASSIGN_OR_RETURN(o.embedText, value());
    } else if (a == "--tokenizer") {
      LLMOPT_ASSIGN_OR_RETURN(o.tokenizer, value());
    } else if (a == "--reference") {
      LLMOPT_ASSIGN_OR_RETURN(o.reference, value());
    } else if (a == "--context") {
      LLMOPT_ASSIGN_OR_RETURN(o.context, intValue(2));
    } else if (a == "--stride") {
      LLMOPT_ASSIGN_OR_RETURN(o.stride, intValue(1));
    } else if (a == "--max-tokens") {
      LLMOPT_ASSIGN_OR_RETURN(o.maxTokens, intValue(2));
    } else if (a == "--max-lines") {
      LLMOPT_ASSIGN_OR_RETURN(o.maxLines, intValue(1));
    } else if (a == "--threads") {
      LLMOPT_ASSIGN_OR_RETURN(int64_t t, intValue(0));
      o.threads = static_cast<int>(t);
    } else if (a == "--bos") {
      o.bos = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--quiet" || a == "-q") {
      setVerbosity(Verbosity::Quiet);
    } else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      return errorf("unknown option '{}'; see llmopt-eval --help", a);
    }
  }
  if (o.model.empty())
    return errorf("no model given; see llmopt-eval --help");
  if (o.pplText.empty() == o.embedText.empty())
    return errorf("give exactly one of --ppl TEXT or --embed TEXT");
  if (o.tokenizer.empty())
    return errorf("--tokenizer tokenizer.json is required");
  if (!o.more.empty() && o.pplText.empty())
    return errorf("several models are scored together with --ppl only; --embed takes one");
  if (o.stride == 0)
    o.stride = o.context;
  if (o.stride > o.context)
    return errorf("--stride {} is larger than --context {}", o.stride, o.context);
  for (const std::string *f : {&o.model, &o.reference, &o.tokenizer, &o.pplText, &o.embedText})
    if (!f->empty() && !fs::is_regular_file(*f))
      return errorf("{}: no such file", *f);
  for (const std::string &f : o.more)
    if (!fs::is_regular_file(f))
      return errorf("{}: no such file", f);
  return o;
}

Expected<std::string> readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errorf("{}: cannot open", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The shared progress bar (ir/Progress.h) with the token rate as its detail.
class TokenProgress {
public:
  TokenProgress(std::string what, int64_t total) : bar_(std::move(what), total, "") {}
  /// `done` units finished, `tokens` processed so far.
  void update(int64_t done, int64_t tokens) {
    const double secs = bar_.seconds();
    bar_.update(done, fmt::format("{:.0f} tok/s", secs > 0 ? static_cast<double>(tokens) / secs : 0.0));
  }
  double seconds() const { return bar_.seconds(); }

private:
  Progress bar_;
};

/// A loaded graph with the positions of the inputs and outputs llmopt-eval
/// uses.
struct Evaluated {
  std::string path;
  std::unique_ptr<Model> model;
  const Graph &graph() const { return model->graph(); }
};

Expected<Evaluated> load(const std::string &path) {
  LLMOPT_ASSIGN_OR_RETURN(auto m, loadModel(path));
  return Evaluated{path, std::move(m)};
}

/// The index of the graph output called `name`, or -1.
int64_t outputIndex(const Graph &g, std::string_view name) {
  for (size_t i = 0; i < g.outputs().size(); ++i)
    if (g.outputs()[i]->name() == name)
      return static_cast<int64_t>(i);
  return -1;
}

std::string outputNames(const Graph &g) {
  std::string s;
  for (const Value *v : g.outputs())
    s += (s.empty() ? "" : ", ") + v->name();
  return s;
}

/// Graph inputs for one sequence of `ids` ([1, n]): input_ids, attention_mask
/// (ones), position_ids (0..n-1), token_type_ids (zeros); any other input is an
/// error.
Expected<std::vector<Tensor>> makeInputs(const Evaluated &e, std::span<const int64_t> ids) {
  std::vector<Tensor> out;
  int64_t n = static_cast<int64_t>(ids.size());
  for (const Value *in : e.graph().inputs()) {
    std::vector<int64_t> v;
    const std::string &name = in->name();
    if (name == "input_ids")
      v.assign(ids.begin(), ids.end());
    else if (name == "attention_mask")
      v.assign(n, 1);
    else if (name == "position_ids")
      for (int64_t i = 0; i < n; ++i)
        v.push_back(i);
    else if (name == "token_type_ids")
      v.assign(n, 0);
    else if (in->isConstant())
      break; // An overridable initializer: it and later ones keep their values.
    else
      return errorf("{}: input '{}' is not one llmopt-eval can feed "
                    "(input_ids, attention_mask, "
                    "position_ids, token_type_ids)",
                    e.path, name);
    DType dt = in->type().elem;
    if (dt == DType::I32) {
      std::vector<int32_t> v32(v.begin(), v.end());
      out.push_back(Tensor::fromVector(DType::I32, {1, n}, v32));
    } else if (dt == DType::I64 || dt == DType::Undefined) {
      out.push_back(Tensor::fromVector(DType::I64, {1, n}, v));
    } else {
      return errorf("{}: input '{}' has type {}, expected int64 or int32", e.path, name,
                    toString(in->type()));
    }
  }
  return out;
}

/// Runs `e` on `ids` and returns output `index` as float.
Expected<Tensor> forward(const Evaluated &e, std::span<const int64_t> ids, int64_t index,
                         int threads) {
  LLMOPT_ASSIGN_OR_RETURN(std::vector<Tensor> inputs, makeInputs(e, ids));
  interp::RunOptions ro;
  ro.threads = threads;
  auto outs = interp::run(e.graph(), inputs, ro);
  if (!outs)
    return outs.status().withContext(e.path);
  Tensor t = std::move((*outs)[index]);
  if (t.dtype() != DType::F32) {
    std::vector<float> f = t.toFloats();
    t = Tensor::fromVector(DType::F32, t.shape(), f);
  }
  return t;
}

nlohmann::json settings(const Options &o, const char *mode) {
  nlohmann::json j;
  j["mode"] = mode;
  j["model"] = o.model;
  j["reference"] = o.reference.empty() ? nlohmann::json() : nlohmann::json(o.reference);
  j["tokenizer"] = o.tokenizer;
  j["text"] = mode == std::string("ppl") ? o.pplText : o.embedText;
  return j;
}

/// The token ids --ppl scores: the whole text (trailing newlines stripped, as
/// scripts/baselines.py does), no special tokens, BOS first with --bos, cut to --max-tokens.
/// `textTokens` receives the count before the cut.
Expected<std::vector<int64_t>> pplTokens(const Options &o, const tok::Tokenizer &tk,
                                         int64_t &textTokens) {
  LLMOPT_ASSIGN_OR_RETURN(std::string text, readText(o.pplText));
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  std::vector<int32_t> ids32 = tk.encode(text, /*addSpecialTokens=*/false);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  if (o.bos) {
    if (!tk.specialTokens().bos)
      return errorf("{}: --bos given but the tokenizer defines no BOS token", o.tokenizer);
    ids.insert(ids.begin(), *tk.specialTokens().bos);
  }
  textTokens = static_cast<int64_t>(ids.size());
  if (o.maxTokens && textTokens > o.maxTokens)
    ids.resize(o.maxTokens);
  return ids;
}

/// Loads a decoder and finds its `logits` output.
Expected<std::pair<Evaluated, int64_t>> loadDecoder(const std::string &path) {
  LLMOPT_ASSIGN_OR_RETURN(Evaluated e, load(path));
  int64_t i = outputIndex(e.graph(), "logits");
  if (i < 0)
    return errorf("{}: no output named 'logits' (outputs: {})", path, outputNames(e.graph()));
  return std::pair<Evaluated, int64_t>(std::move(e), i);
}

Expected<nlohmann::json> runPpl(const Options &o, const tok::Tokenizer &tk, int threads) {
  int64_t textTokens = 0;
  LLMOPT_ASSIGN_OR_RETURN(std::vector<int64_t> ids, pplTokens(o, tk, textTokens));
  std::vector<eval::Window> windows =
      eval::planWindows(static_cast<int64_t>(ids.size()), o.context, o.stride);
  if (windows.empty())
    return errorf("{}: {} tokens, too few to score", o.pplText, ids.size());
  std::vector<std::string> paths{o.model};
  paths.insert(paths.end(), o.more.begin(), o.more.end());
  std::vector<std::pair<Evaluated, int64_t>> models;
  for (const std::string &p : paths) {
    LLMOPT_ASSIGN_OR_RETURN(auto loaded, loadDecoder(p));
    models.push_back(std::move(loaded));
  }
  std::optional<std::pair<Evaluated, int64_t>> refLoaded;
  if (!o.reference.empty()) {
    LLMOPT_ASSIGN_OR_RETURN(refLoaded, loadDecoder(o.reference));
  }
  const Evaluated *ref = refLoaded ? &refLoaded->first : nullptr;
  int64_t ri = refLoaded ? refLoaded->second : -1;

  std::vector<eval::LogitStats> stats(models.size());
  TokenProgress bar("ppl", static_cast<int64_t>(windows.size()));
  int64_t tokensRun = 0;
  for (size_t wi = 0; wi < windows.size(); ++wi) {
    const eval::Window &w = windows[wi];
    std::span<const int64_t> win(ids.data() + w.begin, w.length);
    Tensor refLogits;
    if (ref) {
      LLMOPT_ASSIGN_OR_RETURN(refLogits, forward(*ref, win, ri, threads));
    }
    for (size_t mi = 0; mi < models.size(); ++mi) {
      const auto &[model, oi] = models[mi];
      LLMOPT_ASSIGN_OR_RETURN(Tensor logits, forward(model, win, oi, threads));
      const auto &shape = logits.shape();
      if (shape.size() != 3 || shape[0] != 1 || shape[1] != w.length)
        return errorf("{}: logits have shape {}, expected [1, {}, vocab]", paths[mi],
                      toString(logits.type()), w.length);
      int64_t vocab = shape[2];
      if (int64_t top = *std::max_element(win.begin(), win.end()); top >= vocab)
        return errorf("{}: token id {} is outside the model's vocabulary of {}", o.tokenizer, top,
                      vocab);
      if (ref && refLogits.shape() != shape)
        return errorf("{}: logits have shape {}, but {} gives {}", o.reference,
                      toString(refLogits.type()), paths[mi], toString(logits.type()));
      stats[mi].merge(eval::scoreWindow(logits.view<float>(),
                                        ref ? refLogits.view<float>() : std::span<const float>(),
                                        win, vocab, w, threads));
    }
    tokensRun += w.length;
    bar.update(static_cast<int64_t>(wi + 1), tokensRun);
  }

  auto figures = [&](nlohmann::json &j, const eval::LogitStats &st) {
    j["tokens_scored"] = st.count;
    j["nll_mean"] = st.nll / st.count;
    j["ppl"] = st.perplexity();
    if (ref) {
      j["ref_nll_mean"] = st.refNll / st.count;
      j["ref_ppl"] = st.refPerplexity();
      j["kl_mean"] = st.kl / st.count;
      j["top1"] = static_cast<double>(st.top1Agree) / st.count;
      j["max_abs_logit_diff"] = st.maxAbsDiff;
    }
  };
  nlohmann::json j = settings(o, "ppl");
  j["context"] = o.context;
  j["stride"] = o.stride;
  j["max_tokens"] = o.maxTokens ? nlohmann::json(o.maxTokens) : nlohmann::json();
  j["bos"] = o.bos;
  j["text_tokens"] = textTokens;
  j["windows"] = windows.size();
  figures(j, stats[0]);
  if (models.size() > 1) {
    j["more"] = nlohmann::json::array();
    for (size_t mi = 1; mi < models.size(); ++mi) {
      nlohmann::json m;
      m["model"] = paths[mi];
      figures(m, stats[mi]);
      j["more"].push_back(std::move(m));
    }
  }
  j["seconds"] = bar.seconds();
  j["tokens_per_second"] = tokensRun * static_cast<double>(models.size()) / std::max(bar.seconds(), 1e-9);
  return j;
}

/// One embedding per sentence: sentence_embedding, or last_hidden_state
/// mean-pooled.
Expected<std::vector<float>> embed(const Evaluated &e, std::span<const int64_t> ids, int threads) {
  int64_t si = outputIndex(e.graph(), "sentence_embedding");
  int64_t hi = outputIndex(e.graph(), "last_hidden_state");
  if (si < 0 && hi < 0)
    return errorf("{}: no output named 'sentence_embedding' or "
                  "'last_hidden_state' (outputs: {})",
                  e.path, outputNames(e.graph()));
  LLMOPT_ASSIGN_OR_RETURN(Tensor t, forward(e, ids, si >= 0 ? si : hi, threads));
  auto v = t.view<float>();
  if (si >= 0)
    return std::vector<float>(v.begin(), v.end());
  if (t.rank() != 3 || t.shape()[0] != 1)
    return errorf("{}: last_hidden_state has shape {}, expected [1, seq, hidden]", e.path,
                  toString(t.type()));
  int64_t seq = t.shape()[1], hidden = t.shape()[2];
  std::vector<float> mean(hidden, 0.f);
  for (int64_t hIdx = 0; hIdx < hidden; ++hIdx) {
    double s = 0;
    for (int64_t p = 0; p < seq; ++p)
      s += v[p * hidden + hIdx];
    mean[hIdx] = static_cast<float>(s / seq);
  }
  return mean;
}

Expected<nlohmann::json> runEmbed(const Options &o, const tok::Tokenizer &tk, int threads) {
  LLMOPT_ASSIGN_OR_RETURN(std::string text, readText(o.embedText));
  std::vector<std::string> lines; // As Python's splitlines() for \n and \r\n.
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty() && l.back() == '\r')
      l.pop_back();
    lines.push_back(l);
    if (o.maxLines && static_cast<int64_t>(lines.size()) == o.maxLines)
      break;
  }
  if (lines.empty())
    return errorf("{}: no lines to embed", o.embedText);
  LLMOPT_ASSIGN_OR_RETURN(Evaluated model, load(o.model));
  std::optional<Evaluated> ref;
  if (!o.reference.empty()) {
    LLMOPT_ASSIGN_OR_RETURN(ref, load(o.reference));
  }
  std::vector<std::vector<float>> mine, theirs;
  TokenProgress bar("embed", static_cast<int64_t>(lines.size()));
  int64_t tokens = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<int32_t> ids32 = tk.encode(lines[i], /*addSpecialTokens=*/true);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    LLMOPT_ASSIGN_OR_RETURN(std::vector<float> e, embed(model, ids, threads));
    mine.push_back(std::move(e));
    if (ref) {
      LLMOPT_ASSIGN_OR_RETURN(std::vector<float> r, embed(*ref, ids, threads));
      if (r.size() != mine.back().size())
        return errorf("{}: embeddings have {} values, but {} gives {}", o.reference, r.size(),
                      o.model, mine.back().size());
      theirs.push_back(std::move(r));
    }
    tokens += static_cast<int64_t>(ids.size());
    bar.update(static_cast<int64_t>(i + 1), tokens);
  }
  nlohmann::json j = settings(o, "embed");
  j["max_lines"] = o.maxLines ? nlohmann::json(o.maxLines) : nlohmann::json();
  j["lines"] = lines.size();
  j["tokens"] = tokens;
  j["dim"] = mine.front().size();
  if (ref) {
    eval::EmbedStats s = eval::compareEmbeddings(mine, theirs);
    j["cos_mean"] = s.cosMean;
    j["cos_min"] = s.cosMin;
    j["nn_agree"] = s.nnAgree;
  }
  j["seconds"] = bar.seconds();
  return j;
}

/// The human-readable summary of a result.
void printText(const nlohmann::json &j) {
  auto num = [](const nlohmann::json &o, const char *k, const char *label,
                const char *spec = "{:.6g}") {
    if (o.contains(k) && !o[k].is_null())
      std::cout << fmt::format("{:<22}", label)
                << fmt::format(fmt::runtime(spec), o[k].get<double>()) << "\n";
  };
  if (j["mode"] == "ppl") {
    std::vector<nlohmann::json> all{j};
    if (j.contains("more"))
      for (const auto &m : j["more"])
        all.push_back(m);
    for (const nlohmann::json &m : all) {
      std::cout << fmt::format("{}: {} tokens scored in {} windows (context {}, stride {})\n",
                               m["model"].get<std::string>(), m["tokens_scored"].get<int64_t>(),
                               j["windows"].get<int64_t>(), j["context"].get<int64_t>(),
                               j["stride"].get<int64_t>());
      num(m, "ppl", "perplexity:", "{:.6f}");
      num(m, "ref_ppl", "reference perplexity:", "{:.6f}");
      num(m, "kl_mean", "mean KL(ref||model):");
      num(m, "top1", "top-1 agreement:", "{:.6f}");
      num(m, "max_abs_logit_diff", "max |logit diff|:");
    }
  } else {
    std::cout << fmt::format("{}: {} lines, embedding dim {}\n", j["model"].get<std::string>(),
                             j["lines"].get<int64_t>(), j["dim"].get<int64_t>());
    num(j, "cos_mean", "mean cosine:", "{:.8f}");
    num(j, "cos_min", "min cosine:", "{:.8f}");
    num(j, "nn_agree", "NN agreement:", "{:.6f}");
  }
  num(j, "seconds", "seconds:", "{:.2f}");
}

int run(const Options &o) {
  int threads = o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency());
  auto tk = tok::loadTokenizer(o.tokenizer);
  if (!tk)
    throw tk.status();
  auto result = o.pplText.empty() ? runEmbed(o, **tk, threads) : runPpl(o, **tk, threads);
  if (!result)
    throw result.status();
  if (o.json)
    std::cout << result->dump(2) << "\n";
  else
    printText(*result);
  return 0;
}

} // namespace
} // namespace llmopt

int main(int argc, char **argv) {
  try {
    auto opts = llmopt::parse(argc, argv);
    if (!opts)
      throw opts.status();
    return llmopt::run(*opts);
  } catch (const llmopt::Status &st) {
    std::cerr << "llmopt-eval: error: " << st.message() << "\n";
    return st.kind() == llmopt::ErrorKind::Internal ? 2 : 1;
  } catch (const std::exception &e) {
    std::cerr << "llmopt-eval: internal error: " << e.what() << "\n";
    return 2;
  }
}
