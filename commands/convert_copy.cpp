// The convert copy engine; see convert_copy.hpp.
#include "commands/convert_copy.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/bytes.hpp"
#include "qcow/compress.hpp"

namespace qimg {

// --- The pipeline ---------------------------------------------------------------

namespace {

// --salvage retries a failed read in pieces of this size, then per 512-byte sector.
constexpr uint64_t kSalvagePiece = 64 << 10;

// Runs f, turning an exception (allocation failure) into a Status: threads must not throw.
template <class F>
qcow::Status guarded(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return qcow::Status::limit("out of memory");
  } catch (const std::exception& e) {
    return qcow::Status::internal(e.what());
  }
}

enum UnitKind : uint8_t { kData, kZero, kSame /* reads the same in the base: leave unallocated */ };

// A byte buffer that grows without zeroing: every byte of a chunk is written (read,
// or zero-filled where it is used) before it is read, and a fresh buffer's pages that a
// mostly-zero chunk never writes stay untouched, so they cost no resident memory.
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using ByteBuffer = std::vector<uint8_t, UninitAllocator<uint8_t>>;

struct Chunk {
  enum class State { kFree, kFilling, kQueued, kReady, kWriting } state = State::kFree;
  uint64_t seq = 0, offset = 0, length = 0;
  uint64_t grid_chunks = 1;  // chunks of the grid it covers (more when a zero run was merged in)
  bool all_zero = false;  // the source is zero throughout and nothing needs comparing: no buffers
  bool has_base = false;
  ByteBuffer data, base;
  std::vector<uint8_t> out;
  std::vector<uint8_t> kinds;     // per unit
  std::vector<uint8_t> zero_run;  // per unit: inside a zero run of the source (never read)
  std::vector<uint32_t> csize;    // -c: compressed length per cluster (0: store uncompressed)
  std::vector<uint64_t> cstart;   // -c: where each compressed cluster starts in `out`
  const uint8_t* bytes() const { return data.data(); }
};

class Pipeline {
 public:
  Pipeline(SourceSet& sources, qcow::Image* base, qcow::Image& target, const CopyConfig& config, Progress& progress)
      : src_(sources), base_(base), dst_(target), cfg_(config), progress_(progress),
        threads_(config.compress ? std::max(config.workers, 1) : (config.workers >= 2 ? 1 : 0)),
        chunk_bytes_(chunk_bytes(config)),
        slots_(size_t(std::max(config.workers, 1)) + 2),
        chunks_(qcow::div_round_up(sources.total(), chunk_bytes_)) {}

  qcow::Status run() { return threads_ == 0 ? run_inline() : run_threads(); }

 private:
  qcow::Status run_threads() {
    std::vector<std::thread> threads;
    qcow::Status started = guarded([&] {
      threads.emplace_back([this] { reader_main(); });
      for (int i = 0; i < threads_; ++i) threads.emplace_back([this] { worker_main(); });
      return qcow::Status::ok();
    });
    if (started) writer_main();
    else set_error(started.prepend("cannot start threads: "));
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    notify_all();
    for (std::thread& t : threads) t.join();
    return error_;
  }

  // -m 1 without -c: read, classify and write each chunk in turn on the calling
  // thread (no hand-overs; on a machine busy with other work a hand-over waits for
  // a time slice).
  qcow::Status run_inline() {
    Chunk& c = slots_[0];
    uint64_t written = 0;
    for (uint64_t seq = 0; seq < chunks_; seq += c.grid_chunks) {
      c.seq = seq;
      c.offset = seq * chunk_bytes_;
      c.length = std::min(chunk_bytes_, src_.total() - c.offset);
      QCOW_TRY(guarded([&] { return fill(c); }));
      QCOW_TRY(guarded([&] { return process(c); }));
      QCOW_TRY(guarded([&] { return write(c); }));
      written += c.length;
      progress_.update(written);
      throttle(written);
    }
    return qcow::Status::ok();
  }

  // -r: sleeps until `written` guest bytes are no ahead of the rate limit.
  void throttle(uint64_t written) {
    if (!cfg_.rate_limit) return;
    const auto due = start_ + std::chrono::duration<double>(double(written) / double(cfg_.rate_limit));
    std::this_thread::sleep_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
  }

