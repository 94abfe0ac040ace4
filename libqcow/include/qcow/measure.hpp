// Measuring a new image before creating it (qemu-img measure): how many
// bytes a qcow2 or raw image needs for given creation options, either empty
// with a virtual size or holding the data of an existing image.
//
// The figures are QEMU 7.2's, byte for byte: `required` is the file size a
// conversion produces at most, `fully_allocated` the size with every cluster
// allocated (preallocation=full), `bitmaps` the room the source's persistent
// dirty bitmaps take (only when both the source and a compat=1.1 qcow2 target
// support them). Metadata is counted as for a fully allocated image, so
// `required` overestimates small images, as QEMU's does.
//
// Pure functions except measure(), which reads the source's block status.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

// What the new image will be. Only the fields of its format matter.
struct MeasureOptions {
  Format format = Format::kRaw;
  // Virtual size without a source. With a source its size is used instead,
  // but this value is still checked against the L1 limit (as QEMU does).
  uint64_t size = 0;
  // qcow2:
  uint32_t cluster_size = 65536;
  int version = 3;                 // 2 (compat 0.10) or 3 (compat 1.1)
  bool extended_l2 = false;
  int refcount_bits = 16;
  Preallocation preallocation = Preallocation::kOff;
  // The new image gets a backing file: every cluster of the source may have to
  // be stored, since the backing file may share none of it.
  bool has_backing_file = false;
  EncryptOptions encrypt;          // format "luks" adds its header; others are ignored
};

struct Measurement {
  uint64_t required = 0;
  uint64_t fully_allocated = 0;
  std::optional<uint64_t> bitmaps;  // qemu-img prints it only when set
};

// Measures a new image for `options`, holding `source`'s guest data when
// source is not null (its whole backing chain; zero ranges cost nothing).
// Errors: kInvalidArgument with QEMU's messages (bad cluster size or
// refcount width, an image too large for the L1 table, unknown LUKS
// algorithm names), and the source's block status errors (kCorrupt, kIo).
Result<Measurement> measure(const MeasureOptions& options, Image* source);

// Standard (8-byte) or extended (16-byte, with subcluster bitmaps) L2 entries.
enum class L2Entries { kStandard, kExtended };

// The checks QEMU's qcow2 driver makes on these creation options, with its
// messages ("Cluster size must be a power of two between 512 and 2048k", ...).
Status check_cluster_size(uint64_t cluster_size, L2Entries entries);
Status check_refcount_bits(uint64_t refcount_bits, int version);

// Bytes of the LUKS area QEMU writes for these options: the LUKS header and
// eight key slots of key material (4000 anti-forensic stripes of the master
// key each), before the payload. Accepts every cipher name QEMU knows
// ("aes-256", "twofish-128", "cast5-128", ...), mode ("xts", "cbc", "ecb",
// "ctr"), IV generator and hash; kInvalidArgument names the bad parameter.
Result<uint64_t> luks_header_bytes(const EncryptOptions& encrypt);

// QEMU's qcow2_calc_prealloc_size(): header, L2 tables, L1 table, refcount
// table and blocks, and the data of a fully allocated image.
uint64_t qcow2_fully_allocated_size(uint64_t virtual_size, uint64_t cluster_size, int refcount_order,
                                    L2Entries entries);

// QEMU's qcow2_refcount_metadata_size(): the refcount table and blocks (in
// bytes) that count `clusters` clusters plus themselves.
uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, int refcount_order);

}  // namespace qcow
