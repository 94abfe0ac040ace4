// amend -o refcount_bits: the refcount structures rewritten at a new entry width.
#pragma once

#include <cstdint>

#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// Copies every stored refcount into new blocks of width 2^new_order bits and a new
// table past the end of the file, then switches the header to them (the commit point;
// a crash before it leaves the old structures in charge). The old structures' own
// clusters are free in the new ones. Refuses, with QEMU's message, when a refcount
// does not fit the new width. Needs the driver flushed (no pending refcount changes).
Status change_refcount_width(Qcow2Driver& d, uint32_t new_order);

}  // namespace qcow
