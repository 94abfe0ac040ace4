#include "meta/header_store.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <tuple>

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

namespace {

constexpr HeaderField kFields[] = {HeaderField::kSize, HeaderField::kL1Table, HeaderField::kRefcountTable,
                                   HeaderField::kSnapshotTable, HeaderField::kIncompatibleFeatures,
                                   HeaderField::kCompatibleFeatures, HeaderField::kAutoclearFeatures,
                                   HeaderField::kRefcountOrder};

// Everything but the named fields: what only a whole rewrite can change.
bool same_outside_fields(const Header& a, const Header& b) {
  auto names = [](const std::vector<FeatureName>& v) {
    std::vector<std::tuple<uint8_t, uint8_t, std::string>> out;
    for (const auto& f : v) out.emplace_back(f.type, f.bit, f.name);
    return out;
  };
  auto unknown = [](const std::vector<UnknownExtension>& v) {
    std::vector<std::pair<uint32_t, std::vector<uint8_t>>> out;
    for (const auto& e : v) out.emplace_back(e.type, e.data);
    return out;
  };
  auto bitmaps = [](const std::optional<BitmapsExtension>& x) {
    return x ? std::make_tuple(true, x->nb_bitmaps, x->bitmap_directory_size, x->bitmap_directory_offset)
             : std::make_tuple(false, 0u, uint64_t(0), uint64_t(0));
  };
  auto crypto = [](const std::optional<CryptoExtension>& x) {
    return x ? std::make_tuple(true, x->offset, x->length) : std::make_tuple(false, uint64_t(0), uint64_t(0));
  };
  return a.version == b.version && a.backing_file_offset == b.backing_file_offset &&
         a.backing_file_size == b.backing_file_size && a.cluster_bits == b.cluster_bits &&
         a.crypt_method == b.crypt_method && a.header_length == b.header_length &&
         a.compression_type == b.compression_type && a.unknown_header_fields == b.unknown_header_fields &&
         a.backing_file == b.backing_file && a.backing_format == b.backing_format &&
         names(a.feature_names) == names(b.feature_names) && bitmaps(a.bitmaps) == bitmaps(b.bitmaps) &&
         crypto(a.crypto) == crypto(b.crypto) && a.data_file == b.data_file &&
         unknown(a.unknown_extensions) == unknown(b.unknown_extensions);
}

}  // namespace

Status HeaderStore::commit(const Header& next) {
  if (!same_outside_fields(h_, next)) return rewrite(next);
  uint8_t before[kHeaderV3MinLength] = {}, after[kHeaderV3MinLength] = {};
  encode_fixed_header(h_, before);
  encode_fixed_header(next, after);
  const uint32_t on_disk = next.version < 3 ? kHeaderV2Length : kHeaderV3MinLength;
  uint32_t first = UINT32_MAX, end = 0;
  for (HeaderField f : kFields) {
    const HeaderBytes b = header_field_bytes(f);
    if (b.offset + b.length > on_disk || std::memcmp(before + b.offset, after + b.offset, b.length) == 0) continue;
    first = std::min(first, b.offset);
    end = std::max(end, b.offset + b.length);
  }
  if (first >= end) return Status::ok();  // nothing changes
  QCOW_TRY(file_->write_metadata(Structure::kMainHeader, first, std::span<const uint8_t>(after + first, end - first)));
  h_ = next;
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

Status HeaderStore::rewrite_atomic(const Header& h) {
  constexpr uint64_t kSector = 512;
  const uint64_t cs = h.cluster_size();
  uint64_t ext_end = 0;
  auto lean = encode_header_layout(h, {false, 0}, &ext_end);
  if (!lean || ext_end > kSector) return rewrite(h);
  std::vector<uint8_t> bytes = std::move(lean).value();
  if (ext_end + h.backing_file.size() > kSector) {
    // The name goes after everything the current header uses (fields, extensions, name).
    std::vector<uint8_t> current(cs);
    QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(0, current));
    uint64_t used = std::min<uint64_t>(got, cs);
    while (used > 0 && current[used - 1] == 0) --used;
    const uint64_t at = std::max(kSector, align_up(used, kSector));
    if (at + h.backing_file.size() > cs) return rewrite(h);
    QCOW_ASSIGN_OR_RETURN(bytes, encode_header_layout(h, {false, at}, nullptr));
    QCOW_TRY(file_->write_metadata(Structure::kMainHeader, at,
                                   std::span<const uint8_t>(bytes.data() + at, h.backing_file.size())));
    QCOW_TRY(file_->barrier());  // the name is on the disk before sector 0 points at it
  }
  QCOW_ASSIGN_OR_RETURN(Header parsed, parse_header(bytes));
  QCOW_TRY(file_->write_metadata(Structure::kMainHeader, 0, std::span<const uint8_t>(bytes.data(), kSector)));
  h_ = std::move(parsed);
  return Status::ok();
}

}  // namespace qcow
