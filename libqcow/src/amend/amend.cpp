// amend: format changes in place (see include/qcow/amend.hpp for the contract).
#include "qcow/amend.hpp"

#include <fmt/format.h>

#include <map>
#include <tuple>

#include "amend/refcount_width.hpp"
#include "check/rebuild.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// Rewrites L2 tables of an image opened writable, through the driver's narrow
// offline-rewrite API: its parsed structures, its file, its allocator, and
// commit_header() as the commit point. The driver is abandoned afterwards.
class AmendWorker {
 public:
  AmendWorker(Qcow2Driver& d, const AmendOptions& o) : d_(d), o_(o) {}
  Status run();

 private:
  enum class Conversion { kToExtended, kToStandard, kExpandZeros };
  // One L1 table (the active one, then each snapshot's) being rewritten.
  struct L1Rewrite {
    uint64_t old_offset;
    uint32_t old_size;
    std::vector<uint64_t> old_tables;  // the old L2 table of each entry (flags cleared)
    uint64_t new_entries;
    std::vector<uint64_t> fresh;       // the new entries
    uint64_t new_offset;
  };
  // A new L2 table: the old tables it is made from and where in the first it starts.
  using TableKey = std::tuple<uint64_t, uint64_t, uint64_t>;

  Status rewrite_tables(const Header& target, Conversion conv);
  Result<std::vector<L1Rewrite>> load_l1_tables(uint64_t new_size);
  TableKey key_of(const L1Rewrite& l, uint64_t k) const;
  Status count_references(const std::vector<L1Rewrite>& lists);
  Status build_tables(std::vector<L1Rewrite>& lists, Conversion conv, bool zero_flag_ok);
  Result<uint64_t> build_table(const L1Rewrite& l, uint64_t k, uint64_t refs, Conversion conv, bool zero_flag_ok);
  Status write_snapshot_table(const std::vector<L1Rewrite>& lists, Header& h);
  Result<L2Entry> convert(const L2Entry& e, uint64_t guest, uint64_t refs, Conversion conv, bool zero_flag_ok);
  L2Entry zero_cluster(const L2Entry& e, uint64_t host, uint64_t refs);
  enum class Content { kGuestData, kL2Table };
  Result<uint64_t> store_cluster(std::span<const uint8_t> data, uint64_t refs, Content content);
  Status read_backing(uint64_t guest, std::span<uint8_t> out);
  Status commit_header(const Header& h);
  // The old table at offset (valid until the next call).
  Result<const std::vector<uint8_t>*> old_l2_table(uint64_t offset);
  ImageFile& file() { return d_.image_file(); }
  Refcounts& refcounts() { return d_.refcounts(); }

  Qcow2Driver& d_;
  const AmendOptions& o_;
  std::map<uint64_t, std::vector<uint8_t>> table_cache_;  // old L2 tables being read (small: cleared per key)
  std::vector<std::pair<uint64_t, uint64_t>> frees_after_commit_;  // (offset, times)
  Geometry old_geo_, new_geo_;
  std::map<TableKey, uint64_t> new_refs_;   // L1 entries referencing each new table
  std::map<uint64_t, uint64_t> old_refs_;   // L1 entries that referenced each old table
  uint64_t total_tables_ = 0;
};

Result<const std::vector<uint8_t>*> AmendWorker::old_l2_table(uint64_t offset) {
  auto it = table_cache_.find(offset);
  if (it != table_cache_.end()) return &it->second;
  std::vector<uint8_t> t(d_.geometry().cluster_size);
  QCOW_ASSIGN_OR_RETURN(size_t got, file().read_at(offset, t));
  if (got < t.size()) return Status::corrupt(fmt::format("L2 table at {:#x} lies beyond the end of the file", offset));
  if (table_cache_.size() > 4) table_cache_.clear();
  auto& slot = table_cache_[offset];
  slot = std::move(t);
  return &slot;
}

Status AmendWorker::read_backing(uint64_t guest, std::span<uint8_t> out) {
  if (!d_.backing()) {
    std::fill(out.begin(), out.end(), 0);
    return Status::ok();
  }
  return read_clamped(*d_.backing(), guest, out);
}

