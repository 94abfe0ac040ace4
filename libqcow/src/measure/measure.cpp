// measure: QEMU 7.2's qcow2_measure() and raw_measure() (block/qcow2.c,
// block/raw-format.c), the arithmetic of qcow2_calc_prealloc_size() and
// qcow2_refcount_metadata_size(), and the LUKS header size of
// qcrypto_block_luks_create().
#include "qcow/measure.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <new>
#include <string_view>

#include "codec/bytes.hpp"

namespace qcow {
namespace {

constexpr uint64_t kMinClusterSize = 512;
constexpr uint64_t kMaxClusterSize = 2 << 20;
constexpr uint64_t kSubclustersPerCluster = 32;
constexpr uint64_t kMaxL1Bytes = 32 << 20;        // QCOW_MAX_L1_SIZE
constexpr uint64_t kReftableEntryBytes = 8;
constexpr uint64_t kL1EntryBytes = 8;
constexpr uint64_t kSectorSize = 512;             // raw images are whole sectors
constexpr uint64_t kBitmapTableEntryBytes = 8;    // BME_TABLE_ENTRY_SIZE
constexpr uint64_t kBitmapDirEntryBytes = 24;     // sizeof(Qcow2BitmapDirEntry) without the name

// LUKS1 as QEMU lays it out: 4 KiB of header, then per key slot the master
// key split into 4000 stripes, each slot rounded up to 4 KiB.
constexpr uint64_t kLuksSlotAlignSectors = 4096 / kSectorSize;
constexpr uint64_t kLuksStripes = 4000;
constexpr uint64_t kLuksKeySlots = 8;

uint64_t round_up(uint64_t n, uint64_t a) { return div_round_up(n, a) * a; }
uint64_t l2_entry_bytes(L2Entries e) { return e == L2Entries::kExtended ? 16 : 8; }

int log2_exact(uint64_t v) {
  int n = 0;
  while (v > 1) {
    v >>= 1;
    ++n;
  }
  return n;
}

// QEMU's QCryptoCipherAlgorithm names and key lengths (crypto/cipher.c alg_key_len).
struct CipherKey {
  std::string_view name;
  uint64_t key_bytes;
};
constexpr std::array<CipherKey, 13> kCipherKeys = {{
    {"aes-128", 16}, {"aes-192", 24}, {"aes-256", 32}, {"des", 8}, {"3des", 24},
    {"cast5-128", 16}, {"serpent-128", 16}, {"serpent-192", 24}, {"serpent-256", 32},
    {"twofish-128", 16}, {"twofish-192", 24}, {"twofish-256", 32}, {"sm4", 16},
}};
constexpr std::array<std::string_view, 4> kCipherModes = {"ecb", "cbc", "xts", "ctr"};
constexpr std::array<std::string_view, 3> kIvGenerators = {"plain", "plain64", "essiv"};
constexpr std::array<std::string_view, 7> kHashes = {"md5", "sha1", "sha224", "sha256", "sha384", "sha512",
                                                      "ripemd160"};

template <class List>
bool listed(const List& list, std::string_view name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

Status bad_value(std::string_view parameter, std::string_view value) {
  return Status::invalid(fmt::format("Parameter '{}' does not accept value '{}'", parameter, value));
}

// Bytes of [offset, ...) clusters holding data, counted as QEMU does: every
// cluster of the target that a data run touches is counted once; zero runs
// (and anything that reads as zeros) cost nothing.
Result<uint64_t> data_clusters_bytes(Image& source, uint64_t cluster_size) {
  uint64_t required = 0;
  uint64_t next = 0;  // end of the last counted cluster
  Status s = source.block_status(0, source.size(), [&](const Extent& e) {
    if (e.zero || !e.data || !e.present) return true;
    uint64_t start = std::max(e.offset, next);
    uint64_t end = e.offset + e.length;
    if (start >= end) return true;
    next = round_up(end, cluster_size);
    required += next - start / cluster_size * cluster_size;
    return true;
  });
  if (!s.is_ok()) return s.prepend("Unable to get block status: ");
  return required;
}

// qcow2_get_persistent_dirty_bitmap_size(): every bitmap fully allocated, its
// table, and its share of the bitmap directory.
uint64_t bitmaps_bytes(const ImageInfo& info, uint64_t bitmap_size, uint64_t cluster_size) {
  uint64_t total = 0, directory = 0;
  for (const BitmapInfo& b : info.bitmaps) {
    if (b.granularity == 0) continue;  // the source validated them; never divide by zero
    uint64_t bytes = div_round_up(div_round_up(bitmap_size, b.granularity), 8);
    uint64_t clusters = div_round_up(bytes, cluster_size);
    total += clusters * cluster_size;
    total += round_up(clusters * kBitmapTableEntryBytes, cluster_size);
    directory += round_up(kBitmapDirEntryBytes + b.name.size(), 8);
  }
  return total + round_up(directory, cluster_size);
}

Result<Measurement> measure_raw(const MeasureOptions& o, Image* source) {
  Measurement m;
  m.required = source ? source->size() : round_up(o.size, kSectorSize);
  m.fully_allocated = m.required;  // unallocated sectors count towards a raw file's size
  return m;
}

Result<Measurement> measure_qcow2(const MeasureOptions& o, Image* source) {
  const L2Entries entries = o.extended_l2 ? L2Entries::kExtended : L2Entries::kStandard;
  QCOW_TRY(check_cluster_size(o.cluster_size, entries));
  if (o.version != 2 && o.version != 3) return Status::invalid(fmt::format("Invalid qcow2 version {}", o.version));
  QCOW_TRY(check_refcount_bits(o.refcount_bits < 0 ? 0 : uint64_t(o.refcount_bits), o.version));
  const uint64_t cluster_size = o.cluster_size;

  uint64_t luks_payload = 0;
  if (o.encrypt.format == "luks") {
    QCOW_ASSIGN_OR_RETURN(uint64_t header, luks_header_bytes(o.encrypt));
    luks_payload = round_up(header, cluster_size);
  }

  uint64_t virtual_size = round_up(o.size, cluster_size);
  const uint64_t l2e = l2_entry_bytes(entries);
  const uint64_t l2_tables = div_round_up(virtual_size / cluster_size, cluster_size / l2e);
  if (l2_tables > kMaxL1Bytes / kL1EntryBytes)
    return Status::invalid("The image size is too large (try using a larger cluster size)");

  uint64_t required = 0;  // data clusters
  if (source) {
    virtual_size = round_up(source->size(), cluster_size);
    if (o.has_backing_file) {
      required = virtual_size;  // the new backing file may share nothing with the source
    } else {
      QCOW_ASSIGN_OR_RETURN(required, data_clusters_bytes(*source, cluster_size));
    }
  }
  if (o.preallocation == Preallocation::kFull || o.preallocation == Preallocation::kFalloc) required = virtual_size;

  Measurement m;
  m.fully_allocated = luks_payload + qcow2_fully_allocated_size(virtual_size, cluster_size, log2_exact(uint64_t(o.refcount_bits)), entries);
  m.required = m.fully_allocated - virtual_size + required;
  if (source && o.version >= 3) {
    ImageInfo info = source->info();
    if (info.format == Format::kQcow2 && info.version >= 3) m.bitmaps = bitmaps_bytes(info, source->size(), cluster_size);
  }
  return m;
}

}  // namespace

Status check_cluster_size(uint64_t cluster_size, L2Entries entries) {
  if (!is_power_of_two(cluster_size) || cluster_size < kMinClusterSize || cluster_size > kMaxClusterSize)
    return Status::invalid(fmt::format("Cluster size must be a power of two between {} and {}k", kMinClusterSize,
                                       kMaxClusterSize >> 10));
  const uint64_t min_extended = kMinClusterSize * kSubclustersPerCluster;
  if (entries == L2Entries::kExtended && cluster_size < min_extended)
    return Status::invalid(fmt::format(
        "Extended L2 entries are only supported with cluster sizes of at least {} bytes", min_extended));
  return Status::ok();
}

Status check_refcount_bits(uint64_t refcount_bits, int version) {
  if (refcount_bits > 64 || !is_power_of_two(refcount_bits))
    return Status::invalid("Refcount width must be a power of two and may not exceed 64 bits");
  if (version < 3 && refcount_bits != 16)
    return Status::invalid(
        "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or "
        "greater)");
  return Status::ok();
}

Result<uint64_t> luks_header_bytes(const EncryptOptions& e) {
  auto key = std::find_if(kCipherKeys.begin(), kCipherKeys.end(), [&](const CipherKey& k) { return k.name == e.cipher_alg; });
  if (key == kCipherKeys.end()) return bad_value("cipher-alg", e.cipher_alg);
  if (!listed(kCipherModes, e.cipher_mode)) return bad_value("cipher-mode", e.cipher_mode);
  if (!listed(kIvGenerators, e.ivgen_alg)) return bad_value("ivgen-alg", e.ivgen_alg);
  if (!e.ivgen_hash_alg.empty() && !listed(kHashes, e.ivgen_hash_alg)) return bad_value("ivgen-hash-alg", e.ivgen_hash_alg);
  if (!listed(kHashes, e.hash_alg)) return bad_value("hash-alg", e.hash_alg);
  const uint64_t master_key_bytes = key->key_bytes * (e.cipher_mode == "xts" ? 2 : 1);
  const uint64_t slot_sectors = round_up(div_round_up(master_key_bytes * kLuksStripes, kSectorSize), kLuksSlotAlignSectors);
  return (kLuksSlotAlignSectors + kLuksKeySlots * slot_sectors) * kSectorSize;
}

uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, int refcount_order) {
  const uint64_t blocks_per_table_cluster = cluster_size / kReftableEntryBytes;
  const uint64_t refcounts_per_block = cluster_size * 8 >> refcount_order;
  // The fixed point where no further refcount blocks or table clusters are
  // needed to count every cluster, themselves included.
  uint64_t table = 0, blocks = 0, n = 0, last = 0;
  do {
    last = n;
    blocks = div_round_up(clusters + table + blocks, refcounts_per_block);
    table = div_round_up(blocks, blocks_per_table_cluster);
    n = clusters + blocks + table;
  } while (n != last);
  return (blocks + table) * cluster_size;
}

uint64_t qcow2_fully_allocated_size(uint64_t virtual_size, uint64_t cluster_size, int refcount_order,
                                    L2Entries entries) {
  const uint64_t aligned = round_up(virtual_size, cluster_size);
  const uint64_t l2e = l2_entry_bytes(entries);
  uint64_t meta = cluster_size;  // header
  const uint64_t l2_entries = round_up(aligned / cluster_size, cluster_size / l2e);
  meta += l2_entries * l2e;
  const uint64_t l1_entries = round_up(l2_entries * l2e / cluster_size, cluster_size / kL1EntryBytes);
  meta += l1_entries * kL1EntryBytes;
  meta += qcow2_refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_order);
  return meta + aligned;
}

Result<Measurement> measure(const MeasureOptions& options, Image* source) {
  if (options.size > uint64_t(INT64_MAX)) return Status::invalid("Image size must be less than 8 EiB!");
  try {
    if (options.format == Format::kRaw) return measure_raw(options, source);
    return measure_qcow2(options, source);
  } catch (const std::bad_alloc&) {
    return Status::limit("out of memory while measuring");
  }
}

}  // namespace qcow
