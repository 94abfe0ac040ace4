// check_image(): open, one read-only pass or a repairing pass plus a second
// read-only pass, and the report (counts as qemu-img check reports them).
#include "qcow/check.hpp"

#include <fmt/format.h>

#include <new>

#include "check/check_internal.hpp"
#include "codec/bytes.hpp"
#include "driver.hpp"

namespace qcow {

int CheckReport::exit_code() const {
  if (!supported) return 63;
  if (check_errors) return 1;
  if (corruptions) return 2;
  if (leaks) return 3;
  return 0;
}

Status check_pass(Qcow2Driver& d, uint64_t memory_limit, CheckReport& r) {
  const Geometry& g = d.geometry();
  RefcountWalk w(memory_limit);
  QCOW_TRY(walk_refcounts(d, WalkRefcountStructures::kInclude, w));
  r.messages.insert(r.messages.end(), w.messages.begin(), w.messages.end());
  StoredRefcounts stored(d.image_file(), g);
  QCOW_TRY(stored.load(d.header().refcount_table_offset, d.header().refcount_table_clusters));
  CheckTally t;
  QCOW_TRY(compare_refcounts(stored, w.counts, Repair::kNone, t, r.messages));
  QCOW_TRY(check_copied(d, stored, false, t, r.messages));
  r.check_errors = w.check_errors + t.check_errors;
  r.corruptions = w.corruptions + t.corruptions;
  r.leaks = t.leaks;
  r.image_end_offset = (t.highest_cluster + 1) << g.cluster_bits;
  r.total_clusters = div_round_up(d.header().size, g.cluster_size);
  r.allocated_clusters = w.allocated_clusters;
  r.fragmented_clusters = w.fragmented_clusters;
  r.compressed_clusters = w.compressed_clusters;
  r.extended_l2 = g.extended_l2;
  r.subclusters = w.subclusters;
  return Status::ok();
}

namespace {

Result<std::unique_ptr<Driver>> open_for_check(const std::string& path, const CheckOptions& o, bool writable) {
  OpenOptions oo;
  oo.format = o.format;
  oo.writable = writable;
  oo.force_share = o.force_share && !writable;
  oo.open_backing = false;  // check looks at this file only
  oo.repair_dirty = false;  // check -r repairs dirty images itself
  oo.repair = true;
  oo.overlap_check = o.overlap_check;
  oo.wrap_file = o.wrap_file;
  oo.open_data_file = o.open_data_file;
  return open_driver(path, oo, 0);
}

Result<CheckReport> check_image_impl(const std::string& path, const CheckOptions& o) {
  QCOW_ASSIGN_OR_RETURN(auto driver, open_for_check(path, o, o.repair != Repair::kNone));
  CheckReport report;
  report.filename = path;
  report.format = format_name(driver->format());
  if (driver->format() != Format::kQcow2) {
    report.supported = false;
    return report;
  }
  if (o.repair == Repair::kNone) {
    QCOW_TRY(check_pass(static_cast<Qcow2Driver&>(*driver), o.memory_limit, report));
    return report;
  }
  CheckTally t;
  std::vector<std::string> repair_messages;
  QCOW_TRY(repair_pass(static_cast<Qcow2Driver&>(*driver), o.repair, o.memory_limit, t, repair_messages));
  QCOW_TRY(driver->close());
  driver.reset();
  // Only over refcounts the repair left right: otherwise the re-check reports the entries.
  if (t.incomplete_snapshots && !t.corruptions && !t.check_errors) {
    QCOW_ASSIGN_OR_RETURN(driver, open_for_check(path, o, true));
    auto completed = complete_snapshot_table(static_cast<Qcow2Driver&>(*driver));
    static_cast<Qcow2Driver&>(*driver).abandon();
    driver.reset();
    if (!completed) return completed.status();
    t.corruptions_fixed += *completed;
  }
  // Double-check the repaired image from a fresh open (the report describes this pass).
  QCOW_ASSIGN_OR_RETURN(driver, open_for_check(path, o, false));
  QCOW_TRY(check_pass(static_cast<Qcow2Driver&>(*driver), o.memory_limit, report));
  report.corruptions_fixed = t.corruptions_fixed;
  report.leaks_fixed = t.leaks_fixed;
  if (t.corruptions_fixed || t.leaks_fixed || t.check_errors) {
    repair_messages.insert(repair_messages.end(), report.messages.begin(), report.messages.end());
    report.messages = std::move(repair_messages);
  }
  report.check_errors += t.check_errors;
  return report;
}

}  // namespace

Result<CheckReport> check_image(const std::string& path, const CheckOptions& options) {
  try {
    return check_image_impl(path, options);
  } catch (const std::bad_alloc&) {
    return Status::limit(path + ": out of memory while checking the image");
  } catch (const std::exception& e) {
    return Status::internal(path + ": " + e.what());
  }
}

}  // namespace qcow