// Allocates a cluster holding `data`, referenced `refs` times by the new tables.
Result<uint64_t> AmendWorker::store_cluster(std::span<const uint8_t> data, uint64_t refs, Content content) {
  QCOW_ASSIGN_OR_RETURN(uint64_t off, refcounts().alloc(1));
  if (refs > 1) QCOW_TRY(refcounts().update(off >> d_.geometry().cluster_bits, int64_t(refs - 1)));
  if (content == Content::kL2Table) QCOW_TRY(file().write_metadata(Structure::kActiveL2, off, data));
  else QCOW_TRY(file().write_data(off, data));
  return off;
}

// A cluster that reads as zeros. Its host cluster is kept (preallocated) only when the
// entry owns it: a shared one may lose its other references when they are completed
// into new clusters, and an entry kept without COPIED over a cluster whose refcount
// dropped to 1 is what qemu-img check calls a corruption.
L2Entry AmendWorker::zero_cluster(const L2Entry& e, uint64_t host, uint64_t refs) {
  // (Clusters of an external data file are the guest's own: implicit refcount 1.)
  const bool allocated = has_host(old_geo_, e);
  if (allocated && ((e.word & kOflagCopied) || d_.external_data())) return L2Entry{host | kOflagCopied | kOflagZero, 0};
  if (allocated) frees_after_commit_.emplace_back(host, refs);
  return L2Entry{kOflagZero, 0};
}

// Converts the entry of one guest cluster. Data is completed (from the backing file or
// zeros) in place when the host cluster has a single reference, else into a new cluster.
Result<L2Entry> AmendWorker::convert(const L2Entry& e, uint64_t guest, uint64_t refs, Conversion conv, bool zero_flag_ok) {
  const Geometry& g = old_geo_;
  const uint64_t cs = g.cluster_size;
  const uint64_t copied = refs == 1 ? kOflagCopied : 0;
  if (e.compressed()) return L2Entry{e.word, 0};
  const uint64_t host = e.word & kL2eOffsetMask;
  const bool allocated = has_host(g, e);  // (host 0 is a cluster in an external data file)
  if (conv == Conversion::kToExtended) {
    if (!allocated) return L2Entry{0, (e.word & kOflagZero) ? kL2BitmapAllZero : 0};
    if (e.word & kOflagZero) return L2Entry{e.word & ~kOflagZero, kL2BitmapAllZero};
    return L2Entry{e.word, kL2BitmapAllAlloc};
  }
  // Per-subcluster view of the old entry: what each unit must read as.
  uint32_t units = conv == Conversion::kToStandard ? kSubclustersPerCluster : 1;
  uint64_t unit = cs / units;
  uint32_t alloc = 0, zero = 0;
  if (conv == Conversion::kToStandard) {
    alloc = uint32_t(e.bitmap);
    zero = uint32_t(e.bitmap >> 32);
    if ((alloc & zero) || (!allocated && alloc))
      return Status::corrupt(fmt::format("invalid extended L2 entry {:#018x} bitmap {:#018x} (guest offset {:#x})", e.word,
                                         e.bitmap, guest));
  } else {
    if (!(e.word & kOflagZero)) return L2Entry{e.word, 0};  // v2 keeps normal and unallocated entries as they are
    zero = 1;
  }
  const uint32_t all = units == 32 ? 0xffffffffu : 1u;
  if (alloc == all) return L2Entry{host | (e.word & kOflagCopied), 0};
  if (zero == all && zero_flag_ok) return zero_cluster(e, host, refs);
  if (!allocated && zero == 0 && !d_.backing()) return L2Entry{0, 0};
  if (!allocated && alloc == 0 && zero == 0) return L2Entry{0, 0};  // unallocated: reads the backing file either way

  // Materialize the cluster: allocated units from the host, zero units as zeros, the rest from the backing file.
  std::vector<uint8_t> buf(cs, 0);
  if (allocated && alloc) {
    QCOW_ASSIGN_OR_RETURN(size_t got, file().data_file().read_at(host, buf));
    if (got < cs) std::fill(buf.begin() + got, buf.end(), 0);
  }
  for (uint32_t u = 0; u < units; ++u) {
    if (alloc & (1u << u)) continue;
    std::span<uint8_t> part(buf.data() + u * unit, unit);
    if (zero & (1u << u)) std::fill(part.begin(), part.end(), 0);
    else QCOW_TRY(read_backing(guest + u * unit, part));
  }
  const bool all_zero = buffer_is_zero(buf.data(), cs);
  if (all_zero && !allocated && !zero_flag_ok && !d_.backing()) return L2Entry{0, 0};  // v2: unallocated reads zeros
  if (zero_flag_ok && all_zero) return zero_cluster(e, host, refs);  // an all-zero cluster becomes a zero cluster
  if (d_.external_data()) {  // the cluster's place in the data file is its guest offset
    QCOW_TRY(file().write_data(guest, buf));
    return L2Entry{guest | kOflagCopied, 0};
  }
  if (allocated) {
    QCOW_ASSIGN_OR_RETURN(uint64_t rc, refcounts().get(host >> g.cluster_bits));
    if (rc == 1) {  // ours alone: complete it in place (the old entry never reads these units from the host)
      QCOW_TRY(file().write_data(host, buf));
      return L2Entry{host | kOflagCopied, 0};
    }
    frees_after_commit_.emplace_back(host, refs);
  }
  QCOW_ASSIGN_OR_RETURN(uint64_t fresh, store_cluster(buf, refs, Content::kGuestData));
  return L2Entry{fresh | copied, 0};
}

