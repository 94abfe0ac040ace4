// Backing chain lookups, as QEMU resolves names (block.c: path_combine,
// bdrv_make_absolute_filename, bdrv_find_backing_image).
//
// A relative backing file name is relative to the directory of the image that
// records it, not to the working directory. `qemu-img commit -b BASE` and
// `qemu-img rebase -b NEW` find an image of the chain by name with these
// rules, so qimg answers the same for the same arguments.
//
// Pure functions of their arguments (plus realpath() on the file system).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "qcow/info.hpp"

namespace qcow {

// `backing_file` as a path usable from the working directory: itself when it
// is absolute (or names a protocol, "proto:..."), else joined to the
// directory part of `image_filename` ("dir/top.qcow2" + "b.qcow2" ->
// "dir/b.qcow2"; "top.qcow2" + "b.qcow2" -> "b.qcow2").
std::string backing_file_path(const std::string& image_filename, const std::string& backing_file);

// The index in `chain` (Image::chain_info(): 0 the image, 1 its backing
// file, ...) of the layer `name` refers to, or nullopt. Each image that has a
// backing file is asked in turn whether `name`, taken relative to that
// image's directory, is the same file (after realpath()) as its own backing
// file; the first that says yes answers with the layer below it.
std::optional<size_t> find_backing_image(const std::vector<ImageInfo>& chain, const std::string& name);

}  // namespace qcow
