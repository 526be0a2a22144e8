// Host-side handling of the tensor lists that multi-tensor ops take: validation (before anything is
// written) and a raw view (pointers, sizes, dtypes) that the CPU and CUDA launchers walk.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include "fusedopt/grad_scale.h"

namespace fusedopt {

// One tensor-list argument of an op, with the name its errors use.
struct NamedTensorList {
  const char* name;
  at::TensorList tensors;
  // When true the list may also be empty (e.g. momentum_buffers with momentum == 0).
  bool may_be_empty = false;
};

// float32, float64, float16 or bfloat16: the dtypes every fused kernel takes.
bool is_supported_dtype(c10::ScalarType t);

// Two dense tensors of one shape walk their elements in the same memory order when their strides agree
// on every dimension of size > 1 (a size-1 dimension's stride is arbitrary).
bool same_memory_order(const at::Tensor& a, const at::Tensor& b);

// A pass over the entries of lockstep lists runs in blocks of this many entries: what one block's
// checks bring into cache (a few hundred KB of TensorImpls) is still in L2 when the op's view of the
// same block is filled right after (run_entry_checks' `then`), so a step over thousands of params walks
// their metadata once for both.
constexpr size_t kEntryBlock = 256;

using EntryBlockFn = std::function<void(size_t begin, size_t end)>;

// Whether a pass over n entries runs on all threads (for_entry_blocks): long lists, more than one
// thread, not already inside a parallel region.
bool entries_in_parallel(size_t n);

// Runs fn(begin, end) over blocks of at most kEntryBlock entries covering [0, n): on all threads for
// long lists, else on the calling thread. For passes that only read tensors' metadata: such a pass over
// thousands of tensors waits on cache misses, which more cores overlap.
void for_entry_blocks(size_t n, const EntryBlockFn& fn);

// Runs check(begin, end) over the blocks of [0, n) (for_entry_blocks), and then(begin, end) (when
// given) after each block whose checks passed. If a block of a parallel run fails, runs both once more
// serially from the start, so that the error names the first failing entry as a serial check would.
// `then` may only read the tensors (and write what its caller owns, such as a view): a later block may
// still fail the call.
void run_entry_checks(size_t n, const EntryBlockFn& check, const EntryBlockFn& then = {});

// Checks of lists that run in lockstep, lists[0] the reference (the params), in two parts: lengths,
// then entries (the op's checks run the latter through run_entry_checks). Every non-empty list has the
// reference's length; for each index i all tensors sit on one device (`device`, that of the
// reference's entry 0), have the reference's dtype, shape and strides, are dense and non-overlapping,
// strided (not sparse), and of a supported floating dtype (float32, float64, float16, bfloat16).
// Raise c10::Error naming op, list and index otherwise.
void check_list_lengths(const char* op, c10::ArrayRef<NamedTensorList> lists);
void check_list_entries(const char* op, c10::ArrayRef<NamedTensorList> lists, const at::Device& device,
                        size_t begin, size_t end);

// Both parts over lockstep lists and, when given, their per-param step counts (below), in one walk over
// the entries (run_entry_checks, handing it `then`).
void check_lockstep_lists(const char* op, c10::ArrayRef<NamedTensorList> lists,
                          std::optional<at::TensorList> state_steps, const EntryBlockFn& then);

// Checks of per-param step counts, in the same two parts: one float32 1-element strided tensor per
// param, on its param's device.
void check_state_steps_length(const char* op, at::TensorList params, at::TensorList state_steps);
void check_state_step_entries(const char* op, at::TensorList params, at::TensorList state_steps,
                              size_t begin, size_t end);

// Checks an optional 1-element float32 tensor argument (lr_tensor, found_inf) on `device`.
void check_scalar_tensor(const char* op, const char* name, const std::optional<at::Tensor>& t,
                         const at::Device& device);

// Checks an optional grad_scale argument of the optimizer ops on `device`: float32 or float64, one
// element (the divisor) or two contiguous ones (divisor, multiplier); see fusedopt/grad_scale.h.
void check_grad_scale(const char* op, const std::optional<at::Tensor>& grad_scale, const at::Device& device);

// Reads a checked 1-element CPU scalar tensor; for CPU kernels only.
double read_cpu_scalar(const at::Tensor& t);

// A checked grad_scale argument as the kernels read it (no division when absent; the pointer is read on
// the tensor's device).
GradScaleRef grad_scale_ref(const std::optional<at::Tensor>& grad_scale);

// The device of a call: that of lists[0][0] (lists may not be empty when this is called).
inline at::Device device_of(at::TensorList params) { return params[0].device(); }

// Raw view of K lockstep lists. An absent (empty) list has nullptr pointers.
template <size_t K>
struct TensorListsView {
  std::vector<std::array<void*, K>> ptrs;
  std::vector<int64_t> numel;
  std::vector<c10::ScalarType> dtype;
  // offsets[i] = numel of tensors before i; offsets.back() = total elements.
  std::vector<int64_t> offsets;

