// Plain descriptions of an image, for `qimg info` and library users.
//
// Value types filled by Image::info() and Image::chain_info(); copies own all
// their data and stay valid after the Image is closed. Field names and
// meanings follow `qemu-img info --output=json`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qcow {

enum class Format { kQcow2, kRaw };
enum class CompressionType { kZlib = 0, kZstd = 1 };
enum class EncryptionFormat { kNone, kAes /* legacy qcow AES, read only */, kLuks };

// The names qemu-img prints: "qcow2"/"raw", "zlib"/"zstd", ""/"aes"/"luks".
const char* format_name(Format f);
const char* compression_type_name(CompressionType c);
const char* encryption_format_name(EncryptionFormat e);

struct SnapshotInfo {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  std::optional<uint64_t> disk_size;
  std::optional<uint64_t> icount;
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
};

struct BitmapInfo {
  std::string name;
  uint32_t granularity = 0;
  bool in_use = false, auto_ = false;
};

// A LUKS header as qemu-img info shows it ("encrypt" in format-specific data).
struct LuksSlotInfo {
  bool active = false;
  uint32_t iters = 0;
  uint64_t key_offset = 0;  // bytes from the start of the LUKS area
  uint32_t stripes = 0;
};

struct LuksInfo {
  std::string cipher_alg;      // "aes-256"
  std::string cipher_mode;     // "xts", "cbc"
  std::string ivgen_alg;       // "plain64", "essiv"
  std::string ivgen_hash_alg;  // essiv only
  std::string hash_alg;        // "sha256"
  std::string uuid;
  uint64_t payload_offset = 0;  // bytes
  uint32_t master_key_iters = 0;
  std::vector<LuksSlotInfo> slots;
};

struct ImageInfo {
  std::string filename;
  Format format = Format::kRaw;
  uint64_t virtual_size = 0;
  uint64_t actual_size = 0;        // host bytes allocated
  uint64_t file_length = 0;
  // qcow2 only:
  uint32_t cluster_size = 0;
  uint32_t subcluster_size = 0;    // the allocation unit: cluster_size / 32 with extended L2
  uint64_t vm_state_offset = 0;    // where QEMU keeps VM state: past the last L2 table's reach
  int version = 0;                 // 2 or 3
  int refcount_bits = 0;
  bool extended_l2 = false;
  bool lazy_refcounts = false;
  bool dirty = false;
  bool corrupt = false;
  CompressionType compression_type = CompressionType::kZlib;
  EncryptionFormat encrypt_format = EncryptionFormat::kNone;
  std::optional<LuksInfo> luks;    // parsed LUKS header (encrypt_format kLuks)
  std::string backing_filename;    // as stored in the image
  std::string full_backing_filename;
  std::string backing_format;
  std::string data_file;           // external data file name as the header records it ("" none)
  bool data_file_raw = false;      // ... and it is a consistent raw image by itself
  std::vector<SnapshotInfo> snapshots;
  std::vector<BitmapInfo> bitmaps;
  uint64_t incompatible_features = 0, compatible_features = 0, autoclear_features = 0;
};

}  // namespace qcow
