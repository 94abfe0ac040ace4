// Writing zeros where no zeroing call exists (or where the zeros must really be
// written): one shared buffer of zeros, handed out in pieces.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "qcow/status.hpp"

namespace qcow {

// 1 MiB of zeros, allocated once.
std::span<const uint8_t> zero_buffer();

// Calls write(offset, zeros) over [offset, offset + length) in pieces of zero_buffer().
template <class Write>
Status write_zeros(uint64_t offset, uint64_t length, Write&& write) {
  const std::span<const uint8_t> zeros = zero_buffer();
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min<uint64_t>(zeros.size(), length - done);
    QCOW_TRY(write(offset + done, zeros.first(n)));
    done += n;
  }
  return Status::ok();
}

}  // namespace qcow
