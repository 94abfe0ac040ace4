// Read-only mappings of source files; see file_maps.hpp.
#include "commands/file_maps.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include <fmt/format.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels answer EINVAL, which is ignored
#endif

namespace qimg {

namespace {

// The mapped ranges, for the SIGBUS handler (which may only read plain atomics).
constexpr int kMaxRegions = 64;
std::atomic<uintptr_t> g_region_start[kMaxRegions], g_region_end[kMaxRegions];
std::atomic<int> g_regions{0};
std::atomic<bool> g_lost_pages{false};
long g_page_size = 4096;

void on_sigbus(int sig, siginfo_t* info, void*) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  const int n = g_regions.load();
  for (int i = 0; i < n; ++i) {
    if (addr >= g_region_start[i].load() && addr < g_region_end[i].load()) {
      void* page = reinterpret_cast<void*>(addr & ~uintptr_t(g_page_size - 1));
      if (mmap(page, size_t(g_page_size), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
        g_lost_pages.store(true);
        return;  // the access is retried and reads zeros; check() reports the loss
      }
    }
  }
  // Not ours: let the default action happen when the access faults again.
  signal(sig, SIG_DFL);
}

bool install_sigbus_handler() {
  static const bool installed = [] {
    g_page_size = sysconf(_SC_PAGESIZE);
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, nullptr) == 0;
  }();
  return installed;
}

}  // namespace

FileMaps::~FileMaps() {
  for (Map& m : maps_) {
    if (m.base) munmap(const_cast<uint8_t*>(m.base), m.size);
    if (m.fd >= 0) close(m.fd);
  }
}

const uint8_t* FileMaps::at(const std::string& path, uint64_t offset, uint64_t length) {
  auto it = std::find_if(maps_.begin(), maps_.end(), [&](const Map& m) { return m.path == path; });
  if (it == maps_.end()) {
    Map m;
    m.path = path;
    // Regular files only: a block device's size cannot shrink under us the same way,
    // but mapping it gains little and some drivers refuse it.
    struct stat st {};
    if (g_regions.load() < kMaxRegions && install_sigbus_handler() &&
        (m.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC)) >= 0 && fstat(m.fd, &st) == 0 && S_ISREG(st.st_mode) &&
        st.st_size > 0) {
      void* p = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_SHARED, m.fd, 0);
      if (p != MAP_FAILED) {
        m.base = static_cast<const uint8_t*>(p);
        m.size = uint64_t(st.st_size);
        const int i = g_regions.load();
        g_region_start[i].store(reinterpret_cast<uintptr_t>(m.base));
        g_region_end[i].store(reinterpret_cast<uintptr_t>(m.base) + m.size);
        g_regions.store(i + 1);
      }
    }
    maps_.push_back(std::move(m));
    it = maps_.end() - 1;
  }
  if (!it->base || offset > it->size || length > it->size - offset) return nullptr;
  return it->base + offset;
}

void FileMaps::release(const uint8_t* p, uint64_t length) {
  const auto page = uintptr_t(g_page_size);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + length + page - 1) & ~(page - 1);
  // Pages shared with a neighbouring chunk are simply faulted in again if still needed.
  if (length) madvise(reinterpret_cast<void*>(a), b - a, MADV_DONTNEED);
}

void FileMaps::populate(const uint8_t* p, uint64_t length) {
  const auto page = uintptr_t(g_page_size);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + length + page - 1) & ~(page - 1);
  if (length) (void)madvise(reinterpret_cast<void*>(a), b - a, MADV_POPULATE_READ);
}

qcow::Status FileMaps::check() const {
  for (const Map& m : maps_) {
    if (!m.base) continue;
    struct stat st {};
    if (g_lost_pages.load() || (fstat(m.fd, &st) == 0 && uint64_t(st.st_size) < m.size))
      return qcow::Status::error(qcow::ErrorCode::kIo,
                                 fmt::format("{}: the file shrank while it was being read (was {} bytes)", m.path, m.size));
  }
  return qcow::Status::ok();
}

}  // namespace qimg