Status AmendWorker::commit_header(const Header& h) {
  QCOW_TRY(refcounts().flush());
  QCOW_TRY(file().flush());
  QCOW_TRY(d_.commit_header(h));  // the commit point
  return file().flush();
}

// The rewrite of the L2 tables of every L1 table (the active one first, then each
// snapshot's) into the target format: count who references what, build each new table
// once (tables shared by several L1 tables stay shared), write the new L1 tables and the
// snapshot table, commit with one header write, then free the old structures.
Status AmendWorker::rewrite_tables(const Header& target, Conversion conv) {
  old_geo_ = d_.geometry();
  new_geo_ = Geometry::from(target);
  QCOW_TRY(d_.flush());
  QCOW_ASSIGN_OR_RETURN(std::vector<L1Rewrite> lists, load_l1_tables(target.size));
  QCOW_TRY(count_references(lists));
  QCOW_TRY(build_tables(lists, conv, target.version >= 3));
  Header h = target;
  h.l1_table_offset = lists[0].new_offset;
  h.l1_size = uint32_t(lists[0].fresh.size());
  QCOW_TRY(write_snapshot_table(lists, h));
  h.refcount_table_offset = refcounts().reftable_offset();
  h.refcount_table_clusters = refcounts().reftable_clusters();
  const uint64_t old_snap_offset = d_.header().snapshots_offset, old_snap_bytes = d_.snapshot_table_bytes();
  const bool had_snapshots = !d_.snapshots().empty();
  QCOW_TRY(commit_header(h));

  // Past the commit point: drop the old structures.
  const uint64_t cs = old_geo_.cluster_size;
  for (auto [t, n] : old_refs_)
    for (uint64_t i = 0; i < n; ++i) refcounts().free_later(t, 1);
  for (const L1Rewrite& l : lists)
    if (l.old_size) refcounts().free_later(l.old_offset, div_round_up(uint64_t(l.old_size) * 8, cs));
  if (had_snapshots) refcounts().free_later(old_snap_offset, div_round_up(old_snap_bytes, cs));
  for (auto [off, n] : frees_after_commit_)
    for (uint64_t i = 0; i < n; ++i) refcounts().free_later(off, 1);
  QCOW_TRY(refcounts().apply_deferred());
  QCOW_TRY(refcounts().flush());
  QCOW_TRY(file().flush());
  if (o_.progress) o_.progress(1.0);
  return Status::ok();
}

