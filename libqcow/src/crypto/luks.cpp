// LUKS1 and legacy qcow AES with OpenSSL (see luks.hpp and
// /work/shared/reference/luks1-notes.md for the format).
#include "crypto/luks.hpp"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "codec/bytes.hpp"

namespace qcow::crypto {
namespace {

constexpr uint8_t kMagic[6] = {'L', 'U', 'K', 'S', 0xBA, 0xBE};
constexpr uint32_t kSlotActive = 0x00AC71F3;
constexpr uint32_t kSlotDisabled = 0x0000DEAD;
constexpr uint32_t kStripes = 4000;
constexpr uint32_t kMinIterations = 1000;

// Key material that is wiped when it goes out of scope.
struct Secret {
  std::vector<uint8_t> b;
  explicit Secret(size_t n = 0) : b(n, 0) {}
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  ~Secret() {
    if (!b.empty()) OPENSSL_cleanse(b.data(), b.size());
  }
  uint8_t* data() { return b.data(); }
  size_t size() const { return b.size(); }
};

std::string field_string(const uint8_t* p, size_t n) {
  size_t len = strnlen(reinterpret_cast<const char*>(p), n);
  return std::string(reinterpret_cast<const char*>(p), len);
}

const EVP_MD* digest_by_name(const std::string& name) {
  static const char* const kAllowed[] = {"sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160"};
  for (const char* a : kAllowed)
    if (name == a) return EVP_get_digestbyname(a);
  return nullptr;
}

Status pbkdf2(std::string_view pass, std::span<const uint8_t> salt, uint32_t iterations, const EVP_MD* md,
              std::span<uint8_t> out) {
  if (iterations > uint32_t(INT32_MAX)) return Status::invalid("PBKDF2 iteration count too large");
  if (PKCS5_PBKDF2_HMAC(pass.data(), int(pass.size()), salt.data(), int(salt.size()), int(iterations), md, int(out.size()),
                        out.data()) != 1)
    return Status::internal("PBKDF2 failed");
  return Status::ok();
}

// AF diffusion: each digest-sized piece j becomes H(be32(j) || piece), truncated.
Status diffuse(std::span<uint8_t> d, const EVP_MD* md) {
  const size_t h = size_t(EVP_MD_get_size(md));
  uint8_t out[EVP_MAX_MD_SIZE];
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) return Status::limit("out of memory");
  Status s = Status::ok();
  for (size_t j = 0, pos = 0; pos < d.size(); ++j, pos += h) {
    size_t n = std::min(h, d.size() - pos);
    uint8_t iv[4];
    store_be32(iv, uint32_t(j));
    unsigned int olen = 0;
    if (EVP_DigestInit_ex(ctx, md, nullptr) != 1 || EVP_DigestUpdate(ctx, iv, 4) != 1 ||
        EVP_DigestUpdate(ctx, d.data() + pos, n) != 1 || EVP_DigestFinal_ex(ctx, out, &olen) != 1) {
      s = Status::internal("hash failed");
      break;
    }
    std::memcpy(d.data() + pos, out, n);
  }
  EVP_MD_CTX_free(ctx);
  OPENSSL_cleanse(out, sizeof out);
  return s;
}

Status af_merge(std::span<const uint8_t> split, uint32_t stripes, const EVP_MD* md, std::span<uint8_t> key) {
  const size_t n = key.size();
  Secret d(n);
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    for (size_t k = 0; k < n; ++k) d.b[k] ^= split[size_t(i) * n + k];
    QCOW_TRY(diffuse(d.b, md));
  }
  for (size_t k = 0; k < n; ++k) key[k] = d.b[k] ^ split[size_t(stripes - 1) * n + k];
  return Status::ok();
}

Status af_split(std::span<const uint8_t> key, uint32_t stripes, const EVP_MD* md, std::span<uint8_t> split) {
  const size_t n = key.size();
  Secret d(n);
  if (RAND_bytes(split.data(), int(size_t(stripes - 1) * n)) != 1) return Status::internal("random number generator failed");
  for (uint32_t i = 0; i + 1 < stripes; ++i) {
    for (size_t k = 0; k < n; ++k) d.b[k] ^= split[size_t(i) * n + k];
    QCOW_TRY(diffuse(d.b, md));
  }
  for (size_t k = 0; k < n; ++k) split[size_t(stripes - 1) * n + k] = d.b[k] ^ key[k];
  return Status::ok();
}

