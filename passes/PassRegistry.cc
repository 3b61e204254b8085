// Registry storage, built-in registration from Passes.def, and plugin loading.
#include "passes/PassRegistry.h"

#include <dlfcn.h>

#include "passes/AllPasses.h"

namespace llmopt {

PassRegistry &PassRegistry::global() {
  static PassRegistry *r = [] {
    auto *reg = new PassRegistry();
    registerBuiltinPasses(*reg);
    return reg;
  }();
  return *r;
}

Status PassRegistry::add(PassInfo info) {
  if (passes_.count(info.name))
    return errorf("pass '{}' is already registered (by {})", info.name,
                  passes_.find(info.name)->second.origin);
  std::string key = info.name;
  passes_.emplace(std::move(key), std::move(info));
  return Status::ok();
}

const PassInfo *PassRegistry::find(std::string_view name) const {
  auto it = passes_.find(name);
  return it == passes_.end() ? nullptr : &it->second;
}

std::vector<const PassInfo *> PassRegistry::all() const {
  std::vector<const PassInfo *> out;
  for (const auto &[n, p] : passes_)
    out.push_back(&p);
  return out;
}

std::string PassRegistry::namesList() const {
  std::string s;
  for (const auto &[n, p] : passes_)
    s += (s.empty() ? "" : ", ") + n;
  return s;
}

namespace {
// A pass without options rejects any it is given.
template <typename P> Expected<std::unique_ptr<Pass>> createPlain(const char *name,
                                                                  const PassOptionList &opts) {
  OptionReader r(name, opts);
  LLMOPT_RETURN_IF_ERROR(r.finish());
  return std::unique_ptr<Pass>(std::make_unique<P>());
}
template <typename P, typename Opts>
Expected<std::unique_ptr<Pass>> createWith(Expected<Opts> (*parse)(const PassOptionList &),
                                           const PassOptionList &opts) {
  LLMOPT_ASSIGN_OR_RETURN(Opts o, parse(opts));
  return std::unique_ptr<Pass>(std::make_unique<P>(std::move(o)));
}
} // namespace

void registerBuiltinPasses(PassRegistry &r) {
#define GRAPH_PASS(NAME, CLASS, HELP)                                                              \
  (void)r.add(PassInfo{NAME, "", HELP,                                                             \
                       [](const PassOptionList &o) { return createPlain<CLASS>(NAME, o); }});
#define GRAPH_PASS_WITH_PARAMS(NAME, CLASS, PARSER, PARAMS, HELP)                                  \
  (void)r.add(PassInfo{NAME, PARAMS, HELP,                                                         \
                       [](const PassOptionList &o) { return createWith<CLASS>(&PARSER, o); }});
#include "passes/Passes.def"
}

Status loadPassPlugin(const std::string &path, PassRegistry &r) {
  void *h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return errorf("--load-pass-plugin={}: cannot load: {}", path, ::dlerror());
  using VersionFn = int (*)();
  using RegisterFn = void (*)(PassRegistry &);
  auto version = reinterpret_cast<VersionFn>(::dlsym(h, "llmoptPluginApiVersion"));
  auto reg = reinterpret_cast<RegisterFn>(::dlsym(h, "llmoptRegisterPasses"));
  if (!version || !reg)
    return errorf("--load-pass-plugin={}: not an llmopt plugin (it must export "
                  "llmoptPluginApiVersion and llmoptRegisterPasses)",
                  path);
  if (version() != kPluginApiVersion)
    return errorf("--load-pass-plugin={}: plugin API version {}, this llmopt expects {}", path,
                  version(), kPluginApiVersion);
  PassRegistry scratch;
  reg(scratch);
  for (const PassInfo *p : scratch.all()) {
    PassInfo copy = *p;
    copy.origin = path;
    LLMOPT_RETURN_IF_ERROR(r.add(std::move(copy)).withContext("--load-pass-plugin=" + path));
  }
  // The library stays loaded: the registered factories point into it.
  return Status::ok();
}

} // namespace llmopt
