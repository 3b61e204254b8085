// Pipeline execution with instrumentation, and the pipeline text parser.
#include "passes/PassManager.h"

#include <algorithm>
#include <cctype>
#include <iostream>

#include <fmt/ostream.h>

#include "ir/Printer.h"
#include "ir/Verifier.h"

namespace llmopt {

Expected<PreservedAnalyses> PassManager::run(Model &m, AnalysisManager &am) {
  bool changed = false;
  std::ostream &out = instr_ && instr_->out ? *instr_->out : std::cerr;
  for (auto &p : passes_) {
    auto start = std::chrono::steady_clock::now();
    auto pa = p->run(m, am);
    if (!pa)
      return pa.status();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    am.invalidate(*pa);
    changed |= !pa->areAllPreserved();
    if (!instr_)
      continue;
    const std::string pname(p->name());
    if (instr_->timePasses && !dynamic_cast<FixpointPass *>(p.get())) {
      auto it = std::find_if(instr_->timings.begin(), instr_->timings.end(),
                             [&](const auto &t) { return std::get<0>(t) == pname; });
      if (it == instr_->timings.end())
        instr_->timings.emplace_back(pname, secs, 1);
      else {
        std::get<1>(*it) += secs;
        std::get<2>(*it) += 1;
      }
    }
    if (instr_->verifyEach) {
      Status st = verify(m);
      if (!st)
        return internalErrorf("verifier failed after pass '{}': {}", pname, st.message());
    }
    if (instr_->printAfterAll || instr_->printAfter.count(pname)) {
      PrintOptions po;
      out << "; *** IR after " << p->pipelineText() << " ***\n" << printModel(m, po);
    }
  }
  return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
}

std::string PassManager::pipelineText() const {
  std::string s;
  for (const auto &p : passes_)
    s += (s.empty() ? "" : ",") + p->pipelineText();
  return s;
}

Expected<PreservedAnalyses> FixpointPass::run(Model &m, AnalysisManager &am) {
  bool changed = false;
  for (int round = 0; round < maxRounds_; ++round) {
    LLMOPT_ASSIGN_OR_RETURN(PreservedAnalyses pa, inner_->run(m, am));
    if (pa.areAllPreserved())
      return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
    changed = true;
  }
  return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
}

// ---------------------------------------------------------------- parser
//   pipeline := element (',' element)*
//   element  := name ('<' options '>')? ('(' pipeline ')')?
//   options  := option (';' option)*      option := key ('=' value)?
// Option values may contain ',' (candidates=2,3,4): only ';' and '>' end them.

namespace {

/// Pipeline text as written, without whitespace (for provenance metadata).
std::string compact(std::string_view s) {
  std::string out;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c)))
      out += c;
  return out;
}

class PipelineParser {
public:
  PipelineParser(std::string_view text, const PassRegistry &reg, Instrumentation *instr)
      : text_(text), reg_(reg), instr_(instr) {}

  Expected<std::unique_ptr<PassManager>> parse() {
    skipSpace();
    if (pos_ == text_.size())
      return errorf("-passes: the pipeline is empty; accepted passes: {}", reg_.namesList());
    LLMOPT_ASSIGN_OR_RETURN(auto pm, pipeline());
    skipSpace();
    if (pos_ != text_.size())
      return err(fmt::format("unexpected '{}'", text_[pos_]));
    return pm;
  }

private:
  Status err(const std::string &what) const {
    return errorf("-passes='{}': at column {}: {}", text_, pos_ + 1, what);
  }
  void skipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_])))
      ++pos_;
  }
  bool eat(char c) {
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  Expected<std::unique_ptr<PassManager>> pipeline() {
    auto pm = std::make_unique<PassManager>();
    pm->setInstrumentation(instr_);
    do {
      LLMOPT_ASSIGN_OR_RETURN(auto p, element());
      pm->add(std::move(p));
    } while (eat(','));
    return pm;
  }

  Expected<PassOptionList> options() {
    PassOptionList list;
    size_t depth = 1;
    std::string cur;
    auto flush = [&]() -> Status {
      auto trim = [](std::string s) {
        size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
        return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
      };
      std::string item = trim(cur);
      cur.clear();
      if (item.empty())
        return Status::ok();
      size_t eq = item.find('=');
      if (eq == std::string::npos)
        list.entries.emplace_back(item, std::nullopt);
      else if (eq == 0)
        return err("an option has no name before '='");
      else
        list.entries.emplace_back(trim(item.substr(0, eq)), trim(item.substr(eq + 1)));
      return Status::ok();
    };
    while (pos_ < text_.size()) {
      char c = text_[pos_++];
      if (c == '<')
        ++depth;
      if (c == '>' && --depth == 0) {
        LLMOPT_RETURN_IF_ERROR(flush());
        return list;
      }
      if (c == ';' && depth == 1) {
        LLMOPT_RETURN_IF_ERROR(flush());
        continue;
      }
      cur += c;
    }
    return err("'<' is never closed by '>'");
  }

  Expected<std::unique_ptr<Pass>> element() {
    skipSpace();
    size_t start = pos_;
    while (pos_ < text_.size() &&
           (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '-' ||
            text_[pos_] == '_' || text_[pos_] == '.'))
      ++pos_;
    std::string name(text_.substr(start, pos_ - start));
    if (name.empty())
      return err(pos_ < text_.size() ? fmt::format("expected a pass name, got '{}'", text_[pos_])
                                     : std::string("expected a pass name at the end"));
    PassOptionList opts;
    if (eat('<')) {
      LLMOPT_ASSIGN_OR_RETURN(opts, options());
    }
    if (name == "fixpoint") {
      OptionReader r("fixpoint", opts);
      LLMOPT_ASSIGN_OR_RETURN(int64_t maxRounds, r.getInt("max", 16, 1, 1000));
      LLMOPT_RETURN_IF_ERROR(r.finish());
      if (!eat('('))
        return err("fixpoint needs a nested pipeline: fixpoint(a,b)");
      LLMOPT_ASSIGN_OR_RETURN(auto inner, pipeline());
      if (!eat(')'))
        return err("expected ')' to close fixpoint(");
      auto fp = std::make_unique<FixpointPass>(std::move(inner), static_cast<int>(maxRounds));
      fp->setPipelineText(compact(text_.substr(start, pos_ - start)));
      return std::unique_ptr<Pass>(std::move(fp));
    }
    const PassInfo *info = reg_.find(name);
    if (!info)
      return errorf("unknown pass '{}'; accepted passes: {}, fixpoint(...)", name,
                    reg_.namesList());
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == '(')
      return err(fmt::format("pass '{}' does not take a nested pipeline", name));
    LLMOPT_ASSIGN_OR_RETURN(std::unique_ptr<Pass> pass, info->create(opts));
    pass->setPipelineText(compact(text_.substr(start, pos_ - start)));
    return pass;
  }

  std::string_view text_;
  size_t pos_ = 0;
  const PassRegistry &reg_;
  Instrumentation *instr_;
};

} // namespace

Expected<std::unique_ptr<PassManager>> parsePipeline(std::string_view text,
                                                     const PassRegistry &registry,
                                                     Instrumentation *instr) {
  PipelineParser p(text, registry, instr);
  return p.parse();
}

} // namespace llmopt
