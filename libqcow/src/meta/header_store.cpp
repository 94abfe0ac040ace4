#include "meta/header_store.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "codec/bytes.hpp"
#include "format/constants.hpp"

namespace qcow {

Status HeaderStore::update(std::initializer_list<HeaderField> fields, const std::function<void(Header&)>& change) {
  Header next = h_;
  change(next);
  const uint32_t on_disk = next.version < 3 ? kHeaderV2Length : kHeaderV3MinLength;
  uint32_t first = UINT32_MAX, end = 0;
  for (HeaderField f : fields) {
    HeaderBytes b = header_field_bytes(f);
    if (b.offset + b.length > on_disk)
      return Status::internal(fmt::format("{}: header field at byte {} does not exist in a version {} header", file_->path(),
                                          b.offset, next.version));
    first = std::min(first, b.offset);
    end = std::max(end, b.offset + b.length);
  }
  if (first >= end) return Status::internal("header update without fields");
  uint8_t bytes[kHeaderV3MinLength] = {};
  encode_fixed_header(next, bytes);
  QCOW_TRY(file_->write_metadata(Structure::kMainHeader, first, std::span<const uint8_t>(bytes + first, end - first)));
  h_ = std::move(next);
  return Status::ok();
}

Status HeaderStore::rewrite(const Header& h) {
  QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, encode_header(h));
  QCOW_ASSIGN_OR_RETURN(Header parsed, parse_header(bytes));
  // Only the part in use: the tail of the cluster is zeros, and a shorter write
  // spans fewer sectors that a crash could tear.
  uint64_t used = bytes.size();
  while (used > 0 && bytes[used - 1] == 0) --used;
  used = std::max<uint64_t>(align_up(used, 512), kHeaderV3MinLength);
  QCOW_TRY(file_->write_metadata(Structure::kMainHeader, 0, std::span<const uint8_t>(bytes.data(), used)));
  h_ = std::move(parsed);
  return Status::ok();
}

}  // namespace qcow
