// The pass registry: every pass by name with its options and help, filled from
// Passes.def and from plugins. The pipeline parser and --list-passes read it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "passes/Pass.h"
#include "passes/PassOptions.h"

namespace llmopt {

struct PassInfo {
  std::string name;   ///< kebab-case, as written in pipelines
  std::string params; ///< accepted options, e.g. "to=N" (empty: none)
  std::string help;   ///< one line
  std::function<Expected<std::unique_ptr<Pass>>(const PassOptionList &)> create;
  std::string origin = "builtin"; ///< "builtin" or the plugin path
};

class PassRegistry {
public:
  /// The process-wide registry, holding the built-in passes.
  static PassRegistry &global();
  /// Adds a pass; fails if the name is taken.
  Status add(PassInfo info);
  const PassInfo *find(std::string_view name) const;
  /// All passes, sorted by name.
  std::vector<const PassInfo *> all() const;
  /// Names, comma separated, for "accepted:" messages.
  std::string namesList() const;

private:
  std::map<std::string, PassInfo, std::less<>> passes_;
};

/// Registers the passes listed in Passes.def.
void registerBuiltinPasses(PassRegistry &r);

/// Plugin entry point: a shared library exports
///   extern "C" int llmoptPluginApiVersion();            // returns kPluginApiVersion
///   extern "C" void llmoptRegisterPasses(PassRegistry &); // adds its passes
inline constexpr int kPluginApiVersion = 1;
/// dlopens `path` and lets it register its passes into `r`.
Status loadPassPlugin(const std::string &path, PassRegistry &r);

} // namespace llmopt
