// LUKS1 (inside a qcow2 crypto header area) and qcow2's legacy AES: header
// parsing and validation, key slot unlocking, header creation, and the
// per-sector cipher for guest data. A leaf module: OpenSSL appears only in
// crypto/*.cpp. Secrets never appear in error messages.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qcow/info.hpp"
#include "qcow/status.hpp"

namespace qcow::crypto {

constexpr uint64_t kSectorSize = 512;    // LUKS sectors and IV units
constexpr size_t kLuksHeaderSize = 592;  // the partition header ("phdr")
constexpr int kLuksSlots = 8;

// Encrypts or decrypts whole 512-byte units (the last one may be shorter, a
// multiple of the cipher block size); unit i uses IV sector first_sector + i.
class SectorCipher {
 public:
  virtual ~SectorCipher() = default;
  virtual Status encrypt(uint64_t first_sector, std::span<uint8_t> buf) = 0;
  virtual Status decrypt(uint64_t first_sector, std::span<uint8_t> buf) = 0;
};

struct LuksSlot {
  uint32_t active = 0;  // kSlotActive / kSlotDisabled
  uint32_t iterations = 0;
  std::array<uint8_t, 32> salt{};
  uint32_t key_offset = 0;  // sectors, relative to the LUKS area
  uint32_t stripes = 0;
};

struct LuksHeader {
  std::string cipher_name;  // "aes"
  std::string cipher_mode;  // "xts-plain64"
  std::string hash_spec;    // "sha256"
  uint32_t payload_offset = 0;
  uint32_t key_bytes = 0;
  std::array<uint8_t, 20> mk_digest{};
  std::array<uint8_t, 32> mk_digest_salt{};
  uint32_t mk_digest_iterations = 0;
  std::string uuid;
  std::array<LuksSlot, kLuksSlots> slots{};

  // Parsed from cipher_mode: "xts", "plain64", "" or the IV hash.
  std::string mode, ivgen, ivhash;
};

// Parses and validates a LUKS1 header; area_length is the length of the whole
// LUKS area (key material must lie inside it).
Result<LuksHeader> parse_luks_header(std::span<const uint8_t> bytes, uint64_t area_length);

// What qemu-img info shows in "encrypt".
LuksInfo luks_info(const LuksHeader& h);

// Reads function for the key material: (offset inside the LUKS area, buffer).
using AreaReader = Status (*)(void* ctx, uint64_t offset, std::span<uint8_t> buf);

// Tries every active slot with the passphrase; returns the data cipher.
// kInvalidArgument "Invalid password, cannot unlock any keyslot" when none opens.
Result<std::unique_ptr<SectorCipher>> luks_unlock(const LuksHeader& h, std::string_view passphrase, AreaReader read,
                                                  void* ctx);

struct LuksCreateParams {
  std::string cipher_alg = "aes-256";  // aes-128, aes-192, aes-256
  std::string cipher_mode = "xts";     // xts, cbc, ecb
  std::string ivgen_alg = "plain64";   // plain, plain64, essiv
  std::string ivgen_hash_alg;          // essiv hash; default sha256
  std::string hash_alg = "sha256";
  uint64_t iter_time_ms = 2000;
};

// Builds a complete LUKS area (header plus all key material, zero padded to
// the payload offset) with slot 0 holding a random master key under the
// passphrase; *cipher receives the data cipher.
Result<std::vector<uint8_t>> luks_create(const LuksCreateParams& p, std::string_view passphrase,
                                         std::unique_ptr<SectorCipher>* cipher);

// qcow2's legacy AES (crypt_method 1): AES-128-CBC, plain64 IVs, key = the
// passphrase bytes truncated/zero-padded to 16 bytes.
Result<std::unique_ptr<SectorCipher>> legacy_aes_cipher(std::string_view passphrase);

}  // namespace qcow::crypto
