// qimg bench scenario reports: human table (with the matrix view), JSON and
// CSV (SPEC section 8 keys), and the SVG chart.
#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

#include "cli/output.hpp"
#include "cli/svg.hpp"
#include "commands/bench_scenarios.hpp"

namespace qimg {
namespace {

double round_to(double v, int digits) {
  double m = std::pow(10.0, digits);
  return std::round(v * m) / m;
}

std::string describe(const ScenarioParams& p) {
  const std::string bs = format_size(p.block_size), size = format_size(p.size);
  std::string what;
  if (p.scenario == "interleave") {
    what = fmt::format("write every even, then every odd 4 KiB block of {}, then read it in 1 MiB requests", size);
  } else if (p.scenario == "cow-backing") {
    what = fmt::format("{} random {} writes into an empty overlay over a fully written {} raw backing file", p.count,
                       bs, size);
  } else if (p.scenario == "alloc") {
    what = fmt::format("{} random {} writes into an empty {} image", p.count, bs, size);
  } else if (p.scenario == "partial") {
    what = fmt::format("sequential {} writes from offset {} (not cluster aligned), {} disk", bs,
                       (p.block_size / 2) & ~uint64_t(511), size);
  } else {
    what = fmt::format("{} random {} writes into a fully written {} image", p.count, bs, size);
  }
  return fmt::format("{}; cache={}, alloc={}, seed={}", what, p.cache_name,
                     p.alloc == qcow::AllocPolicy::kReserve ? "reserve" : "default", p.seed);
}

std::string percent(uint64_t hits, uint64_t misses) {
  return hits + misses ? fmt::format("{:.1f}%", 100.0 * double(hits) / double(hits + misses)) : "-";
}

// The configuration label without the `key=value` of the column key.
std::string row_label(const RunConfig& c, const std::string& column_key) {
  if (!c.raw.empty()) return c.label;
  std::string out;
  for (const auto& [k, v] : c.matrix_values) {
    if (k == column_key) continue;
    out += (out.empty() ? "" : " ") + k + "=" + v;
  }
  return out.empty() ? "ops/s" : out;
}

std::string column_value(const RunConfig& c, const std::string& column_key) {
  for (const auto& [k, v] : c.matrix_values)
    if (k == column_key) return v;
  return "";
}

// Matrix view per phase: rows = every other matrix key, columns = extended_l2
// (or the last key), cells = ops/s; raw baselines as extra rows.
std::string matrix_tables(const ScenarioParams& p, const std::vector<RunResult>& runs) {
  if (p.matrix.empty()) return "";
  std::string column_key = p.matrix.back().first;
  for (const auto& [k, values] : p.matrix)
    if (k == "extended_l2") column_key = k;
  std::vector<std::string> columns;
  for (const auto& [k, values] : p.matrix)
    if (k == column_key) columns = values;
  std::vector<std::string> phases;
  for (const RunResult& r : runs)
    if (std::find(phases.begin(), phases.end(), r.phase) == phases.end()) phases.push_back(r.phase);

  std::string out;
  for (const std::string& phase : phases) {
    std::vector<std::string> rows;
    std::map<std::pair<std::string, std::string>, double> cells;
    for (const RunResult& r : runs) {
      if (r.phase != phase) continue;
      std::string row = row_label(r.config, column_key);
      if (std::find(rows.begin(), rows.end(), row) == rows.end()) rows.push_back(row);
      cells[{row, r.config.raw.empty() ? column_value(r.config, column_key) : ""}] = r.ops_per_sec();
    }
    size_t w = 10;
    for (const auto& row : rows) w = std::max(w, row.size());
    out += fmt::format("\n{} ops/s ({}), columns: {}\n{:<{}}", phase, p.scenario, column_key, "", w);
    for (const auto& col : columns) out += fmt::format("  {:>12}", column_key + "=" + col);
    out += '\n';
    for (const auto& row : rows) {
      out += fmt::format("{:<{}}", row, w);
      auto raw_it = cells.find({row, ""});
      for (const auto& col : columns) {
        auto it = cells.find({row, col});
        if (it == cells.end()) it = raw_it;
        out += it == cells.end() ? fmt::format("  {:>12}", "-") : fmt::format("  {:>12.0f}", it->second);
      }
      out += '\n';
    }
  }
  return out;
}

Json run_json(const RunResult& r) {
  Json options = Json::object();
  for (const auto& [k, v] : r.options) options[k] = v;
  Json j = Json::object();
  j["options"] = options;
  j["phase"] = r.phase;
  j["requests"] = r.requests;
  j["request_size"] = r.request_size;
  j["seconds"] = round_to(r.seconds, 6);
  j["ops_per_sec"] = round_to(r.ops_per_sec(), 3);
  j["mib_per_sec"] = round_to(r.mib_per_sec(), 3);
  j["guest_bytes_written"] = r.guest_bytes_written;
  j["guest_bytes_read"] = r.guest_bytes_read;
  j["host_bytes_written"] = r.io.bytes_written;
  j["host_bytes_read"] = r.io.bytes_read;
  j["write_amplification"] = round_to(r.write_amplification(), 4);
  j["host_calls_per_request"] = {{"read", round_to(r.calls_per_request(r.io.reads), 4)},
                                 {"write", round_to(r.calls_per_request(r.io.writes), 4)},
                                 {"flush", round_to(r.calls_per_request(r.io.flushes), 4)},
                                 {"fallocate", round_to(r.calls_per_request(r.io.fallocates), 4)}};
  j["image_file_size"] = r.image_file_size;
  j["image_allocated_bytes"] = r.image_allocated_bytes;
  j["host_extents"] = r.host_extents;
  j["l2_cache_hits"] = r.l2_cache_hits;
  j["l2_cache_misses"] = r.l2_cache_misses;
  return j;
}

void flatten(const std::string& prefix, const Json& j, std::vector<std::pair<std::string, std::string>>* out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object()) {
      flatten(key, *it, out);
    } else {
      out->emplace_back(key, it->is_string() ? it->get<std::string>() : it->dump());
    }
  }
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

std::string report_human(const ScenarioParams& p, const std::vector<RunResult>& runs) {
  size_t w = 6;
  for (const RunResult& r : runs) w = std::max(w, r.config.label.size());
  std::string out = fmt::format("Scenario {}: {}\n\n", p.scenario, describe(p));
  out += fmt::format("{:<{}}  {:<10} {:>10} {:>9} {:>7}  {:<23} {:>10} {:>10} {:>7} {:>6}\n", "config", w, "phase",
                     "ops/s", "MiB/s", "WA", "host r/w/f/fa per req", "file size", "allocated", "extents", "L2 hit");
  for (const RunResult& r : runs) {
    std::string calls = fmt::format("{:.2f}/{:.2f}/{:.2f}/{:.2f}", r.calls_per_request(r.io.reads),
                                    r.calls_per_request(r.io.writes), r.calls_per_request(r.io.flushes),
                                    r.calls_per_request(r.io.fallocates));
    std::string wa = r.guest_bytes_written ? fmt::format("{:.2f}", r.write_amplification()) : "-";
    out += fmt::format("{:<{}}  {:<10} {:>10.0f} {:>9.1f} {:>7}  {:<23} {:>10} {:>10} {:>7} {:>6}\n", r.config.label,
                       w, r.phase, r.ops_per_sec(), r.mib_per_sec(), wa, calls, format_size(r.image_file_size),
                       format_size(r.image_allocated_bytes), r.host_extents,
                       percent(r.l2_cache_hits, r.l2_cache_misses));
  }
  out += matrix_tables(p, runs);
  return out;
}

std::string report_json(const ScenarioParams& p, const std::vector<RunResult>& runs) {
  Json j = Json::object();
  j["scenario"] = p.scenario;
  j["runs"] = Json::array();
  for (const RunResult& r : runs) j["runs"].push_back(run_json(r));
  return json_pretty(j) + "\n";
}

std::string report_csv(const std::vector<RunResult>& runs) {
  // Option columns are the union over runs (a raw baseline has fewer).
  std::vector<std::string> option_keys;
  for (const RunResult& r : runs)
    for (const auto& [k, v] : r.options)
      if (std::find(option_keys.begin(), option_keys.end(), k) == option_keys.end()) option_keys.push_back(k);
  std::string out;
  bool header = false;
  for (const RunResult& r : runs) {
    std::vector<std::pair<std::string, std::string>> fields;
    Json j = run_json(r);
    j.erase("options");
    flatten("", j, &fields);
    if (!header) {
      std::vector<std::string> names;
      for (const auto& k : option_keys) names.push_back("options." + k);
      for (const auto& [k, v] : fields) names.push_back(k);
      out += fmt::format("{}\n", fmt::join(names, ","));
      header = true;
    }
    std::vector<std::string> values;
    for (const auto& k : option_keys) {
      std::string v;
      for (const auto& [ok, ov] : r.options)
        if (ok == k) v = ov;
      values.push_back(csv_field(v));
    }
    for (const auto& [k, v] : fields) values.push_back(csv_field(v));
    out += fmt::format("{}\n", fmt::join(values, ","));
  }
  return out;
}

std::string report_svg(const ScenarioParams& p, const std::vector<RunResult>& runs) {
  BarChart chart;
  chart.title = fmt::format("qimg bench --scenario {}", p.scenario);
  chart.subtitle = describe(p);
  chart.x_label = "configuration (image options)";
  chart.y_label = "throughput (MiB/s)";
  for (const RunResult& r : runs) {
    if (std::find(chart.categories.begin(), chart.categories.end(), r.config.label) == chart.categories.end())
      chart.categories.push_back(r.config.label);
    auto it = std::find_if(chart.series.begin(), chart.series.end(),
                           [&](const BarSeries& s) { return s.name == r.phase; });
    if (it == chart.series.end()) {
      chart.series.push_back({r.phase, {}});
      it = chart.series.end() - 1;
    }
  }
  for (BarSeries& s : chart.series) s.values.assign(chart.categories.size(), -1);
  for (const RunResult& r : runs) {
    size_t g = size_t(std::find(chart.categories.begin(), chart.categories.end(), r.config.label) -
                      chart.categories.begin());
    for (BarSeries& s : chart.series)
      if (s.name == r.phase) s.values[g] = r.mib_per_sec();
  }
  return render_bar_chart(chart);
}

}  // namespace qimg
