#include "cli/writable_image.hpp"

#include <memory>

#include "cli/image_open.hpp"
#include "cli/secrets.hpp"
#include "qcow/file.hpp"

namespace qimg {
namespace {

class UnsafeCacheFile : public qcow::FileWrapper {
 public:
  using FileWrapper::FileWrapper;
  qcow::Status flush() override { return qcow::Status::ok(); }
};

}  // namespace

void apply_cache_choice(const CacheChoice& cache, qcow::OpenOptions* options) {
  options->cache = cache.mode;
  if (cache.flush) return;
  qcow::FileWrapFn inner = options->wrap_file;
  options->wrap_file = [inner](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
    if (inner) f = inner(std::move(f));
    return std::make_unique<UnsafeCacheFile>(std::move(f));
  };
}

qcow::Result<WritableImage> open_writable_image(const std::string& arg, const std::string& format,
                                                const CacheChoice& cache, bool open_backing) {
  qcow::OpenOptions options;
  options.writable = true;
  options.open_backing = open_backing;
  apply_cache_choice(cache, &options);
  std::string filename = arg, resolved_format = format;
  QCOW_TRY(apply_secret_options(&filename, &resolved_format, &options));
  auto image = open_source_image(arg, format, options);
  if (!image) return image.status();
  warn_if_probed_raw(filename, resolved_format, *image);
  options.format = image->format();
  return WritableImage{std::move(image).value(), filename, options};
}

}  // namespace qimg