enum class Mode { kXts, kCbc, kEcb };
enum class IvGen { kPlain, kPlain64, kEssiv };

const EVP_CIPHER* aes_cipher(Mode m, size_t aes_key_bytes) {
  switch (m) {
    case Mode::kXts: return aes_key_bytes == 16 ? EVP_aes_128_xts() : aes_key_bytes == 32 ? EVP_aes_256_xts() : nullptr;
    case Mode::kCbc:
      return aes_key_bytes == 16 ? EVP_aes_128_cbc() : aes_key_bytes == 24 ? EVP_aes_192_cbc()
             : aes_key_bytes == 32 ? EVP_aes_256_cbc() : nullptr;
    case Mode::kEcb:
      return aes_key_bytes == 16 ? EVP_aes_128_ecb() : aes_key_bytes == 24 ? EVP_aes_192_ecb()
             : aes_key_bytes == 32 ? EVP_aes_256_ecb() : nullptr;
  }
  return nullptr;
}

class AesSectorCipher final : public SectorCipher {
 public:
  ~AesSectorCipher() override {
    EVP_CIPHER_CTX_free(enc_);
    EVP_CIPHER_CTX_free(dec_);
    EVP_CIPHER_CTX_free(essiv_);
  }

  // key: the data cipher's whole key (both halves for XTS).
  Status init(Mode mode, IvGen ivgen, const EVP_MD* ivhash, std::span<const uint8_t> key) {
    mode_ = mode;
    ivgen_ = ivgen;
    const EVP_CIPHER* c = aes_cipher(mode, mode == Mode::kXts ? key.size() / 2 : key.size());
    if (!c) return Status::unsupported(fmt::format("unsupported AES key size {} bytes", key.size()));
    enc_ = EVP_CIPHER_CTX_new();
    dec_ = EVP_CIPHER_CTX_new();
    if (!enc_ || !dec_) return Status::limit("out of memory");
    if (EVP_CipherInit_ex(enc_, c, nullptr, key.data(), nullptr, 1) != 1 ||
        EVP_CipherInit_ex(dec_, c, nullptr, key.data(), nullptr, 0) != 1)
      return Status::unsupported("the cipher rejected the key");
    EVP_CIPHER_CTX_set_padding(enc_, 0);
    EVP_CIPHER_CTX_set_padding(dec_, 0);
    if (ivgen == IvGen::kEssiv) {
      // ESSIV: ECB cipher keyed with hash(key); its key size follows the digest size.
      uint8_t salt[EVP_MAX_MD_SIZE];
      unsigned int slen = 0;
      if (EVP_Digest(key.data(), key.size(), salt, &slen, ivhash, nullptr) != 1) return Status::internal("hash failed");
      size_t klen = slen >= 32 ? 32 : slen >= 24 ? 24 : 16;
      const EVP_CIPHER* e = aes_cipher(Mode::kEcb, klen);
      essiv_ = EVP_CIPHER_CTX_new();
      bool ok = essiv_ && e && EVP_CipherInit_ex(essiv_, e, nullptr, salt, nullptr, 1) == 1;
      OPENSSL_cleanse(salt, sizeof salt);
      if (!ok) return Status::internal("ESSIV setup failed");
      EVP_CIPHER_CTX_set_padding(essiv_, 0);
    }
    return Status::ok();
  }

  Status encrypt(uint64_t first_sector, std::span<uint8_t> buf) override { return run(enc_, first_sector, buf); }
  Status decrypt(uint64_t first_sector, std::span<uint8_t> buf) override { return run(dec_, first_sector, buf); }

