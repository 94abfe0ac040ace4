// Guest byte ranges rounded to allocation units: what rebase and commit write.
//
// A write that covers whole units of the image it lands in (subclusters with
// extended L2, clusters otherwise) never makes the driver copy the rest of a
// unit from the backing file (a partial copy-on-write). Rebase and commit
// therefore round what must change out to whole units and fill the rounding
// from the view that is to be preserved. Pure arithmetic on spans: no I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "qcow/status.hpp"

namespace qcow {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
  bool operator==(const ByteRange&) const = default;
};

// Rounds every range out to multiples of `unit` (a power of two), clamps it to
// [0, limit) (the disk end, which need not be aligned, ends the last unit),
// drops empty ranges, sorts, and merges ranges that overlap or touch.
std::vector<ByteRange> align_to_units(std::vector<ByteRange> ranges, uint64_t unit, uint64_t limit);

// The units where `a` and `b` differ, merged into runs, as offsets from the
// start of the buffers (which must begin on a unit boundary; the last unit may
// be short). a.size() == b.size().
std::vector<ByteRange> differing_units(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t unit);

// `buf` cut into maximal runs of units that are all zeros and of units that
// are not (offsets from the start of buf, which begins on a unit boundary).
struct UnitRun {
  ByteRange range;
  bool zero = false;
};
std::vector<UnitRun> zero_unit_runs(std::span<const uint8_t> buf, uint64_t unit);

// The parts of sorted, disjoint `ranges` that lie inside [offset, offset+length).
std::vector<ByteRange> clip_ranges(const std::vector<ByteRange>& ranges, uint64_t offset, uint64_t length);

// Calls fn for each window of `window` bytes (a power of two; windows start at
// its multiples) that sorted, disjoint `ranges` touch, with the parts inside it,
// then progress(end of the window). A range may span several windows. Stops at
// the first error.
Status for_each_window(const std::vector<ByteRange>& ranges, uint64_t window, uint64_t limit,
                       const std::function<Status(const std::vector<ByteRange>&)>& fn,
                       const std::function<void(uint64_t done)>& progress);

}  // namespace qcow
