// Byte-buffer helpers libqcow uses itself, public so front ends classify data the same
// way (qimg convert's zero detection) instead of keeping copies of them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qcow {

// ceil(v / d), with no overflow near 2^64 (d > 0).
inline uint64_t div_round_up(uint64_t v, uint64_t d) { return v / d + (v % d != 0); }

// True when every byte of [p, p+len) is zero; fast path compares words.
bool buffer_is_zero(const uint8_t* p, size_t len);

}  // namespace qcow