 private:
  Status make_iv(uint64_t sector, uint8_t iv[16]) {
    std::memset(iv, 0, 16);
    if (ivgen_ == IvGen::kPlain) sector &= 0xffffffffu;
    for (int i = 0; i < 8; ++i) iv[i] = uint8_t(sector >> (8 * i));
    if (ivgen_ == IvGen::kEssiv) {
      int n = 0;
      if (EVP_EncryptUpdate(essiv_, iv, &n, iv, 16) != 1 || n != 16) return Status::internal("ESSIV failed");
    }
    return Status::ok();
  }

  Status run(EVP_CIPHER_CTX* ctx, uint64_t sector, std::span<uint8_t> buf) {
    if (buf.size() % 16) return Status::internal("encrypted I/O is not a multiple of the cipher block size");
    uint8_t iv[16];
    for (size_t pos = 0; pos < buf.size(); pos += kSectorSize, ++sector) {
      size_t n = std::min<size_t>(kSectorSize, buf.size() - pos);
      int out = 0;
      if (mode_ != Mode::kEcb) {
        QCOW_TRY(make_iv(sector, iv));
        if (EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, -1) != 1) return Status::internal("cipher IV setup failed");
      }
      if (EVP_CipherUpdate(ctx, buf.data() + pos, &out, buf.data() + pos, int(n)) != 1 || size_t(out) != n)
        return Status::internal("cipher operation failed");
    }
    return Status::ok();
  }

  Mode mode_ = Mode::kXts;
  IvGen ivgen_ = IvGen::kPlain64;
  EVP_CIPHER_CTX* enc_ = nullptr;
  EVP_CIPHER_CTX* dec_ = nullptr;
  EVP_CIPHER_CTX* essiv_ = nullptr;
};

// Validates the cipher spec of a header (or of create parameters) and builds the cipher for a key.
Status check_spec(const std::string& name, const std::string& mode, const std::string& ivgen, const std::string& ivhash,
                  uint32_t key_bytes) {
  if (name != "aes") return Status::unsupported(fmt::format("Unsupported cipher '{}'", name));
  if (mode != "xts" && mode != "cbc" && mode != "ecb") return Status::unsupported(fmt::format("Unsupported cipher mode '{}'", mode));
  if (mode != "ecb" && ivgen != "plain" && ivgen != "plain64" && ivgen != "essiv")
    return Status::unsupported(fmt::format("Unsupported IV generator '{}'", ivgen));
  if (ivgen == "essiv" && !digest_by_name(ivhash)) return Status::unsupported(fmt::format("Unsupported IV hash '{}'", ivhash));
  uint32_t k = mode == "xts" ? key_bytes / 2 : key_bytes;
  bool ok = mode == "xts" ? (key_bytes == 32 || key_bytes == 64) : (k == 16 || k == 24 || k == 32);
  if (!ok) return Status::unsupported(fmt::format("Unsupported key size {} bytes for aes-{}", key_bytes, mode));
  return Status::ok();
}

Result<std::unique_ptr<SectorCipher>> make_cipher(const std::string& mode, const std::string& ivgen, const std::string& ivhash,
                                                   std::span<const uint8_t> key) {
  auto c = std::make_unique<AesSectorCipher>();
  Mode m = mode == "xts" ? Mode::kXts : mode == "cbc" ? Mode::kCbc : Mode::kEcb;
  IvGen g = ivgen == "plain" ? IvGen::kPlain : ivgen == "essiv" ? IvGen::kEssiv : IvGen::kPlain64;
  QCOW_TRY(c->init(m, g, g == IvGen::kEssiv ? digest_by_name(ivhash) : nullptr, key));
  return std::unique_ptr<SectorCipher>(std::move(c));
}

uint64_t material_bytes(const LuksHeader& h, const LuksSlot& s) { return uint64_t(h.key_bytes) * s.stripes; }

}  // namespace

