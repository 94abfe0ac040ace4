// qimg info: see man/qimg.1.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "qcow/info.hpp"

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct InfoOptions {
  std::string format;                     // -f (empty: probe)
  std::string output = "human";           // --output
  bool backing_chain = false;             // --backing-chain
  bool force_share = false;               // -U
  std::string filename;
};

void register_info(CLI::App& app, std::shared_ptr<InfoOptions> options);
int run_info(const InfoOptions& options);

// The "Format specific information:" block of the human output (qemu's
// bdrv_image_info_specific_dump), empty for formats without one. Shared
// with `qimg io -c info`.
std::string format_specific_human(const qcow::ImageInfo& info);

// The "Snapshot list:" table (qemu's bdrv_snapshot_dump lines), empty without
// snapshots. Shared with `qimg snapshot -l`.
std::string snapshot_list_human(const std::vector<qcow::SnapshotInfo>& snapshots);

}  // namespace qimg
