// HeaderStore: the header of an open qcow2 image, and the only code that writes it.
//
// Fields change through update(), which names them (format/header.hpp's
// HeaderField), so no caller knows a header offset, and writes the bytes they
// span in one write: the fields that change together (l1_size with
// l1_table_offset, the refcount table's offset with its size) sit next to each
// other inside the first sector, so each update is atomic on the disk. The
// struct always mirrors what the file holds.
#pragma once

#include <functional>
#include <initializer_list>

#include "format/header.hpp"
#include "meta/image_file.hpp"

namespace qcow {

class HeaderStore {
 public:
  explicit HeaderStore(ImageFile* file) : file_(file) {}

  const Header& get() const { return h_; }
  const Header* operator->() const { return &h_; }
  // Takes the header as parsed at open (or a view of it that is never written back).
  void load(Header h) { h_ = std::move(h); }

  // Applies `change` and writes the bytes of `fields` (one write; no flush). The
  // fields must exist on disk (version 2 headers end before the feature fields).
  // On failure the struct keeps the old values.
  Status update(std::initializer_list<HeaderField> fields, const std::function<void(Header&)>& change);
  // Writes a whole new header (fields, extensions, backing file name) in one write
  // from offset 0 and keeps it as the file now holds it.
  Status rewrite(const Header& h);
  // Makes the file hold `next`: when only named fields differ, one write spanning them
  // (inside the first sector, so a crash cannot tear it); otherwise a rewrite().
  Status commit(const Header& next);
  // rewrite(), but a crash that tears the write into 512-byte sectors still
  // leaves the old header or the new one: the fields and extensions go into
  // sector 0 alone (without the optional feature name table, which would not
  // fit), and a backing file name that does not fit there is written first,
  // and made durable, into sectors the current header does not use. Falls back
  // to rewrite() when that is impossible (extensions longer than a sector, no
  // free room in the cluster).
  Status rewrite_atomic(const Header& h);
  // Changes the in-memory copy only, for what a version 2 header cannot store
  // (the corrupt bit QEMU also keeps in memory there).
  void set_in_memory(const std::function<void(Header&)>& change) { change(h_); }

 private:
  ImageFile* file_;
  Header h_;
};

}  // namespace qcow
