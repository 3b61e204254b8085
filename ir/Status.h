// Error values for llmopt's boundaries: Status (ok or a message) and Expected<T>.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace llmopt {

/// Kind of failure, which the CLI maps to its exit code.
enum class ErrorKind {
  User,     ///< Bad input: file, option, pass name, unsupported op (exit 1).
  Internal  ///< A broken invariant inside llmopt (exit 2).
};

/// The result of an operation that can fail: ok, or an error message that names
/// the file / node / option involved and what was expected.
class [[nodiscard]] Status {
public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(std::string msg, ErrorKind kind = ErrorKind::User) {
    Status s;
    s.msg_ = std::move(msg);
    s.kind_ = kind;
    return s;
  }
  bool isOk() const { return !msg_.has_value(); }
  explicit operator bool() const { return isOk(); }
  const std::string &message() const {
    assert(msg_);
    return *msg_;
  }
  ErrorKind kind() const { return kind_; }
  /// Returns this error with `prefix: ` put in front of the message.
  Status withContext(const std::string &prefix) const {
    if (isOk())
      return *this;
    return error(prefix + ": " + *msg_, kind_);
  }

private:
  std::optional<std::string> msg_;
  ErrorKind kind_ = ErrorKind::User;
};

template <typename... Args>
Status errorf(fmt::format_string<Args...> f, Args &&...args) {
  return Status::error(fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
Status internalErrorf(fmt::format_string<Args...> f, Args &&...args) {
  return Status::error(fmt::format(f, std::forward<Args>(args)...), ErrorKind::Internal);
}

/// A value or the Status explaining why there is none.
template <typename T> class [[nodiscard]] Expected {
public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Status err) : v_(std::move(err)) { assert(!std::get<Status>(v_).isOk()); }
  bool hasValue() const { return v_.index() == 0; }
  explicit operator bool() const { return hasValue(); }
  T &operator*() { return std::get<0>(v_); }
  const T &operator*() const { return std::get<0>(v_); }
  T *operator->() { return &std::get<0>(v_); }
  const T *operator->() const { return &std::get<0>(v_); }
  T take() { return std::move(std::get<0>(v_)); }
  const Status &status() const { return std::get<1>(v_); }

private:
  std::variant<T, Status> v_;
};

} // namespace llmopt

/// Propagates a failed Status out of the current function.
#define LLMOPT_RETURN_IF_ERROR(expr)                                                               \
  do {                                                                                             \
    ::llmopt::Status _st = (expr);                                                                 \
    if (!_st.isOk())                                                                               \
      return _st;                                                                                  \
  } while (0)

#define LLMOPT_CONCAT_INNER(a, b) a##b
#define LLMOPT_CONCAT(a, b) LLMOPT_CONCAT_INNER(a, b)
/// `LLMOPT_ASSIGN_OR_RETURN(auto x, f());` binds x or propagates f()'s error.
#define LLMOPT_ASSIGN_OR_RETURN(decl, expr)                                                        \
  LLMOPT_ASSIGN_OR_RETURN_IMPL(LLMOPT_CONCAT(_exp_, __LINE__), decl, expr)
#define LLMOPT_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr)                                              \
  auto tmp = (expr);                                                                               \
  if (!tmp.hasValue())                                                                             \
    return tmp.status();                                                                           \
  decl = tmp.take()