  size_t size() const { return numel.size(); }
  int64_t total() const { return offsets.back(); }
};

// Reading a tensor's data pointer follows TensorImpl -> StorageImpl: two dependent cache misses for
// each tensor of a step over thousands of params, whose metadata the update before it evicted. The
// view prefetches TensorImpls kViewAhead entries ahead and storages half as far, so the misses of
// many entries overlap, and fills long lists on all threads.
constexpr size_t kViewAhead = 16;

template <size_t K>
void prefetch_view_entry(const std::array<at::TensorList, K>& lists, size_t i, bool storages) {
  for (size_t k = 0; k < K; ++k) {
    if (i >= lists[k].size()) continue;
    const c10::TensorImpl* t = lists[k][i].unsafeGetTensorImpl();
    if (!storages) {
      __builtin_prefetch(t, 0, 3);
    } else if (t->has_storage()) {
      __builtin_prefetch(t->unsafe_storage().unsafeGetStorageImpl(), 0, 3);
    }
  }
}

// A view of n entries to be filled (fill_lists_view over [0, n), then finish_lists_view).
template <size_t K>
TensorListsView<K> sized_lists_view(size_t n) {
  TensorListsView<K> view;
  view.ptrs.resize(n);
  view.numel.resize(n);
  view.dtype.resize(n);
  view.offsets.resize(n + 1);
  return view;
}

// Entries [begin, end) of `view` from the checked lists (from several threads for disjoint ranges).
template <size_t K>
void fill_lists_view(TensorListsView<K>& view, const std::array<at::TensorList, K>& lists, size_t begin,
                     size_t end) {
  const size_t n = view.size();
  for (size_t i = begin; i < end; ++i) {
    if (i + kViewAhead < n) prefetch_view_entry(lists, i + kViewAhead, false);
    if (i + kViewAhead / 2 < n) prefetch_view_entry(lists, i + kViewAhead / 2, true);
    for (size_t k = 0; k < K; ++k) {
      view.ptrs[i][k] = lists[k].empty() ? nullptr : lists[k][i].data_ptr();
    }
    view.numel[i] = lists[0][i].numel();
    view.dtype[i] = lists[0][i].scalar_type();
  }
}

// The offsets of a filled view.
template <size_t K>
void finish_lists_view(TensorListsView<K>& view) {
  const size_t n = view.size();
  int64_t offset = 0;
  for (size_t i = 0; i < n; ++i) {
    view.offsets[i] = offset;
    offset += view.numel[i];
  }
  view.offsets[n] = offset;
}

// The view of checked lists, filled in a pass of its own.
template <size_t K>
TensorListsView<K> make_lists_view(const std::array<at::TensorList, K>& lists) {
  auto view = sized_lists_view<K>(lists[0].size());
  for_entry_blocks(view.size(), [&](size_t begin, size_t end) { fill_lists_view(view, lists, begin, end); });
  finish_lists_view(view);
  return view;
}

// The view of lists filled block by block as an op's checks pass them (run_entry_checks' `then`), in
// the same walk over their metadata: check_inputs(then) runs the op's checks, handing them `then`.
// Raises what the checks raise.
template <size_t K, typename CheckInputs>
TensorListsView<K> checked_lists_view(const std::array<at::TensorList, K>& lists, CheckInputs&& check_inputs) {
  auto view = sized_lists_view<K>(lists[0].size());
  check_inputs(EntryBlockFn([&](size_t begin, size_t end) { fill_lists_view(view, lists, begin, end); }));
  finish_lists_view(view);
  return view;
}

}  // namespace fusedopt
