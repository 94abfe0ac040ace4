// Rebuilding the refcount structures from scratch: for images opened dirty
// (lazy refcounts) and check -r all when patching cannot work (amend's
// refcount_bits change copies the stored refcounts: amend/refcount_width.hpp). Writes new blocks and a new table past the
// end of the file, then Qcow2Driver::install_refcounts() commits the switch.
#pragma once

#include <cstdint>
#include <optional>

#include "qcow/check.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status rebuild_refcounts(Qcow2Driver& d, uint64_t memory_limit = kDefaultCheckMemoryLimit);

}  // namespace qcow
