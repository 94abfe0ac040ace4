// Guest contents of a crash workload, sparse: 64 KiB chunks shared between the
// states of a run (copy on write), missing chunks reading as zeros. Raw files
// qemu-img writes are read the same way, skipping their holes, so a 4 GiB
// virtual disk with a little data costs what the data costs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace crash {

class Content {
 public:
  static constexpr uint64_t kChunk = 64 * 1024;

  uint64_t size() const { return size_; }
  void write(uint64_t off, std::span<const uint8_t> data);
  void zero(uint64_t off, uint64_t len);
  // A shrink zeroes what lies past the new size, except [size, keep): those bytes are
  // hidden until a later growth shows them again (QEMU keeps a last cluster's tail).
  void resize(uint64_t size, uint64_t keep = 0);
  // The chunk at index c, or nullptr when it reads as zeros.
  const std::vector<uint8_t>* chunk(uint64_t c) const;
  const std::map<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>& chunks() const { return chunks_; }
  bool operator==(const Content& o) const;

  // Reads a raw file (sparse-aware: holes are not read).
  static Content load_raw(const std::string& path);

 private:
  std::vector<uint8_t>& writable_chunk(uint64_t c);
  uint64_t size_ = 0;
  std::map<uint64_t, std::shared_ptr<const std::vector<uint8_t>>> chunks_;
};

// Whether every byte of `got` reads as in one of the states (first..last), and the
// size matches one of them; *why names the first byte that does not.
bool matches_any(const Content& got, const std::vector<Content>& states, size_t first, size_t last, std::string* why);

}  // namespace crash
