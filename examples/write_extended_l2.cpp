// write_extended_l2: create a qcow2 image with extended L2 entries (32
// subclusters per cluster), write less than a cluster into it and read it back.
//
//   write_extended_l2 new.qcow2
//
// Afterwards `qemu-img map --output=json new.qcow2` (or `qimg map`) shows that
// only the written subclusters are allocated.
#include <cstdio>
#include <cstring>
#include <vector>

#include <qcow/image.hpp>

namespace {

int fail(const char* what, const qcow::Status& s) {
  std::fprintf(stderr, "write_extended_l2: %s: %s\n", what, s.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s NEW_IMAGE\n", argv[0]);
    return 2;
  }
  const char* path = argv[1];

  qcow::CreateOptions create;
  create.size = 64ull << 20;     // 64 MiB virtual disk
  create.cluster_size = 64 << 10;  // 64 KiB clusters -> 2 KiB subclusters
  create.extended_l2 = true;
  if (qcow::Status s = qcow::Image::create(path, create); !s) return fail("create", s);

  qcow::OpenOptions open;
  open.format = qcow::Format::kQcow2;
  open.writable = true;
  qcow::Result<qcow::Image> image = qcow::Image::open(path, open);
  if (!image) return fail("open", image.status());

  // 4 KiB at 1 MiB + 6 KiB: two subclusters of one cluster are allocated, the
  // other 30 still read as zeros without having been written.
  std::vector<uint8_t> data(4096, 0xab);
  const uint64_t offset = (1u << 20) + 6 * 1024;
  if (qcow::Status s = image->write(offset, data); !s) return fail("write", s);
  // Zero a whole cluster without allocating it (a zero flag per subcluster).
  if (qcow::Status s = image->write_zeroes(2u << 20, 64 << 10, qcow::Unmap::kYes); !s) return fail("write_zeroes", s);

  std::vector<uint8_t> back(data.size());
  if (qcow::Status s = image->read(offset, back); !s) return fail("read", s);
  if (std::memcmp(back.data(), data.data(), data.size()) != 0) {
    std::fprintf(stderr, "write_extended_l2: read back different data\n");
    return 1;
  }
  // close() flushes and reports errors the destructor could only log.
  if (qcow::Status s = image->close(); !s) return fail("close", s);
  std::printf("%s: wrote %zu bytes at %#llx with extended L2 entries\n", path, data.size(),
              static_cast<unsigned long long>(offset));
  return 0;
}
