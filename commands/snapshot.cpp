#include "commands/snapshot.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/output.hpp"
#include "cli/secrets.hpp"
#include "commands/info.hpp"
#include "qcow/image.hpp"
#include "qcow/snapshot.hpp"

namespace qimg {

void register_snapshot(CLI::App& app, std::shared_ptr<SnapshotOptions> o) {
  add_secret_options(app);
  app.add_flag("-l", o->list, "List the snapshots");
  app.add_option("-a", o->apply, "Apply SNAPSHOT (by id, then by name): the image reverts to it")->allow_extra_args(false);
  app.add_option("-c", o->create, "Create a snapshot named SNAPSHOT of the current state")->allow_extra_args(false);
  app.add_option("-d", o->remove, "Delete the snapshot named SNAPSHOT")->allow_extra_args(false);
  app.add_flag("-U,--force-share", o->force_share, "Open without taking the lock (-l only)");
  app.add_flag("-q", o->quiet, "Quiet");
  app.add_option("files", o->files, "FILE");
}

namespace {

enum class Action { kNone, kList, kApply, kCreate, kDelete };

// The errno a failed library call stands for, as QEMU's functions return them.
int error_number(const qcow::Status& s) {
  if (s.saved_errno()) return s.saved_errno();
  switch (s.code()) {
    case qcow::ErrorCode::kNotFound: return ENOENT;
    case qcow::ErrorCode::kLimit:  // a refcount that would overflow: QEMU's -EINVAL
    case qcow::ErrorCode::kInvalidArgument: return EINVAL;
    case qcow::ErrorCode::kNoSpace: return ENOSPC;
    case qcow::ErrorCode::kUnsupported: return ENOTSUP;
    case qcow::ErrorCode::kReadOnly: return EACCES;
    case qcow::ErrorCode::kLocked: return EAGAIN;
    default: return EIO;
  }
}

// qemu-img keeps 255 bytes of a new snapshot's name (QEMUSnapshotInfo.name).
std::string qemu_name(const std::string& name) { return name.substr(0, 255); }

}  // namespace

int run_snapshot(const SnapshotOptions& o) {
  const size_t actions = size_t(o.list) + o.apply.size() + o.create.size() + o.remove.size();
  if (actions > 1) return fail("Cannot mix '-l', '-a', '-c', '-d'");
  if (o.files.size() != 1) return fail("Expecting one image file name");
  Action action = Action::kNone;
  std::string name;
  if (o.list) action = Action::kList;
  if (!o.apply.empty()) action = Action::kApply, name = o.apply[0];
  if (!o.create.empty()) action = Action::kCreate, name = o.create[0];
  if (!o.remove.empty()) action = Action::kDelete, name = o.remove[0];

  // Opened as qemu-img opens it (backing chain, lock, its messages) before anything changes.
  qcow::OpenOptions open;
  open.writable = action != Action::kList;
  open.force_share = o.force_share;
  if (o.force_share && open.writable)
    return fail(fmt::format("Could not open '{}': force-share=on can only be used with read-only images", o.files[0]));
  qcow::ImageInfo info;
  bool raw = false;
  {
    auto image = open_source_image(o.files[0], "", open);
    if (!image) return fail(image.status());
    info = image->info();
    raw = image->format() != qcow::Format::kQcow2;
    if (auto s = image->close(); !s.is_ok()) return fail(s);
  }  // and its lock released
  // The file itself (with --image-opts, the one the option list names), its key and checks.
  const std::string path = info.filename;
  qcow::SnapshotOptions options;
  {
    std::string filename = o.files[0], format;
    qcow::OpenOptions applied;
    if (auto s = apply_secret_options(&filename, &format, &applied); !s.is_ok()) return fail(s);
    options.key_secret = applied.key_secret;
    options.overlap_check = applied.overlap_check;
  }

  switch (action) {
    case Action::kNone: return 0;
    case Action::kList: {
      std::string out = snapshot_list_human(info.snapshots);
      std::fwrite(out.data(), 1, out.size(), stdout);
      return 0;
    }
    case Action::kCreate: {
      if (raw) return fail(fmt::format("Could not create snapshot '{}': -{} ({})", name, ENOTSUP, std::strerror(ENOTSUP)));
      auto created = qcow::create_snapshot(path, qemu_name(name), options);
      if (!created) {
        const int e = error_number(created.status());
        return fail(fmt::format("Could not create snapshot '{}': -{} ({})", name, e, std::strerror(e)));
      }
      return 0;
    }
    case Action::kApply: {
      if (raw) return fail(fmt::format("Could not apply snapshot '{}': Block driver does not support snapshots", name));
      auto s = qcow::apply_snapshot(path, name, qcow::SnapshotMatch::kIdOrName, options);
      if (!s.is_ok())
        return fail(fmt::format("Could not apply snapshot '{}': Failed to load snapshot: {}", name,
                                std::strerror(error_number(s))));
      return 0;
    }
    case Action::kDelete: {
      auto s = raw ? qcow::Status::error(qcow::ErrorCode::kNotFound, "no snapshots")
                   : qcow::delete_snapshot(path, name, qcow::SnapshotMatch::kName, options);
      if (s.code() == qcow::ErrorCode::kNotFound)
        return fail(fmt::format("Could not delete snapshot '{}': snapshot not found", name));
      if (!s.is_ok())
        return fail(fmt::format("Could not delete snapshot '{}': Failed to remove snapshot from snapshot list: {}", name,
                                std::strerror(error_number(s))));
      return 0;
    }
  }
  return 0;
}

}  // namespace qimg
