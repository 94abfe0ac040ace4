// make_image_empty: after a commit, every cluster of the image reads from its
// backing file again (QEMU's qcow2_make_empty, the discard fallback it takes
// for images with snapshots or compat=0.10; see include/qcow/commit.hpp).
//
// Through the driver's L2 choke point: an L2 table shared with a snapshot is
// copied before its entries change (ensure_l2_writable), and each old host
// cluster is released (freed at the next flush, after the tables that stop
// pointing at it are written).
#include <algorithm>
#include <new>

#include "format/constants.hpp"
#include "qcow/commit.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status make_image_empty(Image& image) {
  if (image.format() != Format::kQcow2) return Status::unsupported(image.path() + ": raw images cannot be emptied");
  try {
    auto& d = static_cast<Qcow2Driver&>(Image::Internals::driver(image));
    const Geometry& g = d.geometry();
    const uint64_t size = image.size();
    for (uint64_t l1i = 0; l1i < d.l1_table().size() && l1i * g.l2_coverage() < size; ++l1i) {
      if (!(d.l1_table()[l1i] & kL1eOffsetMask)) continue;  // no L2 table: nothing allocated here
      const uint64_t end = std::min(size, (l1i + 1) * g.l2_coverage());
      for (uint64_t pos = l1i * g.l2_coverage(); pos < end; pos += g.cluster_size) {
        QCOW_ASSIGN_OR_RETURN(L2Entry e, d.get_l2_entry(pos));
        if (e == L2Entry{}) continue;
        QCOW_TRY(d.ensure_l2_writable(pos).status());
        QCOW_TRY(d.set_l2_entry(pos, L2Entry{}));
        QCOW_TRY(d.release_host(e));
      }
    }
    return image.flush();
  } catch (const std::bad_alloc&) {
    return Status::limit(image.path() + ": out of memory");
  }
}

}  // namespace qcow
