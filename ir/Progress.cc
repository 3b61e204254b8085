// Progress bars: redrawn in place on a terminal, throttled plain lines elsewhere.
#include "ir/Progress.h"

#include <unistd.h>

#include <atomic>
#include <iostream>

#include <fmt/format.h>

namespace llmopt {
namespace {

std::atomic<Verbosity> gVerbosity{Verbosity::Normal};
std::atomic<int> gForceTerminal{-1};
using Clock = std::chrono::steady_clock;
constexpr double kPlainLineEvery = 5.0; // seconds between plain (non-terminal) lines

} // namespace

void setVerbosity(Verbosity v) { gVerbosity = v; }
Verbosity verbosity() { return gVerbosity; }
void Progress::forceTerminal(bool on) { gForceTerminal = on ? 1 : 0; }

Progress::Progress(std::string what, int64_t total, std::string unit)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total),
      tty_(gForceTerminal >= 0 ? gForceTerminal == 1 : isatty(STDERR_FILENO) == 1),
      enabled_(verbosity() != Verbosity::Quiet && total > 0), start_(Clock::now()),
      lastPrint_(start_) {}

Progress::~Progress() {
  // A loop left early (an error) must not leave a half-drawn bar on the terminal.
  if (enabled_ && tty_ && !finished_)
    std::cerr << "\r\x1b[K" << std::flush;
}

double Progress::seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

std::string Progress::line(int64_t done, std::string_view detail) const {
  const double secs = seconds();
  std::string s = what_;
  if (tty_) {
    constexpr int64_t kWidth = 24;
    const int64_t fill = kWidth * done / total_;
    s += fmt::format(" [{}{}]", std::string(static_cast<size_t>(fill), '#'),
                     std::string(static_cast<size_t>(kWidth - fill), '.'));
  } else {
    s += ":";
  }
  s += fmt::format(" {}/{}{}{}  {:.0f} s", done, total_, unit_.empty() ? "" : " ", unit_, secs);
  if (done > 0 && done < total_)
    s += fmt::format(", ETA {:.0f} s", secs / static_cast<double>(done) *
                                           static_cast<double>(total_ - done));
  if (!detail.empty())
    s += fmt::format("  {}", detail);
  return s;
}

void Progress::update(int64_t done, std::string_view detail) {
  if (!enabled_ || finished_)
    return;
  const bool last = done >= total_;
  if (tty_) {
    std::cerr << "\r" << line(done, detail) << "\x1b[K" << (last ? "\n" : "") << std::flush;
  } else {
    const auto now = Clock::now();
    if (!last && std::chrono::duration<double>(now - lastPrint_).count() < kPlainLineEvery)
      return;
    lastPrint_ = now;
    std::cerr << line(done, detail) << "\n" << std::flush;
  }
  finished_ = last;
}

} // namespace llmopt