  // --salvage: reads what can be read, in smaller and smaller pieces (64 KiB, then
  // 512-byte sectors); what cannot be read becomes zeros, with one warning per piece.
  qcow::Status read_salvaging(uint64_t t, std::span<uint8_t> out) {
    qcow::Status s = src_.read(t, out);
    if (s || !cfg_.salvage) return s;
    for (uint64_t at = 0; at < out.size();) {
      const uint64_t piece = std::min<uint64_t>(out.size() - at, kSalvagePiece - (t + at) % kSalvagePiece);
      if (!src_.read(t + at, out.subspan(at, piece))) {
        qcow::Status first;
        for (uint64_t sec = 0; sec < piece;) {
          const uint64_t n = std::min<uint64_t>(piece - sec, 512 - (t + at + sec) % 512);
          if (qcow::Status e = src_.read(t + at + sec, out.subspan(at + sec, n)); !e) {
            std::memset(out.data() + at + sec, 0, n);
            if (first) first = qcow::Status::error(e.code(), fmt::format("error while reading at byte {}: {}", t + at + sec, e.message()));
          }
          sec += n;
        }
        if (!first) fmt::print(stderr, "qimg: warning: {} (read as zeros)\n", first.message());
      }
      at += piece;
    }
    return qcow::Status::ok();
  }

  uint64_t unit() const { return cfg_.compress ? cfg_.cluster_size : cfg_.unit; }

  void set_error(qcow::Status s) {
    std::lock_guard lock(mu_);
    if (error_.is_ok()) error_ = std::move(s);
    stop_ = true;
    notify_all();
  }

  void notify_all() {
    free_cv_.notify_all();
    work_cv_.notify_all();
    ready_cv_.notify_all();
  }

  void reader_main() {
    for (uint64_t seq = 0; seq < chunks_;) {
      Chunk* c = nullptr;
      {
        std::unique_lock lock(mu_);
        free_cv_.wait(lock, [&] {
          if (stop_) return true;
          for (Chunk& s : slots_)
            if (s.state == Chunk::State::kFree) return (c = &s) != nullptr;
          return false;
        });
        if (stop_) return;
        c->state = Chunk::State::kFilling;
      }
      c->seq = seq;
      c->offset = seq * chunk_bytes_;
      c->length = std::min(chunk_bytes_, src_.total() - c->offset);
      if (qcow::Status s = guarded([&] { return fill(*c); }); !s) return set_error(std::move(s));
      seq += c->grid_chunks;
      {
        std::lock_guard lock(mu_);
        c->state = Chunk::State::kQueued;
        queue_.push_back(c);
      }
      work_cv_.notify_one();
    }
    std::lock_guard lock(mu_);
    reader_done_ = true;
    work_cv_.notify_all();
  }