Result<LuksHeader> parse_luks_header(std::span<const uint8_t> b, uint64_t area_length) {
  if (b.size() < kLuksHeaderSize) return Status::corrupt("LUKS header is truncated");
  if (std::memcmp(b.data(), kMagic, 6) != 0) return Status::corrupt("Volume is not in LUKS format");
  uint16_t version = uint16_t(b[6] << 8 | b[7]);
  if (version != 1) return Status::unsupported(fmt::format("LUKS version {} is not supported", version));
  LuksHeader h;
  h.cipher_name = field_string(b.data() + 8, 32);
  h.cipher_mode = field_string(b.data() + 40, 32);
  h.hash_spec = field_string(b.data() + 72, 32);
  h.payload_offset = load_be32(b.data() + 104);
  h.key_bytes = load_be32(b.data() + 108);
  std::memcpy(h.mk_digest.data(), b.data() + 112, 20);
  std::memcpy(h.mk_digest_salt.data(), b.data() + 132, 32);
  h.mk_digest_iterations = load_be32(b.data() + 164);
  h.uuid = field_string(b.data() + 168, 40);
  // cipher-mode: <mode>-<ivgen>[:<ivhash>]
  size_t dash = h.cipher_mode.find('-');
  h.mode = h.cipher_mode.substr(0, dash);
  if (dash != std::string::npos) {
    std::string iv = h.cipher_mode.substr(dash + 1);
    size_t colon = iv.find(':');
    h.ivgen = iv.substr(0, colon);
    if (colon != std::string::npos) h.ivhash = iv.substr(colon + 1);
  }
  if (h.mode != "ecb" && h.ivgen.empty()) return Status::corrupt(fmt::format("LUKS cipher mode '{}' has no IV generator", h.cipher_mode));
  if (!digest_by_name(h.hash_spec)) return Status::unsupported(fmt::format("Unsupported LUKS hash '{}'", h.hash_spec));
  if (h.key_bytes == 0 || h.key_bytes > 128) return Status::corrupt(fmt::format("LUKS key size {} is invalid", h.key_bytes));
  QCOW_TRY(check_spec(h.cipher_name, h.mode, h.ivgen, h.ivhash, h.key_bytes));
  if (h.mk_digest_iterations == 0) return Status::corrupt("LUKS master key digest iteration count is zero");
  for (int i = 0; i < kLuksSlots; ++i) {
    const uint8_t* p = b.data() + 208 + 48 * i;
    LuksSlot& s = h.slots[i];
    s.active = load_be32(p);
    s.iterations = load_be32(p + 4);
    std::memcpy(s.salt.data(), p + 8, 32);
    s.key_offset = load_be32(p + 40);
    s.stripes = load_be32(p + 44);
    if (s.active != kSlotActive && s.active != kSlotDisabled)
      return Status::corrupt(fmt::format("LUKS key slot {} state {:#x} is invalid", i, s.active));
    if (s.stripes == 0 || s.stripes > 100000) return Status::corrupt(fmt::format("LUKS key slot {} stripe count {} is invalid", i, s.stripes));
    uint64_t start = uint64_t(s.key_offset) * kSectorSize;
    uint64_t end = start + div_round_up(material_bytes(h, s), kSectorSize * 8) * kSectorSize * 8;
    if (s.key_offset < kLuksHeaderSize / kSectorSize + 1 || end > uint64_t(h.payload_offset) * kSectorSize)
      return Status::corrupt(fmt::format("LUKS key slot {} material at sector {} lies outside the key area", i, s.key_offset));
    if (s.active == kSlotActive && start + material_bytes(h, s) > area_length)
      return Status::corrupt(fmt::format("LUKS key slot {} material extends beyond the encryption header area", i));
    for (int j = 0; j < i; ++j) {
      const LuksSlot& o = h.slots[j];
      uint64_t os = uint64_t(o.key_offset) * kSectorSize;
      uint64_t oe = os + div_round_up(material_bytes(h, o), kSectorSize * 8) * kSectorSize * 8;
      if (start < oe && os < end) return Status::corrupt(fmt::format("LUKS key slots {} and {} overlap", j, i));
    }
  }
  return h;
}

