// A hand-written SVG bar chart (qimg bench --plot): one bar per value,
// grouped by category, coloured by series, with title, axis labels, units,
// value labels and a legend. No dependencies; the output is standalone SVG.
#pragma once

#include <string>
#include <vector>

namespace qimg {

struct BarSeries {
  std::string name;            // legend entry
  std::vector<double> values;  // one per category; a negative value means "no bar"
};

struct BarChart {
  std::string title;
  std::string subtitle;
  std::string x_label;                  // e.g. "configuration"
  std::string y_label;                  // with its unit, e.g. "throughput (MiB/s)"
  std::vector<std::string> categories;  // groups along the x axis
  std::vector<BarSeries> series;
};

// Renders the chart; every bar is a <rect class="bar"> with a <title> tooltip.
std::string render_bar_chart(const BarChart& chart);

// Escapes &, <, >, " for XML text and attributes.
std::string xml_escape(const std::string& text);

}  // namespace qimg
