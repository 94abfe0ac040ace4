// The convert copy engine; see convert_copy.hpp.
#include "commands/convert_copy.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/compress.hpp"

namespace qimg {

// --- SourceSet ------------------------------------------------------------------

qcow::Status SourceSet::open(const std::vector<std::string>& files, const qcow::OpenOptions& options) {
  for (const std::string& f : files) {
    auto image = qcow::Image::open(f, options);
    if (!image) return image.status();
    if (options.key_secret) warn_if_legacy_aes(*image);
    const uint64_t size = image->size();
    sources_.push_back({std::move(image).value(), total_});
    total_ += size;
  }
  return qcow::Status::ok();
}

size_t SourceSet::find(uint64_t t) const {
  size_t i = 0;
  while (i + 1 < sources_.size() && sources_[i + 1].base <= t) ++i;
  while (i < sources_.size() && sources_[i].image.size() == 0) ++i;
  return i;
}

qcow::Status SourceSet::next_run(uint64_t t, uint64_t max, uint64_t* run, bool* zero) {
  *run = 0;
  std::optional<bool> kind;
  for (size_t i = find(t); i < sources_.size() && *run < max; ++i) {
    Source& s = sources_[i];
    const uint64_t from = t + *run - s.base;
    const uint64_t len = std::min(s.image.size() - from, max - *run);
    if (len == 0) continue;
    uint64_t covered = 0;
    bool stopped = false;
    QCOW_TRY(s.image.block_status(from, len, [&](const qcow::Extent& e) {
      if (!kind) kind = e.zero;
      if (e.zero != *kind) {
        stopped = true;
        return false;
      }
      covered = std::min(e.offset + e.length - from, len);
      return covered < len;
    }));
    *run += covered;
    if (stopped || covered < len) break;
  }
  *run = std::min(*run, max);
  *zero = kind.value_or(true);
  return qcow::Status::ok();
}

qcow::Status SourceSet::read(uint64_t t, std::span<uint8_t> buf) {
  size_t done = 0;
  for (size_t i = find(t); i < sources_.size() && done < buf.size(); ++i) {
    Source& s = sources_[i];
    const uint64_t from = t + done - s.base;
    const uint64_t n = std::min<uint64_t>(s.image.size() - from, buf.size() - done);
    QCOW_TRY(s.image.read(from, buf.subspan(done, n)));
    done += n;
  }
  return qcow::Status::ok();
}

// --- The pipeline ---------------------------------------------------------------

namespace {

bool all_zero(const uint8_t* p, size_t n) { return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0); }

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

struct Chunk {
  enum class State { kFree, kFilling, kQueued, kReady, kWriting } state = State::kFree;
  uint64_t seq = 0, offset = 0, length = 0;
  bool all_zero = false;  // the source is zero throughout and nothing needs comparing: no buffers
  bool has_base = false;
  std::vector<uint8_t> data, base, out;
  std::vector<uint8_t> kinds;     // per unit
  std::vector<uint32_t> csize;    // -c: compressed length per cluster (0: store uncompressed)
};

class Pipeline {
 public:
  Pipeline(SourceSet& sources, qcow::Image* base, qcow::Image& target, const CopyConfig& config, Progress& progress)
      : src_(sources), base_(base), dst_(target), cfg_(config), progress_(progress),
        threads_(config.compress ? std::max(config.workers, 1) : 0),
        slots_(size_t(std::max(config.workers, 1)) + 2),
        chunks_((sources.total() + kChunkBytes - 1) / kChunkBytes) {}

