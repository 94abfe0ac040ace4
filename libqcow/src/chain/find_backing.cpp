// QEMU's backing file name resolution (block.c), for commit -b and rebase -b.
#include <climits>
#include <cstdlib>
#include <memory>

#include "qcow/chain.hpp"

namespace qcow {
namespace {

// path_has_protocol(): a ':' before the first '/'.
bool has_protocol(const std::string& path) {
  const size_t p = path.find_first_of(":/");
  return p != std::string::npos && path[p] == ':';
}

std::optional<std::string> real_path(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> r(::realpath(path.c_str(), nullptr), &std::free);
  if (!r) return std::nullopt;
  return std::string(r.get());
}

}  // namespace

std::string backing_file_path(const std::string& image_filename, const std::string& backing_file) {
  if (backing_file.empty() || backing_file[0] == '/' || has_protocol(backing_file)) return backing_file;
  const size_t slash = image_filename.rfind('/');
  if (slash == std::string::npos) return backing_file;
  return image_filename.substr(0, slash + 1) + backing_file;
}

std::optional<size_t> find_backing_image(const std::vector<ImageInfo>& chain, const std::string& name) {
  if (name.empty()) return std::nullopt;
  const bool protocol = has_protocol(name);
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    const ImageInfo& cur = chain[i];
    if (cur.backing_filename.empty()) break;
    const std::string full = backing_file_path(cur.filename, cur.backing_filename);
    if (protocol || has_protocol(cur.backing_filename)) {
      // Either is a protocol: compare the names as they are.
      if (name == cur.backing_filename || name == full) return i + 1;
      continue;
    }
    auto wanted = real_path(backing_file_path(cur.filename, name));
    auto actual = real_path(full);
    if (wanted && actual && *wanted == *actual) return i + 1;
  }
  return std::nullopt;
}

}  // namespace qcow