LuksInfo luks_info(const LuksHeader& h) {
  LuksInfo i;
  uint32_t bits = (h.mode == "xts" ? h.key_bytes / 2 : h.key_bytes) * 8;
  i.cipher_alg = fmt::format("{}-{}", h.cipher_name, bits);
  i.cipher_mode = h.mode;
  i.ivgen_alg = h.ivgen;
  if (h.ivgen == "essiv") i.ivgen_hash_alg = h.ivhash;
  i.hash_alg = h.hash_spec;
  i.uuid = h.uuid;
  i.payload_offset = uint64_t(h.payload_offset) * kSectorSize;
  i.master_key_iters = h.mk_digest_iterations;
  for (const LuksSlot& s : h.slots)
    i.slots.push_back({s.active == kSlotActive, s.iterations, uint64_t(s.key_offset) * kSectorSize, s.stripes});
  return i;
}

Result<std::unique_ptr<SectorCipher>> luks_unlock(const LuksHeader& h, std::string_view passphrase, AreaReader read, void* ctx) {
  const EVP_MD* md = digest_by_name(h.hash_spec);
  if (!md) return Status::unsupported(fmt::format("Unsupported LUKS hash '{}'", h.hash_spec));
  for (const LuksSlot& s : h.slots) {
    if (s.active != kSlotActive) continue;
    if (s.iterations == 0) continue;
    Secret slot_key(h.key_bytes);
    QCOW_TRY(pbkdf2(passphrase, s.salt, s.iterations, md, slot_key.b));
    Secret material(material_bytes(h, s));
    QCOW_TRY(read(ctx, uint64_t(s.key_offset) * kSectorSize, material.b));
    {
      QCOW_ASSIGN_OR_RETURN(auto c, make_cipher(h.mode, h.ivgen, h.ivhash, slot_key.b));
      QCOW_TRY(c->decrypt(0, material.b));
    }
    Secret master(h.key_bytes);
    QCOW_TRY(af_merge(material.b, s.stripes, md, master.b));
    uint8_t digest[20];
    QCOW_TRY(pbkdf2(std::string_view(reinterpret_cast<const char*>(master.data()), master.size()), h.mk_digest_salt,
                    h.mk_digest_iterations, md, digest));
    if (CRYPTO_memcmp(digest, h.mk_digest.data(), 20) == 0) return make_cipher(h.mode, h.ivgen, h.ivhash, master.b);
  }
  return Status::invalid("Invalid password, cannot unlock any keyslot");
}

