// CountingFile: tallies calls and bytes for the bench, then forwards.

#include "qcow/file.hpp"

namespace qcow {

Result<size_t> CountingFile::read_at(uint64_t o, std::span<uint8_t> b) {
  counters_->reads++;
  Result<size_t> r = inner_->read_at(o, b);
  if (r.is_ok()) counters_->bytes_read += r.value();  // what came back, not what was asked
  return r;
}

Status CountingFile::write_at(uint64_t o, std::span<const uint8_t> b) {
  counters_->writes++;
  counters_->bytes_written += b.size();
  return inner_->write_at(o, b);
}

Status CountingFile::flush() {
  counters_->flushes++;
  return inner_->flush();
}

Status CountingFile::allocate(uint64_t o, uint64_t l) {
  counters_->fallocates++;
  return inner_->allocate(o, l);
}

// Counted as an fallocate: no data bytes travel (as with QEMU's write_zeroes).
Status CountingFile::zero_range(uint64_t o, uint64_t l) {
  counters_->fallocates++;
  return inner_->zero_range(o, l);
}

}  // namespace qcow
