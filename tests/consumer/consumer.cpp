// A program outside the qimg source tree that uses an installed libqcow:
// opens an image read-only and checks that [offset, offset+length) holds the
// byte `pattern` and the bytes just after it read as zeros.
//
//   consumer IMAGE OFFSET LENGTH PATTERN     (numbers in C syntax: 0x10000)
//
// Exit status 0 when everything matches; prints one line per finding.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <qcow/image.hpp>
#include <qcow/version.hpp>

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: consumer IMAGE OFFSET LENGTH PATTERN\n");
    return 2;
  }
  const uint64_t offset = std::strtoull(argv[2], nullptr, 0);
  const uint64_t length = std::strtoull(argv[3], nullptr, 0);
  const auto pattern = static_cast<uint8_t>(std::strtoul(argv[4], nullptr, 0));

  if (qcow::version() != QCOW_VERSION_STRING) {
    std::fprintf(stderr, "consumer: library %s, headers %s\n", qcow::version().c_str(), QCOW_VERSION_STRING);
    return 1;
  }
  auto image = qcow::Image::open(argv[1]);
  if (!image) {
    std::fprintf(stderr, "consumer: open: %s\n", image.status().message().c_str());
    return 1;
  }
  const qcow::ImageInfo info = image->info();
  std::printf("libqcow %s: %s format=%s size=%llu cluster_size=%u extended_l2=%d\n", qcow::version().c_str(),
              argv[1], qcow::format_name(info.format), static_cast<unsigned long long>(info.virtual_size), info.cluster_size,
              info.extended_l2 ? 1 : 0);

  std::vector<uint8_t> buf(length + 4096);
  if (offset + buf.size() > image->size()) {
    std::fprintf(stderr, "consumer: range past the end of the image\n");
    return 1;
  }
  if (qcow::Status s = image->read(offset, buf); !s) {
    std::fprintf(stderr, "consumer: read: %s\n", s.message().c_str());
    return 1;
  }
  for (size_t i = 0; i < buf.size(); ++i) {
    const uint8_t want = i < length ? pattern : 0;
    if (buf[i] != want) {
      std::fprintf(stderr, "consumer: byte at %llu is %#x, expected %#x\n",
                   static_cast<unsigned long long>(offset + i), buf[i], want);
      return 1;
    }
  }
  if (qcow::Status s = image->close(); !s) {
    std::fprintf(stderr, "consumer: close: %s\n", s.message().c_str());
    return 1;
  }
  std::printf("ok: %llu bytes of %#x, then zeros\n", static_cast<unsigned long long>(length), pattern);
  return 0;
}
