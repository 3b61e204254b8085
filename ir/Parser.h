// Parses the IR text form that ir/Printer.h prints (grammar: docs/ir-text.md) back
// into a Model, building it through the public Graph API.
#pragma once

#include <memory>
#include <string_view>

#include "ir/Graph.h"
#include "ir/Status.h"

namespace llmopt {

/// Parses `model ... { ... }`. Errors read `<sourceName>:<line>:<col>: expected X,
/// got 'Y'` (or name the undefined / redefined value). Values must be defined before
/// they are used, except by a graph's `return`; subgraphs see enclosing graphs' values.
/// Text printed with elided constants does not parse: the error names the value.
Expected<std::unique_ptr<Model>> parseModel(std::string_view text,
                                            std::string_view sourceName = "<text>");

/// Parses one type as toString(Type) spells it, e.g. `f32[batch,?,64]`, `seq<i64[*]>`.
Expected<Type> parseType(std::string_view text);

} // namespace llmopt
