// Tests for L2 entry classification, compressed cluster descriptors, subcluster
// masks (map/l2_entry.hpp) and the geometry derived from a header (map/geometry.hpp).

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "format/constants.hpp"
#include "format/header.hpp"
#include "map/geometry.hpp"
#include "map/l2_entry.hpp"

namespace {

using namespace qcow;
using T = SubclusterType;

Geometry geometry(uint32_t cluster_bits, bool extended_l2, uint32_t refcount_order = 4) {
  Header h;
  h.version = 3;
  h.cluster_bits = cluster_bits;
  h.refcount_order = refcount_order;
  if (extended_l2) h.incompatible_features |= kIncompatExtendedL2;
  return Geometry::from(h);
}

const char* name(T t) {
  switch (t) {
    case T::kUnallocatedPlain: return "unallocated-plain";
    case T::kUnallocatedAlloc: return "unallocated-alloc";
    case T::kZeroPlain: return "zero-plain";
    case T::kZeroAlloc: return "zero-alloc";
    case T::kNormal: return "normal";
    case T::kCompressed: return "compressed";
    case T::kInvalid: return "invalid";
  }
  return "?";
}

constexpr uint64_t kHost = 0x50000;  // a cluster-aligned host offset

}  // namespace

TEST_SUITE("qcow::l2_entry") {

TEST_CASE("L2 entries: classification, compressed descriptors, masks, geometry") {
  SUBCASE("standard L2 entries: every combination of offset, zero flag, copied and compressed") {
    const Geometry g = geometry(16, false);
    struct Row {
      uint64_t word;
      T expected;
    };
    const Row rows[] = {
        // host offset, zero bit, COPIED bit
        {0, T::kUnallocatedPlain},
        {kOflagCopied, T::kUnallocatedPlain},
        {kOflagZero, T::kZeroPlain},
        {kOflagZero | kOflagCopied, T::kZeroPlain},
        {kHost, T::kNormal},
        {kHost | kOflagCopied, T::kNormal},
        {kHost | kOflagZero, T::kZeroAlloc},
        {kHost | kOflagZero | kOflagCopied, T::kZeroAlloc},
        {kL2eOffsetMask, T::kNormal},  // the largest host offset the entry can hold
        {uint64_t(1) << 9, T::kNormal},  // the smallest non-zero offset bit
        // compressed wins over everything else
        {kOflagCompressed, T::kCompressed},
        {kOflagCompressed | kHost, T::kCompressed},
        {kOflagCompressed | kHost | kOflagZero, T::kCompressed},
        {kOflagCompressed | kOflagCopied | kHost | kOflagZero, T::kCompressed},
    };
    for (const Row& r : rows) {
      CAPTURE(r.word);
      L2Entry e{r.word, 0};
      T t = subcluster_type(g, e, 0);
      CAPTURE(name(t));
      CHECK(t == r.expected);
      // The bitmap is ignored without extended L2.
      CHECK(subcluster_type(g, L2Entry{r.word, ~uint64_t(0)}, 0) == r.expected);
      CHECK(e.compressed() == bool(r.word & kOflagCompressed));
      CHECK(e.copied() == bool(r.word & kOflagCopied));
      CHECK(e.host_offset() == (e.compressed() ? 0 : (r.word & kL2eOffsetMask)));
    }
  }

  SUBCASE("extended L2 entries: exhaustive per-subcluster table") {
    for (uint32_t cb : {14u, 16u, 21u}) {
      const Geometry g = geometry(cb, true);
      REQUIRE(g.subclusters == 32);
      const uint64_t host = uint64_t(3) << cb;
      // Reference model of the specification's table, per subcluster.
      auto model = [](bool has_host, uint64_t bitmap, uint32_t sc) {
        uint64_t alloc = bitmap & 0xffffffffu, zero = bitmap >> 32;
        if (has_host) {
          if (alloc & zero) return T::kInvalid;  // a subcluster both allocated and zero
          if (zero >> sc & 1) return T::kZeroAlloc;
          if (alloc >> sc & 1) return T::kNormal;
          return T::kUnallocatedAlloc;
        }
        if (alloc) return T::kInvalid;  // allocation bits without a host cluster
        if (zero >> sc & 1) return T::kZeroPlain;
        return T::kUnallocatedPlain;
      };
      // The explicit table for subcluster `sc` with only its own bits set.
      struct Row {
        bool host;
        bool alloc, zero;
        T expected;
      };
      const Row rows[] = {
          {false, false, false, T::kUnallocatedPlain}, {false, false, true, T::kZeroPlain},
          {false, true, false, T::kInvalid},           {false, true, true, T::kInvalid},
          {true, false, false, T::kUnallocatedAlloc},  {true, false, true, T::kZeroAlloc},
          {true, true, false, T::kNormal},             {true, true, true, T::kInvalid},
      };
      for (uint32_t sc = 0; sc < 32; ++sc) {
        for (const Row& r : rows) {
          CAPTURE(cb);
          CAPTURE(sc);
          CAPTURE(r.host);
          CAPTURE(r.alloc);
          CAPTURE(r.zero);
          uint64_t bitmap = (r.alloc ? 1ull << sc : 0) | (r.zero ? 1ull << (32 + sc) : 0);
          for (uint64_t copied : {uint64_t(0), kOflagCopied}) {
            L2Entry e{(r.host ? host : 0) | copied, bitmap};
            CHECK(subcluster_type(g, e, sc) == r.expected);
            // Compressed entries are compressed whatever the bitmap says.
            CHECK(subcluster_type(g, L2Entry{e.word | kOflagCompressed, bitmap}, sc) == T::kCompressed);
            // The standard zero flag is not used with extended L2.
            CHECK(subcluster_type(g, L2Entry{e.word | kOflagZero, bitmap}, sc) == r.expected);
          }
          // Bits of the other subclusters: the neighbour's bits decide nothing here unless they
          // make the whole entry invalid (alloc without host; alloc and zero of one subcluster).
          uint32_t other = (sc + 7) % 32;
          for (uint64_t extra : {1ull << other, 1ull << (32 + other), (1ull << other) | (1ull << (32 + other))}) {
            uint64_t bm = bitmap | extra;
            T expect = model(r.host, bm, sc);
            CAPTURE(bm);
            CHECK(subcluster_type(g, L2Entry{r.host ? host : 0, bm}, sc) == expect);
          }
          CHECK(model(r.host, bitmap, sc) == r.expected);
        }
      }
      // A few whole bitmaps against the model for every subcluster.
      const uint64_t bitmaps[] = {0,
                                  kL2BitmapAllAlloc,
                                  kL2BitmapAllZero,
                                  kL2BitmapAllAlloc | kL2BitmapAllZero,
                                  0x0000ffff0000ffffull,
                                  0xffff00000000ffffull,
                                  0x5555555500000000ull,
                                  0x00000000aaaaaaaaull,
                                  0xaaaaaaaa55555555ull,
                                  0x8000000000000001ull,
                                  0x0000000180000000ull};
      for (uint64_t bm : bitmaps) {
        for (bool has_host : {false, true}) {
          for (uint32_t sc = 0; sc < 32; ++sc) {
            CAPTURE(bm);
            CAPTURE(has_host);
            CAPTURE(sc);
            CHECK(subcluster_type(g, L2Entry{has_host ? host : 0, bm}, sc) == model(has_host, bm, sc));
          }
        }
      }
    }
    CHECK(is_zero_type(T::kZeroPlain));
    CHECK(is_zero_type(T::kZeroAlloc));
    CHECK_FALSE(is_zero_type(T::kNormal));
    CHECK_FALSE(is_zero_type(T::kUnallocatedPlain));
    CHECK(is_unallocated_type(T::kUnallocatedPlain));
    CHECK(is_unallocated_type(T::kUnallocatedAlloc));
    CHECK_FALSE(is_unallocated_type(T::kZeroPlain));
    CHECK_FALSE(is_unallocated_type(T::kCompressed));
    CHECK_FALSE(is_unallocated_type(T::kInvalid));
  }

  SUBCASE("compressed descriptors round trip for every cluster size") {
    for (uint32_t cb = kMinClusterBits; cb <= kMaxClusterBits; ++cb) {
      for (bool ext : {false, true}) {
        if (ext && cb < kMinExtendedL2ClusterBits) continue;
        const Geometry g = geometry(cb, ext);
        const uint64_t cs = g.cluster_size;
        const uint32_t x = 62 - (cb - 8);
        CAPTURE(cb);
        CAPTURE(ext);
        REQUIRE(g.csize_shift() == x);
        CHECK(g.coffset_mask() == (uint64_t(1) << x) - 1);
        CHECK(g.csize_mask() == (uint64_t(1) << (cb - 8)) - 1);
        // Highest host byte offset the descriptor can hold (and that qcow2 allows at all).
        const uint64_t max_off = std::min<uint64_t>(uint64_t(1) << x, kMaxHostOffset) - 1;
        const uint64_t offsets[] = {cs,          cs + 1,      cs + 511,         cs + 512,        2 * cs - 1,
                                    7 * cs + 100, uint64_t(1) << 40, max_off - 2 * cs, max_off - cs + 1, max_off - 511};
        const uint64_t sizes[] = {1, 2, 511, 512, 513, 1000, cs / 2, cs - 513, cs - 512, cs - 1};
        for (uint64_t off : offsets) {
          for (uint64_t size : sizes) {
            if (size == 0 || size >= cs) continue;
            CAPTURE(off);
            CAPTURE(size);
            uint64_t word = encode_compressed(g, off, size);
            L2Entry e{word, 0};
            CHECK(e.compressed());
            CHECK_FALSE(e.copied());
            CHECK(e.host_offset() == 0);
            CHECK(subcluster_type(g, e, 0) == T::kCompressed);
            CHECK(((word & ~(kOflagCompressed | kOflagCopied)) >> 62) == 0);
            CompressedExtent ce = compressed_extent(g, e);
            CHECK(ce.offset == off);
            // Whole sectors from off's sector through the sector holding the last byte.
            const uint64_t end_sector = ((off + size - 1) >> 9) + 1;
            CHECK(ce.offset + ce.length == end_sector * 512);
            CHECK(ce.length >= size);
            CHECK(ce.length < size + 512);
            // The sector count field: additional sectors, within its cb - 8 bits.
            uint64_t nb = (word >> x) & g.csize_mask();
            CHECK(nb == ((off + size - 1) >> 9) - (off >> 9));
            CHECK((word & g.coffset_mask()) == off);
          }
        }
        // The largest count the field must hold: a (cluster - 1)-byte payload starting at byte 511 of a sector.
        uint64_t w = encode_compressed(g, cs + 511, cs - 1);
        CHECK(((w >> x) & g.csize_mask()) == cs / 512);
        CHECK(compressed_extent(g, L2Entry{w, 0}).length == cs / 512 * 512 + 512 - 511);
      }
    }
  }

  SUBCASE("sc_range_mask edges") {
    CHECK(sc_range_mask(0, 0) == 0);
    CHECK(sc_range_mask(5, 5) == 0);
    CHECK(sc_range_mask(6, 5) == 0);
    CHECK(sc_range_mask(32, 0) == 0);
    CHECK(sc_range_mask(0, 1) == 1);
    CHECK(sc_range_mask(31, 32) == 0x80000000ull);
    CHECK(sc_range_mask(0, 32) == kL2BitmapAllAlloc);
    CHECK((sc_range_mask(0, 32) << 32) == kL2BitmapAllZero);
    CHECK(sc_range_mask(3, 7) == 0x78);
    CHECK(sc_range_mask(1, 31) == 0x7ffffffeull);
    CHECK(sc_range_mask(0, 64) == ~uint64_t(0));
    CHECK(sc_range_mask(32, 64) == kL2BitmapAllZero);
    CHECK(sc_range_mask(63, 64) == 1ull << 63);
    for (uint32_t a = 0; a <= 32; ++a) {
      for (uint32_t b = 0; b <= 32; ++b) {
        uint64_t expect = 0;
        for (uint32_t i = a; i < b; ++i) expect |= 1ull << i;
        CAPTURE(a);
        CAPTURE(b);
        CHECK(sc_range_mask(a, b) == expect);
      }
    }
  }

  SUBCASE("geometry for every cluster size and refcount order") {
    for (uint32_t cb = kMinClusterBits; cb <= kMaxClusterBits; ++cb) {
      for (bool ext : {false, true}) {
        if (ext && cb < kMinExtendedL2ClusterBits) continue;
        for (uint32_t order = 0; order <= 6; ++order) {
          CAPTURE(cb);
          CAPTURE(ext);
          CAPTURE(order);
          const Geometry g = geometry(cb, ext, order);
          const uint64_t cs = uint64_t(1) << cb;
          CHECK(g.cluster_bits == cb);
          CHECK(g.cluster_size == cs);
          CHECK(g.extended_l2 == ext);
          CHECK(g.l2_entry_size == (ext ? 16u : 8u));
          CHECK(g.l2_entries == cs / (ext ? 16 : 8));
          CHECK((uint64_t(1) << g.l2_bits) == g.l2_entries);
          CHECK(g.subclusters == (ext ? 32u : 1u));
          CHECK(g.subcluster_size == (ext ? cs / 32 : cs));
          CHECK((uint64_t(1) << g.subcluster_bits) == g.subcluster_size);
          CHECK(g.refcount_order == order);
          CHECK(g.refcount_bits == (1u << order));
          CHECK(g.refblock_entries == cs * 8 / (1u << order));
          CHECK((uint64_t(1) << g.refblock_bits) == g.refblock_entries);
          CHECK(g.max_refcount() == (order == 6 ? ~uint64_t(0) : (uint64_t(1) << (1u << order)) - 1));
          CHECK(g.l2_coverage() == g.l2_entries * cs);
          // Splitting guest offsets.
          const uint64_t cov = g.l2_coverage();
          const uint64_t guest = 3 * cov + 5 * cs + (ext ? 7 * g.subcluster_size : 0) + 1;
          CHECK(g.l1_index(guest) == 3);
          CHECK(g.l2_index(guest) == 5);
          CHECK(g.sc_index(guest) == (ext ? 7u : 0u));
          CHECK(g.offset_into_cluster(guest) == (ext ? 7 * g.subcluster_size : 0) + 1);
          CHECK(g.cluster_index(guest) == 3 * g.l2_entries + 5);
          CHECK(g.l2_index(cov - 1) == g.l2_entries - 1);
          CHECK(g.l1_index(cov - 1) == 0);
          CHECK(g.l1_index(cov) == 1);
          CHECK(g.l1_entries_for(0) == 0);
          CHECK(g.l1_entries_for(1) == 1);
          CHECK(g.l1_entries_for(cov) == 1);
          CHECK(g.l1_entries_for(cov + 1) == 2);
        }
      }
    }
  }
}

}  // TEST_SUITE