  void worker_main() {
    for (;;) {
      Chunk* c = nullptr;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [&] { return stop_ || !queue_.empty() || reader_done_; });
        if (stop_ || queue_.empty()) return;
        c = queue_.front();
        queue_.pop_front();
      }
      if (qcow::Status s = guarded([&] { return process(*c); }); !s) return set_error(std::move(s));
      {
        std::lock_guard lock(mu_);
        c->state = Chunk::State::kReady;
      }
      ready_cv_.notify_one();  // only the writer waits for this
    }
  }

  void writer_main() {
    uint64_t next = 0, written = 0;
    while (next < chunks_) {
      Chunk* c = nullptr;
      {
        std::unique_lock lock(mu_);
        ready_cv_.wait(lock, [&] {
          if (stop_) return true;
          for (Chunk& s : slots_)
            if (s.state == Chunk::State::kReady && (cfg_.out_of_order || s.seq == next)) return (c = &s) != nullptr;
          return false;
        });
        if (stop_) return;
        c->state = Chunk::State::kWriting;
      }
      if (qcow::Status s = guarded([&] { return write(*c); }); !s) return set_error(std::move(s));
      written += c->length;
      const uint64_t covered = c->grid_chunks;
      {
        std::lock_guard lock(mu_);
        c->state = Chunk::State::kFree;
      }
      free_cv_.notify_one();  // only the reader waits for this
      next += covered;
      progress_.update(written);
      throttle(written);
    }
  }

  // Reader: block status of the sources, then reads of the data runs only (holes are
  // never read) into the chunk's buffer, which is reused chunk after chunk. Reading
  // into resident memory costs one copy more than mapping the source would, but the
  // target write then never faults on source pages inside the kernel's copy, which
  // made mapped reads take 0.3 s or 1.7 s for the same job depending on the host's
  // memory state (docs/benchmarks.md).
  qcow::Status fill(Chunk& c) {
    c.grid_chunks = 1;
    c.all_zero = false;
    c.has_base = false;
    struct Run {
      uint64_t at;  // offset in the chunk
      SourceSet::Run r;
    };
    std::vector<Run> runs;
    bool only_zero = true;
    for (uint64_t pos = c.offset; pos < c.offset + c.length;) {
      SourceSet::Run r;
      if (qcow::Status s = src_.next_run(pos, c.offset + c.length - pos, &r); !s) {
        if (!cfg_.salvage) return s;
        // --salvage: no block status here; read the next 64 KiB as data (errors become zeros).
        r = SourceSet::Run{};
        r.zero = false;
        r.length = std::min<uint64_t>(c.offset + c.length - pos, kSalvagePiece - pos % kSalvagePiece);
      }
      if (r.length == 0) return qcow::Status::internal("block status returned an empty run");
      runs.push_back({pos - c.offset, r});
      only_zero &= r.zero;
      pos += r.length;
    }
    if (only_zero && !base_ && cfg_.sparse != 0) {
      c.all_zero = true;
      merge_zero_run(c);
      return qcow::Status::ok();
    }
    const uint64_t u = unit();
    const size_t n = size_t(qcow::div_round_up(c.length, u));
    // Units entirely inside a zero run read as zeros without looking at their bytes;
    // their bytes are only filled in (process()) if they end up written as data.
    c.zero_run.assign(n, 0);
    c.data.resize(c.length);
    for (const Run& r : runs) {
      std::span<uint8_t> out(c.data.data() + r.at, r.r.length);
      if (!r.r.zero) {
        QCOW_TRY(read_salvaging(c.offset + r.at, out));
        continue;
      }
      const uint64_t first = qcow::div_round_up(r.at, u), end = r.at + r.r.length;
      uint64_t i = first;
      for (; i * u < end && std::min(c.length, (i + 1) * u) <= end; ++i) c.zero_run[size_t(i)] = 1;
      // The parts of the run in units shared with data.
      std::memset(out.data(), 0, std::min(first * u, end) - r.at);
      if (i * u < end) std::memset(c.data.data() + i * u, 0, end - i * u);
    }
    if (base_) {
      c.base.resize(c.length);
      const uint64_t size = base_->size();
      const uint64_t nb = c.offset < size ? std::min(c.length, size - c.offset) : 0;
      if (nb) QCOW_TRY(base_->read(c.offset, std::span(c.base.data(), nb)));
      std::memset(c.base.data() + nb, 0, c.length - nb);
      c.has_base = true;
    }
    return qcow::Status::ok();
  }

  // A chunk that reads as zeros throughout takes in the zero run that follows it, in whole
  // chunks of the grid, up to kMaxZeroChunk: one handover between the threads instead of one
  // per 2 MiB. Converting a 4 TiB image with 64 Ki clusters in use spent most of its time
  // handing 2 Mi empty chunks from thread to thread (futex wake-ups, 47% of perf samples).
  // A failed block status only stops the merge: the next chunk's fill() meets it again.
  void merge_zero_run(Chunk& c) {
    constexpr uint64_t kMaxZeroChunk = 1ull << 30;
    const uint64_t end = c.offset + c.length, limit = std::min(src_.total(), c.offset + kMaxZeroChunk);
    if (end >= limit) return;
    SourceSet::Run r;
    if (!src_.next_run(end, limit - end, &r) || !r.zero) return;
    const uint64_t run_end = end + r.length;
    const uint64_t merged_end = run_end >= src_.total() ? src_.total() : c.offset + (run_end - c.offset) / chunk_bytes_ * chunk_bytes_;
    c.length = merged_end - c.offset;
    c.grid_chunks = qcow::div_round_up(c.length, chunk_bytes_);
  }

  // A unit of a zero run that is to be written as data: fill() left its bytes unset.
  void zero_unit(Chunk& c, size_t i) const {
    const uint64_t at = i * unit();
    std::memset(c.data.data() + at, 0, std::min(unit(), c.length - at));
  }

  // Worker: classifies each unit, applies -S, compresses.
  qcow::Status process(Chunk& c) {
    if (c.all_zero) return qcow::Status::ok();
    const uint64_t u = unit();
    const size_t n = size_t(qcow::div_round_up(c.length, u));
    c.kinds.assign(n, kData);
    const uint8_t* bytes = c.bytes();
    for (size_t i = 0; i < n; ++i) {
      const uint64_t at = i * u, len = std::min(u, c.length - at);
      if (c.zero_run[i]) {  // zeros without reading them (the buffer does not hold them yet)
        if (c.has_base && qcow::buffer_is_zero(c.base.data() + at, len)) c.kinds[i] = kSame;
        else if (cfg_.sparse != 0) c.kinds[i] = kZero;
        else zero_unit(c, i);  // -S 0: written as data
        continue;
      }
      const uint8_t* p = bytes + at;
      if (c.has_base && std::memcmp(p, c.base.data() + at, len) == 0) c.kinds[i] = kSame;
      else if (cfg_.sparse != 0 && qcow::buffer_is_zero(p, len)) c.kinds[i] = kZero;
    }
    // Zero runs shorter than -S next to data are written as data (qemu-img's rule).
    if (!cfg_.compress && cfg_.sparse > u) {
      for (size_t i = 0; i < n;) {
        if (c.kinds[i] != kZero) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < n && c.kinds[j] == kZero) ++j;
        const uint64_t run_bytes = std::min<uint64_t>(j * u, c.length) - i * u;
        const bool next_to_data = (i > 0 && c.kinds[i - 1] == kData) || (j < n && c.kinds[j] == kData);
        if (run_bytes < cfg_.sparse && next_to_data) {
          std::fill(c.kinds.begin() + i, c.kinds.begin() + j, uint8_t(kData));
          for (size_t k = i; k < j; ++k)
            if (c.zero_run[k]) zero_unit(c, k);
        }
        i = j;
      }
    }
    if (cfg_.compress) {
      // Compressed clusters are packed into `out` (only as large as they need; stored
      // clusters are written from the source bytes), via one cluster of scratch.
      thread_local std::vector<uint8_t> scratch;
      scratch.resize(u);
      c.out.clear();
      c.csize.assign(n, 0);
      c.cstart.assign(n, 0);
      for (size_t i = 0; i < n; ++i) {
        if (c.kinds[i] != kData) continue;
        const uint64_t at = i * u, len = std::min(u, c.length - at);
        QCOW_ASSIGN_OR_RETURN(size_t size, qcow::compress_cluster(cfg_.compression_type, cfg_.cluster_size,
                                                                   std::span(bytes + at, len),
                                                                   std::span(scratch.data(), u - 1)));
        c.csize[i] = uint32_t(size);
        c.cstart[i] = c.out.size();
        c.out.insert(c.out.end(), scratch.begin(), scratch.begin() + ptrdiff_t(size));
      }
    }
    return qcow::Status::ok();
  }

  qcow::Status zeroes(uint64_t at, uint64_t len) {
    if (cfg_.target_zero || len == 0) return qcow::Status::ok();
    return dst_.write_zeroes(at, len, qcow::Unmap::kYes);
  }

  // Writer: in guest order (unless -W), runs of equal kind in one request each.
  qcow::Status write(Chunk& c) {
    if (c.all_zero) return zeroes(c.offset, c.length);
    const uint64_t u = unit();
    const size_t n = c.kinds.size();
    for (size_t i = 0; i < n;) {
      size_t j = i + 1;
      while (j < n && c.kinds[j] == c.kinds[i]) ++j;
      const uint64_t at = i * u, len = std::min<uint64_t>(j * u, c.length) - at;
      switch (c.kinds[i]) {
        case kSame: break;
        case kZero: QCOW_TRY(zeroes(c.offset + at, len)); break;
        case kData:
          if (!cfg_.compress) {
            QCOW_TRY(dst_.write(c.offset + at, std::span<const uint8_t>(c.bytes() + at, len)));
            break;
          }
          for (size_t k = i; k < j; ++k) {
            const uint64_t ka = k * u, kl = std::min(u, c.length - ka);
            if (c.csize[k]) {
              QCOW_TRY(dst_.write_compressed_cluster(c.offset + ka, std::span(c.out.data() + c.cstart[k], c.csize[k])));
            } else {
              QCOW_TRY(dst_.write(c.offset + ka, std::span<const uint8_t>(c.bytes() + ka, kl)));
            }
          }
          break;
      }
      i = j;
    }
    return qcow::Status::ok();
  }

  SourceSet& src_;
  qcow::Image* base_;
  qcow::Image& dst_;
  const CopyConfig& cfg_;
  Progress& progress_;

  const int threads_;           // worker threads (one without -c: it classifies while the writer writes)
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  const uint64_t chunk_bytes_;
  std::mutex mu_;
  std::condition_variable free_cv_, work_cv_, ready_cv_;  // reader, workers, writer wait on these
  std::vector<Chunk> slots_;
  std::deque<Chunk*> queue_;    // filled chunks waiting for a worker, in guest order
  const uint64_t chunks_;
  bool stop_ = false;
  bool reader_done_ = false;
  qcow::Status error_;
};

}  // namespace

qcow::Status copy_image(SourceSet& sources, qcow::Image* base, qcow::Image& target, const CopyConfig& config,
                        Progress& progress) {
  try {
    Pipeline p(sources, base, target, config, progress);
    return p.run();
  } catch (const std::bad_alloc&) {
    return qcow::Status::limit("out of memory");
  }
}

}  // namespace qimg
