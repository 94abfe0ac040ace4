// Encrypted qcow2: the LUKS area (crypto header extension) at open and create,
// and the sector cipher on the data path. Only guest data is encrypted; LUKS
// IVs use the host offset / 512, legacy AES IVs the guest offset / 512.
#include <fmt/format.h>

#include <cstring>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {
namespace {
constexpr uint64_t kMaxLuksArea = 64ull << 20;  // QEMU's defaults need about 2 MiB
constexpr const char* kNeedKey = "Parameter 'encrypt.key-secret' is required for cipher";

struct AreaCtx {
  File* file;
  uint64_t offset, length;
};

Status read_area(void* p, uint64_t off, std::span<uint8_t> buf) {
  auto* c = static_cast<AreaCtx*>(p);
  if (off > c->length || buf.size() > c->length - off)
    return Status::corrupt("LUKS key material lies beyond the encryption header area");
  QCOW_ASSIGN_OR_RETURN(size_t got, c->file->read_at(c->offset + off, buf));
  if (got < buf.size()) return Status::corrupt("LUKS key material extends beyond the end of the file");
  return Status::ok();
}
}  // namespace

Status Qcow2Driver::open_crypto() {
  const Header& h = header_.get();
  if (h.crypt_method == kCryptLuks) {
    if (!h.crypto) return Status::corrupt("LUKS encryption without an encryption header extension");
    const uint64_t off = h.crypto->offset, len = h.crypto->length;
    if (off & (geo_.cluster_size - 1))
      return Status::corrupt(fmt::format("encryption header offset {:#x} is not aligned to the cluster size", off));
    if (off < geo_.cluster_size || len < crypto::kLuksHeaderSize || len > kMaxLuksArea || off > file_size_ ||
        len > file_size_ - off)
      return Status::corrupt(fmt::format("encryption header at offset {:#x} ({} bytes) is invalid or lies beyond the end of the "
                                         "file", off, len));
    std::vector<uint8_t> raw(crypto::kLuksHeaderSize);
    QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(off, raw));
    if (got < raw.size()) return Status::corrupt("LUKS header is truncated");
    auto parsed = crypto::parse_luks_header(raw, len);
    if (!parsed) {
      Status s = parsed.status();
      return s.prepend(fmt::format("encryption header at offset {:#x}: ", off));
    }
    luks_ = std::move(parsed).value();
    if (options_.key_secret) {
      AreaCtx ctx{file_.get(), off, len};
      QCOW_ASSIGN_OR_RETURN(cipher_, crypto::luks_unlock(*luks_, *options_.key_secret, read_area, &ctx));
    }
  } else if (h.crypt_method == kCryptAes) {
    if (writable_ && !options_.repair)
      return Status::unsupported("writing images with legacy AES encryption is not supported (use encrypt.format=luks)");
    if (options_.key_secret) {
      QCOW_ASSIGN_OR_RETURN(cipher_, crypto::legacy_aes_cipher(*options_.key_secret));
    }
  }
  if (h.crypt_method && writable_ && !cipher_ && !options_.repair) return Status::invalid(kNeedKey);
  return Status::ok();
}

Status Qcow2Driver::crypt_data(bool encrypt, uint64_t guest, uint64_t host, std::span<uint8_t> buf) {
  if (!cipher_) return Status::invalid(fmt::format("{}: {}", file_->path(), kNeedKey));
  uint64_t sector = (header_->crypt_method == kCryptLuks ? host : guest) / crypto::kSectorSize;
  return encrypt ? cipher_->encrypt(sector, buf) : cipher_->decrypt(sector, buf);
}

Status Qcow2Driver::read_encrypted(uint64_t guest, uint64_t host, std::span<uint8_t> out) {
  if (!cipher_) return Status::invalid(fmt::format("{}: {}", file_->path(), kNeedKey));
  const uint64_t a = align_down(host, crypto::kSectorSize), delta = host - a;
  const uint64_t total = align_up(delta + out.size(), crypto::kSectorSize);
  std::vector<uint8_t> tmp;
  std::span<uint8_t> buf = out;
  if (delta || total != out.size()) {
    tmp.resize(total);
    buf = tmp;
  }
  QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(a, buf));
  if (got < buf.size()) std::memset(buf.data() + got, 0, buf.size() - got);
  QCOW_TRY(crypt_data(false, guest - delta, a, buf));
  if (!tmp.empty()) std::memcpy(out.data(), tmp.data() + delta, out.size());
  return Status::ok();
}

Status Qcow2Driver::init_luks(const EncryptOptions& e, std::string_view passphrase) {
  crypto::LuksCreateParams p;
  p.cipher_alg = e.cipher_alg;
  p.cipher_mode = e.cipher_mode;
  p.ivgen_alg = e.ivgen_alg;
  p.ivgen_hash_alg = e.ivgen_hash_alg;
  p.hash_alg = e.hash_alg;
  p.iter_time_ms = e.iter_time_ms;
  std::unique_ptr<crypto::SectorCipher> cipher;
  QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t> area, crypto::luks_create(p, passphrase, &cipher));
  const uint64_t cs = geo_.cluster_size;
  const uint64_t n = div_round_up(area.size(), cs);
  QCOW_ASSIGN_OR_RETURN(uint64_t host, refcounts_->alloc(n));
  const uint64_t length = area.size();
  area.resize(n * cs, 0);  // unused bytes of the allocated clusters are zeros
  QCOW_TRY(io_.write_metadata(Structure::kEncryptionHeader, host, area));
  file_size_ = std::max(file_size_, host + n * cs);
  alloc_end_ = std::max(alloc_end_, host + n * cs);
  QCOW_ASSIGN_OR_RETURN(luks_, crypto::parse_luks_header(std::span(area).first(crypto::kLuksHeaderSize), length));
  Header h = header_.get();
  h.crypt_method = kCryptLuks;
  h.crypto = CryptoExtension{host, length};
  QCOW_TRY(refcounts_->flush());
  QCOW_TRY(io_.flush());
  QCOW_TRY(header_.rewrite(h));
  QCOW_TRY(io_.flush());
  if (io_.tracks(Structure::kEncryptionHeader)) io_.overlaps().add(Structure::kEncryptionHeader, host, length);
  cipher_ = std::move(cipher);
  return Status::ok();
}

}  // namespace qcow
