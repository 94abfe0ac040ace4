// qcow2 on-disk constants, named after the specification (docs/interop/qcow2.txt).
#pragma once

#include <cstdint>

namespace qcow {

constexpr uint32_t kQcowMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kHeaderV2Length = 72;
constexpr uint32_t kHeaderV3MinLength = 104;
constexpr uint32_t kHeaderV3Length = 112;       // through compression_type, padded to 8

constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;        // QEMU's implementation limit: 2 MiB
constexpr uint32_t kMinExtendedL2ClusterBits = 14;
constexpr uint32_t kSubclustersPerCluster = 32;

// Header extension types.
constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtFeatureTable = 0x6803f857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtCrypto = 0x0537be77;
constexpr uint32_t kExtDataFile = 0x44415441;

// incompatible_features bits
constexpr uint64_t kIncompatDirty = 1u << 0;
constexpr uint64_t kIncompatCorrupt = 1u << 1;
constexpr uint64_t kIncompatDataFile = 1u << 2;
constexpr uint64_t kIncompatCompression = 1u << 3;
constexpr uint64_t kIncompatExtendedL2 = 1u << 4;
constexpr uint64_t kIncompatKnown = 0x1f;
// compatible_features bits
constexpr uint64_t kCompatLazyRefcounts = 1u << 0;
// autoclear_features bits
constexpr uint64_t kAutoclearBitmaps = 1u << 0;
constexpr uint64_t kAutoclearDataFileRaw = 1u << 1;

constexpr uint32_t kCryptNone = 0, kCryptAes = 1, kCryptLuks = 2;

// L1 entry: bits 9-55 L2 table offset, 56-62 reserved, 63 COPIED.
constexpr uint64_t kL1eOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kL1eReservedMask = 0x7f000000000001ffull;
// L2 entry: bit 63 COPIED, bit 62 compressed; standard descriptor bits 9-55 host offset,
// bit 0 reads-as-zero (v3, standard L2 only), bits 1-8 and 56-61 reserved.
constexpr uint64_t kOflagCopied = 1ull << 63;
constexpr uint64_t kOflagCompressed = 1ull << 62;
constexpr uint64_t kOflagZero = 1ull << 0;
constexpr uint64_t kL2eOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kL2eStdReservedMask = 0x3f000000000001feull;
// Extended L2 bitmap: bits 0-31 allocated, 32-63 reads-as-zero.
constexpr uint64_t kL2BitmapAllAlloc = 0x00000000ffffffffull;
constexpr uint64_t kL2BitmapAllZero = 0xffffffff00000000ull;
// Refcount table entry: bits 9-63 refcount block offset, 0-8 reserved.
constexpr uint64_t kReftOffsetMask = 0xfffffffffffffe00ull;
constexpr uint64_t kReftReservedMask = 0x1ffull;

// Bounds (QEMU's): nothing read from a file may make us allocate more than these.
constexpr uint64_t kMaxL1Bytes = 32ull << 20;          // QCOW_MAX_L1_SIZE
constexpr uint64_t kMaxReftableBytes = 8ull << 20;     // QCOW_MAX_REFTABLE_SIZE
constexpr uint32_t kMaxSnapshots = 65536;              // QCOW_MAX_SNAPSHOTS
constexpr uint32_t kMaxSnapshotExtraData = 1024;       // QCOW_MAX_SNAPSHOT_EXTRA_DATA
constexpr uint32_t kMaxSnapshotIdLength = 1024;
constexpr uint64_t kMaxSnapshotTableBytes = 64ull << 20;
constexpr uint32_t kMaxBackingFileNameLength = 1023;
constexpr uint32_t kMaxBackingFormatLength = 1023;
constexpr int kMaxBackingDepth = 64;
// Host offsets must stay below 2^56 (64 PB) for L1/L2 to describe them.
constexpr uint64_t kMaxHostOffset = 1ull << 56;

}  // namespace qcow
