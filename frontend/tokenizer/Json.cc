// JSON access with paths for errors, and vocabulary reading.
#include <fmt/format.h>

#include "frontend/tokenizer/Components.h"

namespace llmopt::tok {
namespace {
const nlohmann::json &nullJson() {
  static const nlohmann::json n;
  return n;
}
} // namespace

JsonAt JsonAt::operator[](std::string_view key) const {
  std::string p = path + "/" + std::string(key);
  if (!j.is_object())
    return {nullJson(), std::move(p)};
  auto it = j.find(key);
  return {it == j.end() ? nullJson() : *it, std::move(p)};
}

JsonAt JsonAt::operator[](size_t index) const {
  std::string p = path + "/" + std::to_string(index);
  if (!j.is_array() || index >= j.size())
    return {nullJson(), std::move(p)};
  return {j[index], std::move(p)};
}

bool JsonAt::has(std::string_view key) const { return j.is_object() && j.contains(key); }

Expected<bool> JsonAt::boolean(std::string_view key, bool def) const {
  JsonAt v = (*this)[key];
  if (v.j.is_null())
    return def;
  if (!v.j.is_boolean())
    return v.error("expected true or false");
  return v.j.get<bool>();
}

Expected<std::string> JsonAt::string(std::string_view key) const {
  JsonAt v = (*this)[key];
  if (!v.j.is_string())
    return v.error(v.j.is_null() ? "missing string" : "expected a string");
  return v.j.get<std::string>();
}

Expected<std::optional<std::string>> JsonAt::optString(std::string_view key) const {
  JsonAt v = (*this)[key];
  if (v.j.is_null())
    return std::optional<std::string>();
  if (!v.j.is_string())
    return v.error("expected a string or null");
  return std::optional<std::string>(v.j.get<std::string>());
}

Expected<int64_t> JsonAt::integer(std::string_view key) const {
  JsonAt v = (*this)[key];
  if (!v.j.is_number_integer())
    return v.error(v.j.is_null() ? "missing integer" : "expected an integer");
  return v.j.get<int64_t>();
}

Status JsonAt::error(std::string_view what) const {
  return errorf("{}: {}", path.empty() ? "/" : path, what);
}

Status JsonAt::unsupported(std::string_view what, std::string_view value,
                           std::string_view supported) const {
  return errorf("{}: unsupported {} '{}' (supported: {})", path.empty() ? "/" : path, what, value,
                supported);
}

Expected<Vocab> Vocab::fromJson(const JsonAt &at) {
  if (!at.j.is_object())
    return at.error("expected an object {token: id}");
  Vocab v;
  v.ids.reserve(at.j.size());
  for (auto it = at.j.begin(); it != at.j.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > (int64_t{1} << 30))
      return at[it.key()].error("expected a non-negative id");
    int32_t id = it.value().get<int32_t>();
    v.ids.emplace(it.key(), id);
    if (static_cast<size_t>(id) >= v.tokens.size()) {
      v.tokens.resize(id + 1);
      v.present.resize(id + 1, false);
    }
    v.tokens[id] = it.key();
    v.present[id] = true;
  }
  return v;
}

} // namespace llmopt::tok
