// Progress reporting on stderr and the process-wide verbosity (`--quiet`, `-v`).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace llmopt {

enum class Verbosity { Quiet, Normal, Verbose };

/// Set once by a tool from its flags; read by Progress and by anything that prints notes.
void setVerbosity(Verbosity v);
Verbosity verbosity();

/// A progress bar for a long loop (calibration windows, GPTQ weights, evaluation).
/// On a terminal it redraws one line in place:
///   `gptq [#########...........] 12/40 weights  3 s, ETA 7 s`
/// Otherwise (a log file, a pipe) it prints plain lines, at most one every few seconds
/// plus the final one, so logs stay short. Nothing under --quiet.
class Progress {
public:
  Progress(std::string what, int64_t total, std::string unit = "");
  ~Progress();
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;

  /// `done` of `total` finished; `detail` is appended (e.g. "120 tok/s").
  void update(int64_t done, std::string_view detail = {});
  double seconds() const;
  /// Forces the terminal mode (tests).
  static void forceTerminal(bool on);

private:
  std::string line(int64_t done, std::string_view detail) const;
  std::string what_, unit_;
  int64_t total_;
  bool tty_, enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, lastPrint_;
};

} // namespace llmopt