Result<std::vector<uint8_t>> luks_create(const LuksCreateParams& p, std::string_view passphrase,
                                         std::unique_ptr<SectorCipher>* cipher) {
  uint32_t aes_bits = 0;
  if (p.cipher_alg == "aes-128") aes_bits = 128;
  else if (p.cipher_alg == "aes-192") aes_bits = 192;
  else if (p.cipher_alg == "aes-256") aes_bits = 256;
  else return Status::invalid(fmt::format("Parameter 'encrypt.cipher-alg' does not accept value '{}'", p.cipher_alg));
  std::string ivhash = p.ivgen_alg == "essiv" ? (p.ivgen_hash_alg.empty() ? "sha256" : p.ivgen_hash_alg) : p.ivgen_hash_alg;
  uint32_t key_bytes = aes_bits / 8 * (p.cipher_mode == "xts" ? 2 : 1);
  Status spec = check_spec("aes", p.cipher_mode, p.ivgen_alg, ivhash, key_bytes);
  if (!spec.is_ok()) return Status::invalid(std::string(spec.message()));
  const EVP_MD* md = digest_by_name(p.hash_alg);
  if (!md) return Status::invalid(fmt::format("Parameter 'encrypt.hash-alg' does not accept value '{}'", p.hash_alg));
  if (p.iter_time_ms == 0 || p.iter_time_ms > 1000000) return Status::invalid("encrypt.iter-time must be between 1 and 1000000 ms");

  // Calibrate PBKDF2 (QEMU measures the same way: iterations per millisecond).
  uint64_t per_ms = 0;
  {
    uint8_t salt[32] = {}, out[64];
    uint32_t iters = 1u << 14;
    for (;;) {
      auto t0 = std::chrono::steady_clock::now();
      QCOW_TRY(pbkdf2("calibrate", salt, iters, md, std::span<uint8_t>(out, key_bytes)));
      auto ms = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      if (ms >= 50000 || iters >= (1u << 26)) {
        per_ms = std::max<uint64_t>(1, uint64_t(iters) * 1000 / std::max<int64_t>(ms, 1));
        break;
      }
      iters *= 4;
    }
  }
  uint64_t slot_iters = std::clamp<uint64_t>(per_ms * p.iter_time_ms, kMinIterations, UINT32_MAX / 2);
  uint64_t mk_iters = std::clamp<uint64_t>(slot_iters / 8, kMinIterations, UINT32_MAX / 2);

  const uint64_t area_sectors = div_round_up(uint64_t(key_bytes) * kStripes, kSectorSize * 8) * 8;
  const uint64_t payload = 8 + kLuksSlots * area_sectors;
  std::vector<uint8_t> area(payload * kSectorSize, 0);
  uint8_t* b = area.data();
  std::memcpy(b, kMagic, 6);
  b[7] = 1;
  std::string mode = p.cipher_mode + "-" + p.ivgen_alg + (p.ivgen_alg == "essiv" ? ":" + ivhash : "");
  std::memcpy(b + 8, "aes", 3);
  std::memcpy(b + 40, mode.data(), std::min<size_t>(mode.size(), 31));
  std::memcpy(b + 72, p.hash_alg.data(), std::min<size_t>(p.hash_alg.size(), 31));
  store_be32(b + 104, uint32_t(payload));
  store_be32(b + 108, key_bytes);
  Secret master(key_bytes);
  uint8_t uuid[16];
  if (RAND_bytes(master.data(), int(key_bytes)) != 1 || RAND_bytes(b + 132, 32) != 1 || RAND_bytes(uuid, 16) != 1)
    return Status::internal("random number generator failed");
  uuid[6] = (uuid[6] & 0x0f) | 0x40;
  uuid[8] = (uuid[8] & 0x3f) | 0x80;
  std::string u;
  for (int i = 0; i < 16; ++i) u += fmt::format("{:02x}{}", uuid[i], (i == 3 || i == 5 || i == 7 || i == 9) ? "-" : "");
  std::memcpy(b + 168, u.data(), u.size());
  store_be32(b + 164, uint32_t(mk_iters));
  QCOW_TRY(pbkdf2(std::string_view(reinterpret_cast<const char*>(master.data()), key_bytes),
                  std::span<const uint8_t>(b + 132, 32), uint32_t(mk_iters), md, std::span<uint8_t>(b + 112, 20)));
  for (int i = 0; i < kLuksSlots; ++i) {
    uint8_t* s = b + 208 + 48 * i;
    store_be32(s, i == 0 ? kSlotActive : kSlotDisabled);
    store_be32(s + 40, uint32_t(8 + i * area_sectors));
    store_be32(s + 44, kStripes);
  }
  // Slot 0.
  uint8_t* s0 = b + 208;
  store_be32(s0 + 4, uint32_t(slot_iters));
  if (RAND_bytes(s0 + 8, 32) != 1) return Status::internal("random number generator failed");
  {
    Secret slot_key(key_bytes);
    QCOW_TRY(pbkdf2(passphrase, std::span<const uint8_t>(s0 + 8, 32), uint32_t(slot_iters), md, slot_key.b));
    std::span<uint8_t> material(b + 8 * kSectorSize, size_t(key_bytes) * kStripes);
    QCOW_TRY(af_split(master.b, kStripes, md, material));
    QCOW_ASSIGN_OR_RETURN(auto c, make_cipher(p.cipher_mode, p.ivgen_alg, ivhash, slot_key.b));
    QCOW_TRY(c->encrypt(0, material));
  }
  QCOW_ASSIGN_OR_RETURN(*cipher, make_cipher(p.cipher_mode, p.ivgen_alg, ivhash, master.b));
  return area;
}

Result<std::unique_ptr<SectorCipher>> legacy_aes_cipher(std::string_view passphrase) {
  Secret key(16);
  std::memcpy(key.data(), passphrase.data(), std::min<size_t>(16, passphrase.size()));
  return make_cipher("cbc", "plain64", "", key.b);
}

}  // namespace qcow::crypto