  qcow::Status run() {
    if (threads_ == 0) return run_inline();
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

 private:
  // Without -c there is little to overlap: read, classify and write each chunk
  // in turn on the calling thread. Hand-overs between threads cost a wake-up
  // each, which on a busy machine means waiting for a time slice (measured:
  // slower than doing it in turn).
  qcow::Status run_inline() {
    Chunk& c = slots_[0];
    uint64_t written = 0;
    for (uint64_t seq = 0; seq < chunks_; ++seq) {
      c.seq = seq;
      c.offset = seq * kChunkBytes;
      c.length = std::min(kChunkBytes, src_.total() - c.offset);
      QCOW_TRY(guarded([&] { return fill(c); }));
      QCOW_TRY(guarded([&] { return process(c); }));
      QCOW_TRY(guarded([&] { return write(c); }));
      written += c.length;
      progress_.update(written);
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
    for (uint64_t seq = 0; seq < chunks_; ++seq) {
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
      c->offset = seq * kChunkBytes;
      c->length = std::min(kChunkBytes, src_.total() - c->offset);
      if (qcow::Status s = guarded([&] { return fill(*c); }); !s) return set_error(std::move(s));
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
    for (uint64_t n = 0; n < chunks_; ++n) {
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
      {
        std::lock_guard lock(mu_);
        c->state = Chunk::State::kFree;
      }
      free_cv_.notify_one();  // only the reader waits for this
      ++next;
      progress_.update(written);
    }
  }

  // Reader: block status of the sources, then reads of the data runs only (holes are never read).
  qcow::Status fill(Chunk& c) {
    c.all_zero = false;
    c.has_base = false;
    struct Run {
      uint64_t at, length;
      bool zero;
    };
    std::vector<Run> runs;
    bool only_zero = true;
    for (uint64_t pos = c.offset; pos < c.offset + c.length;) {
      uint64_t run = 0;
      bool zero = false;
      QCOW_TRY(src_.next_run(pos, c.offset + c.length - pos, &run, &zero));
      if (run == 0) return qcow::Status::internal("block status returned an empty run");
      runs.push_back({pos, run, zero});
      only_zero &= zero;
      pos += run;
    }
    if (only_zero && !base_ && cfg_.sparse != 0) {
      c.all_zero = true;
      return qcow::Status::ok();
    }
    c.data.resize(c.length);
    for (const Run& r : runs) {
      std::span<uint8_t> out(c.data.data() + (r.at - c.offset), r.length);
      if (r.zero) std::memset(out.data(), 0, out.size());
      else QCOW_TRY(src_.read(r.at, out));
    }
    if (base_) {
      c.base.resize(c.length);
      const uint64_t size = base_->size();
      const uint64_t n = c.offset < size ? std::min(c.length, size - c.offset) : 0;
      if (n) QCOW_TRY(base_->read(c.offset, std::span(c.base.data(), n)));
      std::memset(c.base.data() + n, 0, c.length - n);
      c.has_base = true;
    }
    return qcow::Status::ok();
  }

  // Worker: classifies each unit, applies -S, compresses.
  qcow::Status process(Chunk& c) {
    if (c.all_zero) return qcow::Status::ok();
    const uint64_t u = unit();
    const size_t n = size_t((c.length + u - 1) / u);
    c.kinds.assign(n, kData);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t at = i * u, len = std::min(u, c.length - at);
      const uint8_t* p = c.data.data() + at;
      if (c.has_base && std::memcmp(p, c.base.data() + at, len) == 0) c.kinds[i] = kSame;
      else if (cfg_.sparse != 0 && all_zero(p, len)) c.kinds[i] = kZero;
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
        const uint64_t bytes = std::min<uint64_t>(j * u, c.length) - i * u;
        const bool next_to_data = (i > 0 && c.kinds[i - 1] == kData) || (j < n && c.kinds[j] == kData);
        if (bytes < cfg_.sparse && next_to_data) std::fill(c.kinds.begin() + i, c.kinds.begin() + j, uint8_t(kData));
        i = j;
      }
    }
    if (cfg_.compress) {
      c.out.resize(n * u);
      c.csize.assign(n, 0);
      for (size_t i = 0; i < n; ++i) {
        if (c.kinds[i] != kData) continue;
        const uint64_t at = i * u, len = std::min(u, c.length - at);
        QCOW_ASSIGN_OR_RETURN(size_t size, qcow::compress_cluster(cfg_.compression_type, cfg_.cluster_size,
                                                                   std::span(c.data.data() + at, len),
                                                                   std::span(c.out.data() + at, u - 1)));
        c.csize[i] = uint32_t(size);
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
            QCOW_TRY(dst_.write(c.offset + at, std::span<const uint8_t>(c.data.data() + at, len)));
            break;
          }
          for (size_t k = i; k < j; ++k) {
            const uint64_t ka = k * u, kl = std::min(u, c.length - ka);
            if (c.csize[k]) {
              QCOW_TRY(dst_.write_compressed_cluster(c.offset + ka, std::span(c.out.data() + ka, c.csize[k])));
            } else {
              QCOW_TRY(dst_.write(c.offset + ka, std::span<const uint8_t>(c.data.data() + ka, kl)));
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

  const int threads_;           // worker threads: only -c has work for them
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
