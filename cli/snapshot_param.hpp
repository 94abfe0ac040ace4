// qemu-img's internal-snapshot arguments of convert and measure:
//   -l snapshot.id=ID[,snapshot.name=NAME]   (either key, or both)
//   -l ID_OR_NAME, or convert's old -s ID_OR_NAME
// and their resolution to the snapshot the library opens.
#pragma once

#include <string>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

struct SnapshotSpec {
  std::string id, name;    // -l snapshot.id= / snapshot.name=
  std::string id_or_name;  // -s, or -l without "snapshot."
  bool given() const { return !id.empty() || !name.empty() || !id_or_name.empty(); }
};

// Parses -l (`param_l`) and -s (`param_s`; empty when the command has none).
// Errors carry qemu-img's messages.
qcow::Status parse_snapshot_param(const std::string& param_l, const std::string& param_s, SnapshotSpec* out);

// Resolves snapshot.id / snapshot.name (both must match when both are given)
// to the id the library opens; an id-or-name is left to the library.
// kNotFound "Can't find snapshot" when no snapshot matches.
qcow::Status resolve_snapshot(const std::string& file, const qcow::OpenOptions& options, SnapshotSpec* spec);

}  // namespace qimg
