// --report-plot: a per-layer SVG chart written without any plotting library.
//
// Top panel: stored bits per weight as bars (one per layer, coloured by format), with
// sparsity drawn as a darker band at the bar's foot. Bottom panel (only when calibration
// data measured it): relative output error per layer on a log scale. Each bar carries a
// <title> tooltip with the layer's name and figures.
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "passes/analysis/Report.h"

namespace llmopt {
namespace {

std::string escape(const std::string &s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '&': out += "&amp;"; break;
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '"': out += "&quot;"; break;
    default: out += c;
    }
  }
  return out;
}

const char *colourFor(const std::string &format, std::map<std::string, const char *> &assigned) {
  static const char *kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                   "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};
  auto it = assigned.find(format);
  if (it != assigned.end())
    return it->second;
  const char *c = kPalette[assigned.size() % std::size(kPalette)];
  assigned.emplace(format, c);
  return c;
}

} // namespace

std::string formatReportSvg(const ReportInfo &info) {
  const auto &L = info.layers;
  const int n = static_cast<int>(L.size());
  bool anyError = false;
  double maxBits = 8, minErr = 1e300, maxErr = 0;
  for (const LayerStats &l : L) {
    maxBits = std::max(maxBits, l.bits);
    if (l.error && *l.error > 0) {
      anyError = true;
      minErr = std::min(minErr, *l.error);
      maxErr = std::max(maxErr, *l.error);
    }
  }
  maxBits = std::ceil(maxBits / 4) * 4;
  // Labels are rotated 60 degrees below the bars: room below and to the right for 28 characters.
  const int left = 60, right = 100, top = 40, panel = 200, gap = 40, labels = 170;
  const int bar = std::clamp(900 / std::max(n, 1), 6, 24);
  const int width = std::max(480, left + right + n * bar);
  const int errTop = top + panel + gap;
  const int height = (anyError ? errTop + panel : top + panel) + labels;
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"11\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"18\" font-size=\"14\">llmopt: {3}: bits per weight{4} per layer</text>\n",
      width, height, left, escape(info.title), anyError ? " and output error" : "");
  // Bits panel: axis with a gridline every 4 bits.
  for (double b = 0; b <= maxBits; b += 4) {
    const double y = top + panel - panel * b / maxBits;
    s += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                     "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
                     left, left + n * bar, y, y, left - 4, y + 4, b);
  }
  s += fmt::format("<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">"
                   "bits per weight</text>\n",
                   top + panel / 2, top + panel / 2);
  std::map<std::string, const char *> colours;
  for (int i = 0; i < n; ++i) {
    const LayerStats &l = L[static_cast<size_t>(i)];
    const double h = panel * l.bits / maxBits, x = left + i * bar;
    const std::string tip = escape(fmt::format(
        "{}: {} [{}], {:.2f} bits, {:.1f}% zeros{}", l.name, l.format, fmt::join(l.shape, "x"),
        l.bits, 100 * l.sparsity, l.error ? fmt::format(", error {:.3e}", *l.error) : ""));
    s += fmt::format("<rect class=\"bits\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{:.1f}\" "
                     "fill=\"{}\"><title>{}</title></rect>\n",
                     x + 1, top + panel - h, bar - 2, h, colourFor(l.format, colours), tip);
    if (l.sparsity > 0)
      s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{:.1f}\" fill=\"black\" "
                       "fill-opacity=\"0.35\"/>\n",
                       x + 1, top + panel - h * l.sparsity, bar - 2, h * l.sparsity);
    const int labelY = (anyError ? errTop + panel : top + panel) + 8;
    std::string name = l.name.size() > 28 ? "..." + l.name.substr(l.name.size() - 25) : l.name;
    s += fmt::format("<text x=\"{0:.1f}\" y=\"{1}\" transform=\"rotate(60 {0:.1f} {1})\">{2}</text>\n",
                     x + bar / 2.0, labelY, escape(name));
  }
  // Legend: one swatch per format, and the sparsity band.
  int lx = left;
  for (const auto &[format, colour] : colours) {
    s += fmt::format("<rect x=\"{}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{}\"/>"
                     "<text x=\"{}\" y=\"33\">{}</text>\n",
                     lx + 200, colour, lx + 214, escape(format));
    lx += 30 + static_cast<int>(format.size()) * 7;
  }
  if (anyError) {
    // Error panel, log10 scale over the measured decades.
    const double lo = std::floor(std::log10(minErr)), hi = std::max(lo + 1, std::ceil(std::log10(maxErr)));
    for (double d = lo; d <= hi; d += 1) {
      const double y = errTop + panel - panel * (d - lo) / (hi - lo);
      s += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
                       "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">1e{}</text>\n",
                       left, left + n * bar, y, y, left - 4, y + 4, static_cast<int>(d));
    }
    s += fmt::format("<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">"
                     "relative output error</text>\n",
                     errTop + panel / 2, errTop + panel / 2);
    for (int i = 0; i < n; ++i) {
      const LayerStats &l = L[static_cast<size_t>(i)];
      if (!l.error || *l.error <= 0)
        continue;
      const double h = std::max(2.0, panel * (std::log10(*l.error) - lo) / (hi - lo));
      s += fmt::format("<rect class=\"error\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{:.1f}\" "
                       "fill=\"#e15759\"><title>{}: error {:.3e}</title></rect>\n",
                       left + i * bar + 1.0, errTop + panel - h, bar - 2, h, escape(l.name), *l.error);
    }
  }
  s += "</svg>\n";
  return s;
}

} // namespace llmopt
