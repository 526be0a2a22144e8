#include "common/huge_pages.h"

#include <cstdint>

#include <c10/util/Exception.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fusedopt {

#if defined(__linux__)

void* map_huge_page_block(size_t bytes, const char* what) {
  // Over-map by one huge page and trim, so that the block starts on a 2 MiB boundary.
  const size_t span = bytes + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(raw != MAP_FAILED, "fusedopt: out of memory mapping ", bytes, " bytes for ", what);
  const auto begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePage - 1) & ~uintptr_t{kHugePage - 1};
  if (aligned > begin) munmap(raw, aligned - begin);
  const uintptr_t end = begin + span, aligned_end = aligned + bytes;
  if (end > aligned_end) munmap(reinterpret_cast<void*>(aligned_end), end - aligned_end);
#ifdef MADV_HUGEPAGE
  (void)madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);
#endif
  return reinterpret_cast<void*>(aligned);
}

void unmap_block(void* data, size_t bytes) { munmap(data, bytes); }

#else

void* map_huge_page_block(size_t, const char* what) {
  TORCH_CHECK(false, "fusedopt: huge-page mappings are not available on this platform (", what, ")");
  return nullptr;
}

void unmap_block(void*, size_t) {}

#endif

}  // namespace fusedopt
