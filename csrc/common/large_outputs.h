// Allocation of the large outputs of the elementwise ops (BatchNorm forward and backward, dropout),
// which are as large as their inputs.
#pragma once

#include <cstddef>
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace fusedopt {

// An empty tensor shaped like `like`, of its dtype and device, in `format`. On CPU, outputs of at least
// kLargeOutputBytes come from a small cache of huge-page blocks (LargeOutputCache in
// large_outputs.cpp); everything else is at::empty_like.
//
// Why: glibc serves every allocation above 32 MiB with a fresh mmap and unmaps it on free, so each
// such output is faulted in and zeroed by the kernel on first write, every call. For the 51 MB output
// of BatchNorm on 64x64x56x56 that took ~10 ms per output on the 2-core Xeon of benchmarks/ (~3 ms
// with huge pages, which are still zeroed), more than the kernel's own work; a training loop
// allocates and frees the same sizes every step. Below 32 MiB glibc reuses its heap and there is
// nothing to gain.
at::Tensor empty_large_output(const at::Tensor& like, at::MemoryFormat format);
// The same with the given strides, which must describe a dense, non-overlapping layout of like's shape.
at::Tensor empty_large_output_strided(const at::Tensor& like, at::IntArrayRef strides);

constexpr size_t kLargeOutputBytes = size_t{32} << 20;

// The cache's limit on memory kept for reuse (freed blocks), in bytes: $FUSEDOPT_CPU_OUTPUT_CACHE_MB
// MiB when set (0 turns the cache off), else kDefaultOutputCacheBytes.
constexpr size_t kDefaultOutputCacheBytes = size_t{512} << 20;

struct OutputCacheStats {
  int64_t cached_bytes;   // freed blocks kept for reuse
  int64_t cached_blocks;
  int64_t limit_bytes;
  int64_t reuses;         // allocations served from the cache since start
};
OutputCacheStats output_cache_stats();
// Unmaps every cached block; returns the bytes released.
int64_t release_output_cache();
// Sets the limit (bytes); a lower limit releases what is over it.
void set_output_cache_limit(int64_t bytes);

}  // namespace fusedopt
