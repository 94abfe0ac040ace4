#include "cli/svg.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace qimg {
namespace {

// Colour-blind friendly (Okabe-Ito).
const char* const kColours[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"};

// A "nice" axis maximum and tick step (1, 2, 5 x 10^n) for values up to max.
void nice_axis(double max, double* top, double* step) {
  if (max <= 0) max = 1;
  double raw = max / 5;
  double mag = std::pow(10, std::floor(std::log10(raw)));
  double norm = raw / mag;
  *step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  *top = std::ceil(max / *step) * *step;
}

std::string number(double v) {
  if (v == 0) return "0";
  if (v >= 100) return fmt::format("{:.0f}", v);
  if (v >= 10) return fmt::format("{:.1f}", v);
  return fmt::format("{:.2f}", v);
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
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

std::string render_bar_chart(const BarChart& c) {
  const size_t groups = std::max<size_t>(1, c.categories.size());
  const size_t per_group = std::max<size_t>(1, c.series.size());
  const double bar_w = 22, gap = 18;
  const double group_w = per_group * bar_w + gap;
  size_t longest = 0;
  for (const auto& cat : c.categories) longest = std::max(longest, cat.size());
  // Category labels are rotated by -40 degrees and end under their group: the
  // first one must not run off the left edge.
  const double left = std::max(80.0, 24 + longest * 4.7 - group_w / 2), right = 30, top = 70, plot_h = 320;
  const double label_h = std::min<double>(220, 12 + longest * 5.2);  // labels at -40 degrees
  const double legend_h = 22.0 * ((c.series.size() + 2) / 3);
  const double width = std::max({520.0, left + groups * group_w + right, 40 + c.subtitle.size() * 6.4,
                                  40 + c.title.size() * 9.5});
  const double height = top + plot_h + label_h + 40 + legend_h;

  double max = 0;
  for (const auto& s : c.series)
    for (double v : s.values) max = std::max(max, v);
  double axis_top, axis_step;
  nice_axis(max, &axis_top, &axis_step);
  auto y_of = [&](double v) { return top + plot_h - v / axis_top * plot_h; };

  std::string o;
  o += fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} {1:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n",
      width, height);
  o += fmt::format("<title>{}</title>\n", xml_escape(c.title));
  o += fmt::format("<rect width=\"{:.0f}\" height=\"{:.0f}\" fill=\"white\"/>\n", width, height);
  o += fmt::format("<text class=\"title\" x=\"{:.0f}\" y=\"26\" text-anchor=\"middle\" font-size=\"17\" "
                   "font-weight=\"bold\">{}</text>\n",
                   width / 2, xml_escape(c.title));
  if (!c.subtitle.empty()) {
    o += fmt::format("<text class=\"subtitle\" x=\"{:.0f}\" y=\"46\" text-anchor=\"middle\" fill=\"#444\">{}</text>\n",
                     width / 2, xml_escape(c.subtitle));
  }
  // Grid lines and y tick labels.
  for (double v = 0; v <= axis_top + axis_step / 2; v += axis_step) {
    double y = y_of(v);
    o += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n", left, y,
                     width - right, y);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" fill=\"#333\">{}</text>\n", left - 6,
                     y + 4, number(v));
  }
  // Axes and their labels.
  o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"black\"/>\n", left, top,
                   top + plot_h);
  o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"black\"/>\n", left,
                   top + plot_h, width - right);
  o += fmt::format("<text class=\"y-label\" x=\"18\" y=\"{0:.1f}\" text-anchor=\"middle\" "
                   "transform=\"rotate(-90 18 {0:.1f})\">{1}</text>\n",
                   top + plot_h / 2, xml_escape(c.y_label));
  o += fmt::format("<text class=\"x-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n",
                   left + (width - left - right) / 2, top + plot_h + label_h + 22, xml_escape(c.x_label));
  // Bars, grouped by category.
  for (size_t g = 0; g < c.categories.size(); ++g) {
    const double slot = (width - left - right) / double(groups);  // groups spread over the plot
    double gx = left + g * slot + (slot - per_group * bar_w) / 2;
    for (size_t s = 0; s < c.series.size(); ++s) {
      double v = g < c.series[s].values.size() ? c.series[s].values[g] : -1;
      if (v < 0) continue;
      double x = gx + s * bar_w, y = y_of(v);
      o += fmt::format(
          "<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\">"
          "<title>{}, {}: {} {}</title></rect>\n",
          x, y, bar_w - 2, top + plot_h - y, kColours[s % std::size(kColours)], xml_escape(c.categories[g]),
          xml_escape(c.series[s].name), number(v), xml_escape(c.y_label));
      o += fmt::format("<text class=\"value\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"9\">{}"
                       "</text>\n",
                       x + (bar_w - 2) / 2, y - 3, number(v));
    }
    double cx = gx + per_group * bar_w / 2, cy = top + plot_h + 14;
    o += fmt::format("<text class=\"category\" x=\"{0:.1f}\" y=\"{1:.1f}\" text-anchor=\"end\" "
                     "transform=\"rotate(-40 {0:.1f} {1:.1f})\">{2}</text>\n",
                     cx, cy, xml_escape(c.categories[g]));
  }
  // Legend, three entries a line.
  double ly = top + plot_h + label_h + 40;
  for (size_t s = 0; s < c.series.size(); ++s) {
    double lx = left + (s % 3) * 180;
    double y = ly + (s / 3) * 22;
    o += fmt::format("<g class=\"legend\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"14\" fill=\"{}\"/>"
                     "<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text></g>\n",
                     lx, y, kColours[s % std::size(kColours)], lx + 20, y + 11, xml_escape(c.series[s].name));
  }
  o += "</svg>\n";
  return o;
}

}  // namespace qimg
