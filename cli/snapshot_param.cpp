#include "cli/snapshot_param.hpp"

#include <fmt/format.h>

#include "cli/options.hpp"

namespace qimg {

qcow::Status parse_snapshot_param(const std::string& param_l, const std::string& param_s, SnapshotSpec* out) {
  if (!param_l.empty() && !param_s.empty()) return qcow::Status::invalid("-l and -s cannot be used together");
  if (!param_s.empty()) {
    out->id_or_name = param_s;
    return qcow::Status::ok();
  }
  if (param_l.rfind("snapshot.", 0) != 0) {
    out->id_or_name = param_l;
    return qcow::Status::ok();
  }
  const std::string parse_error = fmt::format("Failed in parsing snapshot param '{}'", param_l);
  OptionList list;
  QCOW_TRY(parse_option_list({param_l}, &list));
  for (const OptionItem& item : list.items) {
    if (item.key == "snapshot.id") out->id = item.value;
    else if (item.key == "snapshot.name") out->name = item.value;
    else return qcow::Status::invalid(fmt::format("Invalid parameter '{}'\n{}", item.key, parse_error));
  }
  if (out->id.empty() && out->name.empty()) return qcow::Status::invalid(parse_error);
  return qcow::Status::ok();
}

qcow::Status resolve_snapshot(const std::string& file, const qcow::OpenOptions& options, SnapshotSpec* spec) {
  if (!spec->id_or_name.empty()) return qcow::Status::ok();
  auto image = qcow::Image::open(file, options);
  if (!image) return image.status();
  for (const qcow::SnapshotInfo& s : image->info().snapshots) {
    if ((spec->id.empty() || s.id == spec->id) && (spec->name.empty() || s.name == spec->name)) {
      spec->id_or_name = s.id;
      return qcow::Status::ok();
    }
  }
  return qcow::Status::error(qcow::ErrorCode::kNotFound, "Can't find snapshot");
}

}  // namespace qimg