// The old L1 tables, within the memory limit (a hostile snapshot table may list 65536
// snapshots with 32 MiB L1 tables each).
Result<std::vector<AmendWorker::L1Rewrite>> AmendWorker::load_l1_tables(uint64_t new_size) {
  std::vector<L1Rewrite> lists;
  uint64_t memory = 0;
  auto add = [&](uint64_t offset, uint32_t size, std::vector<uint64_t> entries, bool active) -> Status {
    L1Rewrite l{offset, size, std::move(entries), 0, {}, 0};
    l.new_entries = div_round_up(uint64_t(size) * old_geo_.l2_coverage(), new_geo_.l2_coverage());
    if (active) l.new_entries = std::max(l.new_entries, new_geo_.l1_entries_for(new_size));
    if (l.new_entries > kMaxL1Bytes / 8) return Status::limit("the new L1 table would exceed 32 MiB");
    memory += (l.old_tables.size() + l.new_entries) * 8;
    if (memory > o_.memory_limit)
      return Status::limit(fmt::format("amend needs more than its {} MiB memory limit for the L1 tables of the image "
                                       "and its {} snapshots", o_.memory_limit >> 20, d_.snapshots().size()));
    for (uint64_t& e : l.old_tables) {
      e &= kL1eOffsetMask;
      if (e & (old_geo_.cluster_size - 1)) return Status::corrupt(fmt::format("L2 table offset {:#x} unaligned", e));
    }
    lists.push_back(std::move(l));
    return Status::ok();
  };
  QCOW_TRY(add(d_.header().l1_table_offset, d_.header().l1_size, d_.l1_table(), true));
  for (const auto& s : d_.snapshots()) {
    QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> entries, load_table(file(), s.l1_table_offset, s.l1_size,
                                                                    fmt::format("snapshot '{}' L1 table", s.name)));
    QCOW_TRY(add(s.l1_table_offset, s.l1_size, std::move(entries), false));
  }
  return lists;
}

// The new table k of an L1 table is made from at most two old tables (a new table covers
// more or less guest space than an old one), from an offset in the first.
AmendWorker::TableKey AmendWorker::key_of(const L1Rewrite& l, uint64_t k) const {
  const uint64_t gcov = old_geo_.l2_coverage(), ncov = new_geo_.l2_coverage();
  const uint64_t start = k * ncov, end = start + ncov;
  const uint64_t a = start / gcov, b = (end - 1) / gcov;
  const uint64_t ta = a < l.old_tables.size() ? l.old_tables[a] : 0;
  const uint64_t tb = (b != a && b < l.old_tables.size()) ? l.old_tables[b] : 0;
  return {ta, tb, start % gcov};
}

// How many L1 entries will reference each new table, and how many referenced each old one.
Status AmendWorker::count_references(const std::vector<L1Rewrite>& lists) {
  for (const L1Rewrite& l : lists) {
    for (uint64_t k = 0; k < l.new_entries; ++k) {
      TableKey key = key_of(l, k);
      if (std::get<0>(key) || std::get<1>(key)) total_tables_ += new_refs_[key]++ == 0;
    }
    for (uint64_t t : l.old_tables)
      if (t) ++old_refs_[t];
  }
  return Status::ok();
}

Status AmendWorker::build_tables(std::vector<L1Rewrite>& lists, Conversion conv, bool zero_flag_ok) {
  std::map<TableKey, uint64_t> built;
  uint64_t done = 0;
  for (size_t li = 0; li < lists.size(); ++li) {
    L1Rewrite& l = lists[li];
    l.fresh.assign(l.new_entries, 0);
    for (uint64_t k = 0; k < l.new_entries; ++k) {
      TableKey key = key_of(l, k);
      if (!std::get<0>(key) && !std::get<1>(key)) continue;
      const uint64_t refs = new_refs_[key];
      auto it = built.find(key);
      if (it == built.end()) {
        QCOW_ASSIGN_OR_RETURN(uint64_t off, build_table(l, k, refs, conv, zero_flag_ok));
        it = built.emplace(key, off).first;
        if (o_.progress && total_tables_) o_.progress(double(++done) / double(total_tables_) * 0.95);
      }
      l.fresh[k] = it->second | (refs == 1 ? kOflagCopied : 0);
    }
    // The new L1 table itself.
    const uint64_t clusters = div_round_up(std::max<uint64_t>(l.new_entries * 8, 8), new_geo_.cluster_size);
    QCOW_ASSIGN_OR_RETURN(l.new_offset, refcounts().alloc(clusters));
    QCOW_TRY(store_table(file(), li == 0 ? Structure::kActiveL1 : Structure::kInactiveL1, l.new_offset, l.fresh,
                         clusters * new_geo_.cluster_size));
  }
  return Status::ok();
}

