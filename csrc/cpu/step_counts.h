// Per-param step counts on CPU: each goes up by one before its param's update (torch: step_t += 1
// first, then the bias corrections read the new count), also for empty params, which the kernels
// never visit.
#pragma once

#include "common/tensor_lists.h"

namespace fusedopt::cpu {

// Through a view's pointers (list `list` holds the float32 counts): a step over thousands of params
// then walks the counts' TensorImpls once, for the view, not a second time here.
template <size_t K>
void increment_step_counts(const TensorListsView<K>& view, size_t list) {
  constexpr size_t kAhead = 16;
  const size_t n = view.size();
  for (size_t i = 0; i < n; ++i) {
    if (i + kAhead < n) __builtin_prefetch(view.ptrs[i + kAhead][list], 1, 3);
    *static_cast<float*>(view.ptrs[i][list]) += 1.0f;
  }
}

}  // namespace fusedopt::cpu
