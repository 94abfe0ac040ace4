// crash_tests: runs crash workloads (tests/crash/workloads.cpp) and reports, per
// workload and kind of fault, how many distinct states qemu-img judged and how
// many were corrupt or lost acknowledged data. Exit status 1 if any was.
//
//   crash_tests --list
//   crash_tests [--states N] [--jobs N] [--keep DIR] [--results FILE] WORKLOAD...
//
// --states defaults to $QIMG_CRASH_STATES or 150 (CI); the recorded run in
// docs/reliability.md uses 2000 (scripts/crash-report.sh). --results appends one
// JSON line per workload, which scripts/crash-report.sh turns into the table.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "crash/harness.hpp"

namespace {

std::string json_line(const crash::Report& r, const crash::Workload& w) {
  std::string kinds;
  for (const auto& [k, s] : r.kinds) {
    if (!kinds.empty()) kinds += ", ";
    kinds += fmt::format("\"{}\": {{\"states\": {}, \"corrupt\": {}, \"lost\": {}, \"runs\": {}}}",
                         crash::fault_kind_name(k), s.states, s.corrupt, s.lost, s.runs);
  }
  return fmt::format("{{\"workload\": \"{}\", \"what\": \"{}\", \"ops\": {}, \"flushes\": {}, \"states\": {}, "
                     "\"failures\": {}, \"kinds\": {{{}}}}}",
                     r.workload, w.what, r.ops, r.flushes, r.total_states(), r.failures.size(), kinds);
}

int usage(const char* why) {
  std::fprintf(stderr, "crash_tests: %s\nusage: crash_tests --list | [--states N] [--jobs N] [--keep DIR] "
               "[--results FILE] WORKLOAD... (or all)\n", why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  crash::Options o;
  if (const char* env = std::getenv("QIMG_CRASH_STATES")) o.states = std::strtoull(env, nullptr, 10);
  o.jobs = std::max(1u, std::thread::hardware_concurrency());
  std::string results;
  std::vector<std::string> names;
  const auto workloads = crash::all_workloads();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--list") {
        for (const auto& w : workloads) std::printf("%s\n", w.name.c_str());
        return 0;
      } else if (a == "--states") {
        o.states = std::stoull(value());
      } else if (a == "--jobs") {
        o.jobs = unsigned(std::stoul(value()));
      } else if (a == "--keep") {
        o.keep_dir = value();
      } else if (a == "--results") {
        results = value();
      } else if (a == "all") {
        for (const auto& w : workloads) names.push_back(w.name);
      } else if (!a.empty() && a[0] == '-') {
        return usage(("unknown option " + a).c_str());
      } else {
        names.push_back(a);
      }
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (names.empty()) return usage("no workload named");
  int rc = 0;
  for (const std::string& name : names) {
    const crash::Workload* w = nullptr;
    for (const auto& x : workloads)
      if (x.name == name) w = &x;
    if (!w) return usage(("no workload " + name).c_str());
    crash::Report r;
    try {
      r = crash::run_workload(*w, o);
    } catch (const std::exception& e) {
      std::printf("FAIL %s: %s\n", name.c_str(), e.what());
      rc = 1;
      continue;
    }
    std::printf("%s: %s\n  %llu ops, %llu flushes; %llu states judged by qemu-img\n", name.c_str(), w->what.c_str(),
                (unsigned long long)r.ops, (unsigned long long)r.flushes, (unsigned long long)r.total_states());
    for (const auto& [k, s] : r.kinds)
      std::printf("  %-26s %6llu states %4llu corrupt %4llu lost%s\n", crash::fault_kind_name(k),
                  (unsigned long long)s.states, (unsigned long long)s.corrupt, (unsigned long long)s.lost,
                  s.runs ? fmt::format(" ({} runs)", s.runs).c_str() : "");
    for (const std::string& f : r.failures) std::printf("  FAIL %s\n", f.c_str());
    if (!r.failures.empty()) rc = 1;
    // A run that judged nothing proves nothing.
    if (r.total_states() < 2) {
      std::printf("  FAIL %s: no crash states were judged\n", name.c_str());
      rc = 1;
    }
    if (!results.empty()) {
      std::ofstream out(results, std::ios::app);
      out << json_line(r, *w) << "\n";
    }
    std::fflush(stdout);
  }
  return rc;
}