// New table k of L1 table l, in the target format, stored in a fresh cluster.
Result<uint64_t> AmendWorker::build_table(const L1Rewrite& l, uint64_t k, uint64_t refs, Conversion conv,
                                          bool zero_flag_ok) {
  const Geometry& G = old_geo_;
  const Geometry& N = new_geo_;
  std::vector<uint8_t> table(N.cluster_size, 0);
  for (uint64_t j = 0; j < N.l2_entries; ++j) {
    const uint64_t guest = k * N.l2_coverage() + j * N.cluster_size;
    const uint64_t old_index = guest / G.l2_coverage();
    const uint64_t t = old_index < l.old_tables.size() ? l.old_tables[old_index] : 0;
    if (!t) continue;
    QCOW_ASSIGN_OR_RETURN(const std::vector<uint8_t>* ot, old_l2_table(t));
    const L2Entry old = load_l2_entry(ot->data(), G, (guest % G.l2_coverage()) >> G.cluster_bits);
    if (!old.word && !old.bitmap) continue;
    QCOW_ASSIGN_OR_RETURN(L2Entry ne, convert(old, guest, refs, conv, zero_flag_ok));
    store_l2_entry(table.data(), N, j, ne);
  }
  return store_cluster(table, refs, Content::kL2Table);
}

// The snapshot table with the same entries and their new L1 tables, in new clusters.
Status AmendWorker::write_snapshot_table(const std::vector<L1Rewrite>& lists, Header& h) {
  if (d_.snapshots().empty()) return Status::ok();
  std::vector<SnapshotEntry> entries = d_.snapshots();
  for (size_t i = 1; i < lists.size(); ++i) {
    entries[i - 1].l1_table_offset = lists[i].new_offset;
    entries[i - 1].l1_size = uint32_t(lists[i].fresh.size());
  }
  std::vector<uint8_t> st = encode_snapshot_table(entries);
  QCOW_ASSIGN_OR_RETURN(uint64_t off, refcounts().alloc(div_round_up(st.size(), new_geo_.cluster_size)));
  QCOW_TRY(file().write_metadata(Structure::kSnapshotTable, off, st));
  h.snapshots_offset = off;
  return Status::ok();
}

