#include "commands/check.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/check.hpp"

namespace qimg {

void register_check(CLI::App& app, std::shared_ptr<CheckOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->format, "Image format (default: probe)");
  app.add_option("--output", o->output, "Output format: human or json");
  app.add_option("-r", o->repair, "Repair: leaks (free leaked clusters) or all (fix everything possible)");
  app.add_flag("-q", o->quiet, "Print nothing on success");
  app.add_flag("-U,--force-share", o->force_share, "Open without taking the lock");
  app.add_option("filename", o->filename, "Image file")->required();
}

namespace {

// qemu-img's dump_human_image_check().
std::string human_report(const qcow::CheckReport& r) {
  std::string s;
  if (r.corruptions_fixed || r.leaks_fixed) {
    s += fmt::format("The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n"
                     "    {} corruptions\n\nDouble checking the fixed image now...\n",
                     r.leaks_fixed, r.corruptions_fixed);
  }
  if (!(r.corruptions || r.leaks || r.check_errors)) {
    s += "No errors were found on the image.\n";
  } else {
    if (r.corruptions)
      s += fmt::format("\n{} errors were found on the image.\nData may be corrupted, or further writes to the image "
                       "may corrupt it.\n", r.corruptions);
    if (r.leaks)
      s += fmt::format("\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to "
                       "data.\n", r.leaks);
    if (r.check_errors) s += fmt::format("\n{} internal errors have occurred during the check.\n", r.check_errors);
  }
  if (r.total_clusters && r.allocated_clusters) {
    s += fmt::format("{}/{} = {:.2f}% allocated, {:.2f}% fragmented, {:.2f}% compressed clusters\n",
                     r.allocated_clusters, r.total_clusters, r.allocated_clusters * 100.0 / r.total_clusters,
                     r.fragmented_clusters * 100.0 / r.allocated_clusters,
                     r.compressed_clusters * 100.0 / r.allocated_clusters);
  }
  if (r.image_end_offset) s += fmt::format("Image end offset: {}\n", r.image_end_offset);
  return s;
}

// qemu-img's ImageCheck as JSON: optional counts appear only when non-zero.
std::string json_report(const qcow::CheckReport& r) {
  Json j = Json::object();
  auto optional = [&](const char* key, uint64_t v) {
    if (v) j[key] = v;
  };
  j["filename"] = r.filename;
  j["format"] = r.format;
  j["check-errors"] = r.check_errors;
  optional("image-end-offset", r.image_end_offset);
  optional("corruptions", r.corruptions);
  optional("leaks", r.leaks);
  optional("corruptions-fixed", r.corruptions_fixed);
  optional("leaks-fixed", r.leaks_fixed);
  optional("total-clusters", r.total_clusters);
  optional("allocated-clusters", r.allocated_clusters);
  optional("fragmented-clusters", r.fragmented_clusters);
  optional("compressed-clusters", r.compressed_clusters);
  Json out = qemu_key_order(j);
  if (r.extended_l2) {  // ours, not qemu-img's: appended after its keys
    out["subclusters"] = Json{{"allocated", r.subclusters.allocated},
                              {"zero", r.subclusters.zero},
                              {"unallocated", r.subclusters.unallocated},
                              {"bitmap-errors", r.subclusters.bitmap_errors}};
  }
  return json_pretty(out) + "\n";
}

}  // namespace

int run_check(const CheckOptions& o_arg) {
  CheckOptions o = o_arg;  // --image-opts rewrites filename and format
  OutputFormat output;
  if (qcow::Status s = parse_output_option(o.output, &output); !s) return fail(s);
  qcow::CheckOptions options;
  {
    qcow::OpenOptions image;  // check reads no guest data: the key is not needed
    if (qcow::Status s = apply_secret_options(&o.filename, &o.format, &image); !s) return fail(s);
    options.overlap_check = image.overlap_check;
  }
  if (qcow::Status s = parse_format_option(o.format, &options.format); !s) return fail(s);
  if (o.repair == "leaks") {
    options.repair = qcow::Repair::kLeaks;
  } else if (o.repair == "all") {
    options.repair = qcow::Repair::kAll;
  } else if (!o.repair.empty()) {
    return fail(fmt::format("Unknown option value for -r (expecting 'leaks' or 'all'): {}", o.repair));
  }
  if (options.repair != qcow::Repair::kNone && o.force_share)
    return fail("force-share=on can only be used with read-only images");
  options.force_share = o.force_share;

  auto report = qcow::check_image(o.filename, options);
  if (!report) return fail(report.status());
  const qcow::CheckReport& r = *report;
  if (!r.supported) {
    fail("This image format does not support checks");
    return 63;
  }
  // Findings go to stderr, as qemu-img prints them.
  for (const std::string& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
  std::fflush(stderr);
  if (!o.quiet) {
    std::string text = output == OutputFormat::kJson ? json_report(r) : human_report(r);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  }
  if (r.check_errors) fail("Check failed");
  return r.exit_code();
}

}  // namespace qimg
