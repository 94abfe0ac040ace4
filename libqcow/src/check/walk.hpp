// Walks every structure of a qcow2 image and recomputes the reference count of
// each host cluster (for check and for rebuilding refcounts of dirty images).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qcow2/qcow2_driver.hpp"

namespace qcow {

struct RefcountWalk {
  std::vector<uint64_t> counts;          // recomputed refcount per host cluster
  std::vector<std::string> corruptions;  // structural problems, one line each
  uint64_t allocated_clusters = 0, compressed_clusters = 0, fragmented_clusters = 0;
};

enum class WalkRefcountStructures { kInclude, kExclude };

// Memory is bounded by the file size: one counter per host cluster of the file.
Status walk_refcounts(Qcow2Driver& d, WalkRefcountStructures mode, RefcountWalk& out);

}  // namespace qcow