Status AmendWorker::run() {
  const Header cur = d_.header();
  Header target = cur;
  if (o_.version) target.version = uint32_t(*o_.version);
  if (o_.lazy_refcounts) {
    if (*o_.lazy_refcounts) target.compatible_features |= kCompatLazyRefcounts;
    else target.compatible_features &= ~kCompatLazyRefcounts;
  }
  bool want_ext = o_.extended_l2.value_or(cur.extended_l2());
  if (want_ext) target.incompatible_features |= kIncompatExtendedL2;
  else target.incompatible_features &= ~kIncompatExtendedL2;
  if (o_.backing_file) {
    target.backing_file = *o_.backing_file;
    if (o_.backing_file->empty()) target.backing_format.reset();
  }
  // QEMU's rules: the name of an existing data file may change (or go: the image then
  // needs one named at open); data_file_raw may only be turned off.
  if (o_.data_file) {
    if (!(cur.incompatible_features & kIncompatDataFile))
      return Status::invalid("data-file can only be set for images that use an external data file");
    if (o_.data_file->empty()) target.data_file.reset();
    else target.data_file = *o_.data_file;
  }
  if (o_.data_file_raw) {
    const bool is_raw = d_.raw_data();
    if (*o_.data_file_raw && !is_raw) return Status::invalid("data-file-raw cannot be set on existing images");
    target.autoclear_features &= ~kAutoclearDataFileRaw;
  }
  if (!target.backing_file.empty() && (target.autoclear_features & kAutoclearDataFileRaw))
    return Status::invalid("Backing file and data-file-raw cannot be used at the same time");
  if (o_.backing_format) {
    if (target.backing_file.empty()) return Status::invalid("backing_fmt requires a backing file");
    target.backing_format = *o_.backing_format;
  }
  uint32_t order = cur.refcount_order;
  if (o_.refcount_bits) {
    int b = *o_.refcount_bits;
    if (b < 1 || b > 64 || (b & (b - 1))) return Status::invalid("Refcount width must be a power of two and may not exceed 64 bits");
    order = uint32_t(std::countr_zero(uint32_t(b)));
  }
  if (target.version == 2) {
    if (order != 4) return Status::unsupported("Cannot downgrade an image with refcount_bits other than 16; add refcount_bits=16");
    if (want_ext) return Status::unsupported("compat=0.10 cannot store extended L2 entries; add extended_l2=off");
    if (cur.compression_type) return Status::unsupported("compat=0.10 cannot store zstd-compressed clusters");
    if (cur.bitmaps) return Status::unsupported("Cannot downgrade an image with persistent bitmaps");
    if (cur.data_file) return Status::unsupported("Cannot downgrade an image with an external data file");
    if (o_.lazy_refcounts.value_or(false)) return Status::unsupported("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    target.compatible_features = 0;
    target.autoclear_features = 0;
    target.incompatible_features = 0;
    target.unknown_header_fields.clear();
    target.feature_names.clear();
  } else if (cur.version == 2) {
    target.header_length = 0;  // encode_header writes the v3 layout
  }
  if (want_ext && d_.geometry().cluster_bits < kMinExtendedL2ClusterBits)
    return Status::unsupported("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  if (want_ext && target.version < 3)
    return Status::unsupported("Extended L2 entries are only supported with compatibility level 1.1 and above");
  if (target.backing_file.size() > kMaxBackingFileNameLength) return Status::invalid("backing file name too long");

  if (order != cur.refcount_order) {
    if (target.version < 3) return Status::unsupported("refcount_bits other than 16 require compat=1.1");
    QCOW_TRY(d_.flush());
    if (cur.version < 3) {  // a version 2 header has no refcount_order: upgrade first (a valid image either way)
      Header v3 = d_.header();
      v3.version = 3;
      v3.header_length = 0;
      QCOW_TRY(commit_header(v3));
    }
    QCOW_TRY(change_refcount_width(d_, order));
    target.refcount_order = order;
    target.refcount_table_offset = d_.header().refcount_table_offset;
    target.refcount_table_clusters = d_.header().refcount_table_clusters;
  }
  if (want_ext != cur.extended_l2()) {
    QCOW_TRY(rewrite_tables(target, want_ext ? Conversion::kToExtended : Conversion::kToStandard));
  } else if (target.version == 2 && cur.version >= 3) {
    QCOW_TRY(rewrite_tables(target, Conversion::kExpandZeros));
  } else {
    QCOW_TRY(d_.flush());
    target.refcount_table_offset = refcounts().reftable_offset();
    target.refcount_table_clusters = refcounts().reftable_clusters();
    QCOW_TRY(commit_header(target));
  }
  if (o_.progress) o_.progress(1.0);
  return Status::ok();
}

Status amend_image(const std::string& path, const AmendOptions& o) {
  try {
    OpenOptions oo;
    oo.writable = true;
    oo.wrap_file = o.wrap_file;
    oo.key_secret = o.key_secret;
    oo.overlap_check = o.overlap_check;
    QCOW_ASSIGN_OR_RETURN(auto drv, open_driver(path, oo, 0));
    if (drv->format() != Format::kQcow2) return Status::unsupported(path + ": amend needs a qcow2 image");
    auto* d = static_cast<Qcow2Driver*>(drv.get());
    // Changes that rewrite or move guest data (subcluster layout, zero-cluster expansion
    // for compat=0.10) would have to re-encrypt it: not supported on encrypted images.
    if (d->header().crypt_method != 0 &&
        (o.extended_l2.has_value() || (o.version && *o.version < int(d->header().version)))) {
      d->abandon();
      return Status::unsupported(fmt::format("{}: changing {} of an encrypted image is not supported",
                                             path, o.extended_l2 ? "extended_l2" : "compat"));
    }
    AmendWorker w(*d, o);
    Status s = w.run();
    // The driver's in-memory tables describe the old layout now: close it without flushing them.
    d->abandon();
    // (Option errors read as QEMU prints them, without the file name.)
    if (!s.is_ok() && s.code() != ErrorCode::kInvalidArgument && s.message().rfind(path, 0) != 0) s.prepend(path + ": ");
    return s;
  } catch (const std::bad_alloc&) {
    return Status::limit(path + ": out of memory");
  }
}

}  // namespace qcow
