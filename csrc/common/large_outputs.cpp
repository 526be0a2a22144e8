#include "common/large_outputs.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <vector>

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/Allocator.h>
#include <c10/util/Exception.h>

#include "common/huge_pages.h"

#if defined(__linux__)
#define FUSEDOPT_LARGE_OUTPUT_CACHE 1
#endif

namespace fusedopt {

#if FUSEDOPT_LARGE_OUTPUT_CACHE

namespace {

struct Block {
  void* data;
  size_t bytes;  // mapped, a multiple of kHugePage
};

// A c10::Allocator whose blocks are anonymous mappings advised to use transparent huge pages, kept on
// free for reuse while the freed blocks total at most the limit, and unmapped otherwise (and by
// release_output_cache). A request takes a cached block of at least its size and at most 1/8 more
// (the same output sizes recur every step), else maps a new one. Not reported to torch's memory
// profiler. The instance is never destroyed: tensors may outlive static destruction.
class LargeOutputCache final : public c10::Allocator {
 public:
  LargeOutputCache() {
    limit_ = kDefaultOutputCacheBytes;
    if (const char* env = std::getenv("FUSEDOPT_CPU_OUTPUT_CACHE_MB")) {
      char* end = nullptr;
      const long long mb = std::strtoll(env, &end, 10);
      TORCH_CHECK(end != env && *end == '\0' && mb >= 0, "FUSEDOPT_CPU_OUTPUT_CACHE_MB must be a number of "
                  "MiB >= 0 (0 turns the cache off), got '", env, "'");
      limit_ = static_cast<size_t>(mb) << 20;
    }
  }

  bool enabled() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_ > 0;
  }

  c10::DataPtr allocate(size_t n) override {
    const size_t bytes = std::max(kHugePage, round_up_to_huge_pages(n));
    Block* block = take_cached(bytes);
    if (block == nullptr) block = map(bytes);
    return {block->data, block, &LargeOutputCache::free_block, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  OutputCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(cached_bytes_), static_cast<int64_t>(cached_.size()),
            static_cast<int64_t>(limit_), reuses_};
  }

  int64_t release() {
    std::vector<Block*> blocks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(cached_);
      cached_bytes_ = 0;
    }
    int64_t released = 0;
    for (Block* b : blocks) {
      released += static_cast<int64_t>(b->bytes);
      unmap(b);
    }
    return released;
  }

  void set_limit(size_t bytes) {
    std::vector<Block*> over;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      while (cached_bytes_ > limit_) {  // oldest first
        over.push_back(cached_.front());
        cached_bytes_ -= cached_.front()->bytes;
        cached_.erase(cached_.begin());
      }
    }
    for (Block* b : over) unmap(b);
  }

  static LargeOutputCache& instance() {
    static auto* cache = new LargeOutputCache();
    return *cache;
  }

 private:
  Block* take_cached(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = cached_.end();
    for (auto it = cached_.begin(); it != cached_.end(); ++it) {
      if ((*it)->bytes >= bytes && (*it)->bytes <= bytes + bytes / 8 &&
          (best == cached_.end() || (*it)->bytes < (*best)->bytes)) {
        best = it;
      }
    }
    if (best == cached_.end()) return nullptr;
    Block* b = *best;
    cached_.erase(best);
    cached_bytes_ -= b->bytes;
    ++reuses_;
    return b;
  }

  static Block* map(size_t bytes) { return new Block{map_huge_page_block(bytes, "an output"), bytes}; }

  static void unmap(Block* b) {
    unmap_block(b->data, b->bytes);
    delete b;
  }

  static void free_block(void* ctx) { instance().give_back(static_cast<Block*>(ctx)); }

  void give_back(Block* b) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + b->bytes <= limit_) {
        cached_.push_back(b);
        cached_bytes_ += b->bytes;
        return;
      }
    }
    unmap(b);
  }

  std::mutex mutex_;
  std::vector<Block*> cached_;  // freed blocks, oldest first
  size_t cached_bytes_ = 0;
  size_t limit_ = 0;
  int64_t reuses_ = 0;
};

}  // namespace

at::Tensor empty_large_output(const at::Tensor& like, at::MemoryFormat format) {
  const size_t bytes = static_cast<size_t>(like.numel()) * like.element_size();
  if (!like.device().is_cpu() || bytes < kLargeOutputBytes || !LargeOutputCache::instance().enabled()) {
    return at::empty_like(like, format);
  }
  return at::detail::empty_generic(like.sizes(), &LargeOutputCache::instance(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU), like.scalar_type(), format);
}

at::Tensor empty_large_output_strided(const at::Tensor& like, at::IntArrayRef strides) {
  const size_t bytes = static_cast<size_t>(like.numel()) * like.element_size();
  if (!like.device().is_cpu() || bytes < kLargeOutputBytes || !LargeOutputCache::instance().enabled()) {
    return at::empty_strided(like.sizes(), strides, like.options());
  }
  return at::detail::empty_strided_generic(like.sizes(), strides, &LargeOutputCache::instance(),
                                           c10::DispatchKeySet(c10::DispatchKey::CPU), like.scalar_type());
}

OutputCacheStats output_cache_stats() { return LargeOutputCache::instance().stats(); }
int64_t release_output_cache() { return LargeOutputCache::instance().release(); }
void set_output_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "the output cache limit must be >= 0 bytes, got ", bytes);
  LargeOutputCache::instance().set_limit(static_cast<size_t>(bytes));
}

#else  // no cache off Linux

at::Tensor empty_large_output(const at::Tensor& like, at::MemoryFormat format) {
  return at::empty_like(like, format);
}
at::Tensor empty_large_output_strided(const at::Tensor& like, at::IntArrayRef strides) {
  return at::empty_strided(like.sizes(), strides, like.options());
}
OutputCacheStats output_cache_stats() { return {0, 0, 0, 0}; }
int64_t release_output_cache() { return 0; }
void set_output_cache_limit(int64_t) {}

#endif

}  // namespace fusedopt
