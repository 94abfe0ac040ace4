// Crash-consistency harness: records what libqcow writes while a workload runs,
// rebuilds the files a crash or a failing disk could leave behind, and lets
// qemu-img judge every one of them.
//
// A workload is a base image plus either a list of guest operations through
// qcow::Image (writes, zeroes, discards, compressed writes, resizes, flushes) or
// one offline operation (amend, check -r all). The harness
//
//   1. runs it once under a RecordingFile and keeps the op log;
//   2. derives crash states from the log: a process killed after every prefix,
//      power cuts where any subset of the writes since the last flush reached
//      the disk (in log order, so also "the older of two writes won"), and the
//      same with each of those writes torn at 512-byte sectors;
//   3. runs it again under a FaultFile failing one operation (a write with EIO,
//      half a write then EIO, a write or truncate that would grow the file with
//      ENOSPC, a flush, a fallocate/zero_range), lets the library report the
//      error and close, and takes the file as left plus power cuts of its
//      unflushed tail;
//   4. judges each distinct state with `qemu-img check` (no corruption; leaks are
//      fine) and `qemu-img convert -O raw` (every byte reads as in some state
//      between the last acknowledged flush and the last operation that had
//      started), and, where the image has internal snapshots, lists them and
//      reads each with qemu-img: the set of names and every snapshot's content
//      must be those of an allowed state. An offline operation that changes the
//      guest view or the snapshots (snapshot create, delete, apply) names the state
//      after its commit point (Workload::after); each crash state must then be the
//      state before or the one after as a whole.
//
// Guest contents of every step come from a model seeded with qemu-img's reading
// of the base image, so libqcow reads nothing of what it is judged on.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/fault_file.hpp"
#include "qcow/image.hpp"

namespace crash {

using Bytes = std::vector<uint8_t>;

struct Step {
  enum Kind { kWrite, kZero, kDiscard, kCompressed, kFlush, kResize } kind = kWrite;
  uint64_t off = 0, len = 0;  // kResize: off = the new size (smaller: a shrink)
  qcow::Unmap unmap = qcow::Unmap::kNo;
  uint64_t seed = 0;          // data pattern
  bool compressible = false;
  qcow::Preallocation prealloc = qcow::Preallocation::kOff;  // kResize growing
};
std::string describe(const Step& s);
Bytes step_data(const Step& s);

// How a state is judged.
enum class Verdict {
  kConsistent,  // qemu-img check finds no corruption (leaks allowed)
  kRepairable,  // check -r all workloads: no more corruptions than the damaged image had,
                // and a second `qimg check -r all` leaves qemu-img check clean
};

struct Workload {
  std::string name;
  std::string what;  // one line for the report
  // Creates the base image (and its backing files) in `dir`; returns its path.
  std::function<std::string(const std::string& dir)> prepare;
  // Guest operations (close() is appended as a final flush) ...
  std::vector<Step> steps;
  // ... or one offline operation that leaves the guest content unchanged ...
  std::function<qcow::Status(const std::string& path, const qcow::FileWrapFn& wrap)> operation;
  // ... or, when set, makes it read as this image of the prepared directory read
  // right after prepare() (commit writes an overlay's view into its base): every
  // byte reads as before or as that image until the operation completes, then
  // as that image.
  std::string operation_result;
  qcow::OpenOptions open;    // cache sizes and the like for the guest operations
  Verdict verdict = Verdict::kConsistent;
  std::vector<std::string> snapshots;  // the base image's internal snapshots (all of them): their content must survive
  bool v2_with_backing = false;        // discards keep the data (QEMU refuses them)
  bool grows_over_backing = false;     // a longer backing file lies under what resizes grow: it reads as zeros
  // What an `operation` changes, as of its commit point. Contents are named by what
  // they read in the base image: "" is its active image, anything else one of its
  // snapshots (by name).
  struct After {
    std::string active;                                          // the active image afterwards
    std::vector<std::pair<std::string, std::string>> snapshots;  // every snapshot afterwards: name, content
  };
  std::optional<After> after;  // unset: the operation changes no content
};

std::vector<Workload> all_workloads();

// Kinds of states, in the order of the report's columns.
enum class FaultKind { kProcessKill, kPowerCut, kTorn, kWriteEio, kShortWrite, kEnospc, kFlushEio, kFallocEio, kCount };
const char* fault_kind_name(FaultKind k);

struct KindStats {
  uint64_t states = 0;      // distinct states judged
  uint64_t corrupt = 0;     // qemu-img check found corruption (or could not open the image)
  uint64_t lost = 0;        // states with a byte that does not read as any allowed state
  uint64_t runs = 0;        // fault runs (injected kinds)
};

struct Report {
  std::string workload;
  uint64_t ops = 0, flushes = 0;
  std::map<FaultKind, KindStats> kinds;
  std::vector<std::string> failures;  // one line each, with where to find the kept file
  uint64_t total_states() const;
};

struct Options {
  uint64_t states = 150;      // distinct states to judge per workload (spread over the kinds)
  unsigned jobs = 2;          // qemu-img processes at a time
  std::string keep_dir;       // failing states are copied here (empty: not kept)
  bool verbose = false;
};

Report run_workload(const Workload& w, const Options& o);

}  // namespace crash
