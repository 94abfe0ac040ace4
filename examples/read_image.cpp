// read_image: open a qcow2 (or raw) image read-only, print what it is, dump
// the first bytes of guest data and its allocation map.
//
//   read_image disk.qcow2 [OFFSET]
//
// Every libqcow call returns a Status or Result<T>; nothing throws.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <qcow/image.hpp>
#include <qcow/version.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s IMAGE [OFFSET]\n", argv[0]);
    return 2;
  }
  uint64_t offset = argc > 2 ? std::strtoull(argv[2], nullptr, 0) : 0;

  // Read-only, format probed from the magic, backing chain followed.
  qcow::Result<qcow::Image> image = qcow::Image::open(argv[1]);
  if (!image) {
    std::fprintf(stderr, "read_image: %s\n", image.status().message().c_str());
    return 1;
  }
  qcow::ImageInfo info = image->info();
  std::printf("libqcow %s (headers %s)\n", qcow::version().c_str(), QCOW_VERSION_STRING);
  std::printf("%s: %s, virtual size %" PRIu64 ", cluster size %u%s\n", info.filename.c_str(),
              qcow::format_name(info.format), info.virtual_size, info.cluster_size,
              info.extended_l2 ? ", extended L2" : "");

  // Guest bytes past the end of the disk do not exist: clamp the read.
  std::vector<uint8_t> buf(64);
  if (offset >= image->size()) offset = 0;
  if (image->size() - offset < buf.size()) buf.resize(image->size() - offset);
  if (qcow::Status s = image->read(offset, buf); !s) {
    std::fprintf(stderr, "read_image: %s\n", s.message().c_str());
    return 1;
  }
  std::printf("%#" PRIx64 ":", offset);
  for (uint8_t b : buf) std::printf(" %02x", b);
  std::printf("\n");

  // The allocation map, as qimg map prints it.
  qcow::Status s = image->block_status(0, image->size(), [](const qcow::Extent& e) {
    const char* kind = !e.present ? "unallocated" : e.data ? "data" : "zero";
    std::printf("%#14" PRIx64 " %#14" PRIx64 " %s%s depth %d\n", e.offset, e.length, kind,
                e.compressed ? " compressed" : "", e.depth);
    return true;  // keep going
  });
  if (!s) {
    std::fprintf(stderr, "read_image: %s\n", s.message().c_str());
    return 1;
  }
  return image->close() ? 0 : 1;
}
