// Anonymous memory mappings advised to use transparent huge pages, for the CPU memory fusedopt keeps
// for long and walks whole every step: the large-output cache (large_outputs.cpp) and optimizer state
// (python/state_allocation.cpp). Linux only (kHugePageMappings); elsewhere callers use torch's allocator.
#pragma once

#include <cstddef>

namespace fusedopt {

#if defined(__linux__)
constexpr bool kHugePageMappings = true;
#else
constexpr bool kHugePageMappings = false;
#endif

constexpr size_t kHugePage = size_t{2} << 20;

// Maps `bytes` of zeroed memory starting on a 2 MiB boundary and advises huge pages for it (a hint: THP
// may be off; a tail shorter than a huge page keeps small pages). Raises c10::Error naming `what` when
// out of memory. unmap_block takes the same `bytes`.
void* map_huge_page_block(size_t bytes, const char* what);
void unmap_block(void* data, size_t bytes);

inline size_t round_up_to_huge_pages(size_t n) {
  return (n + kHugePage - 1) / kHugePage * kHugePage;
}

}  // namespace fusedopt
