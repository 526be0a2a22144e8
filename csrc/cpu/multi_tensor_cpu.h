// The CPU multi-tensor engine: one parallel region over every element of every tensor in a list, and a
// vectorised loop that loads K lockstep arrays as float/double SIMD registers, applies an update rule
// from csrc/include/fusedopt, and stores back the arrays it writes.
//
// Included only by files compiled per CPU variant (csrc/cpu/kernels), so Vectorized is that variant's.
#pragma once

#include <algorithm>
#include <cstdint>
#include <array>
#include <tuple>
#include <type_traits>
#include <utility>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "common/tensor_lists.h"
#include "cpu/vec_ops.h"

namespace fusedopt::cpu {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// Below this many elements a call runs on the calling thread: forking costs more than it saves.
constexpr int64_t kMinElementsPerThread = 32768;
// ... unless it has this many tensors per thread: each tensor costs its own setup (dtype dispatch, the
// update's scalars), ~100 ns, which for thousands of small tensors outweighs their elements.
constexpr int64_t kMinTensorsPerThread = 512;
// Thread slices start on multiples of this many elements, so slices of one tensor stay vector-aligned.
constexpr int64_t kSliceAlign = 64;
// How far ahead vectorized_map prefetches the arrays it reads. On the 2-core Xeon of benchmarks/ an
// AdamW step over 16 x 1M float32 took ~10% less time with 1-4 KB than without (256 B: no gain).
constexpr int64_t kPrefetchBytes = 2048;

// The order in which for_each_segment_parallel walks each thread's slice.
enum class SliceOrder {
  kForward,
  // Blocks of kBackwardBlock elements from the slice's end to its start (each block forward): a pass
  // right after one that read the same data forward (clipping's scale after its norm) finds the data
  // the first pass read last still in cache.
  kBackward,
};
constexpr int64_t kBackwardBlock = 16384;

// Calls fn(i, begin, end) for contiguous element ranges [begin, end) of tensor i, covering every element
// of every tensor exactly once, from one parallel region. The concatenation of all tensors is cut into
// equal slices, one per thread, so a few large tensors and many small ones balance alike.
template <size_t K, typename Fn>
void for_each_segment_parallel(const TensorListsView<K>& view, const Fn& fn, SliceOrder order = SliceOrder::kForward) {
  const int64_t total = view.total();
  if (total == 0) return;
  const int64_t tensors = static_cast<int64_t>(view.size());
  const int64_t max_parts =
      std::max<int64_t>({1, total / kMinElementsPerThread, tensors / kMinTensorsPerThread});
  const int64_t parts = std::min<int64_t>(at::get_num_threads(), max_parts);
  int64_t slice = (total + parts - 1) / parts;
  slice = (slice + kSliceAlign - 1) / kSliceAlign * kSliceAlign;
  auto run_slice = [&](int64_t begin, int64_t end) {
    // Last tensor whose first element is at or before `begin` (skipping empty ones).
    size_t t = std::upper_bound(view.offsets.begin(), view.offsets.end(), begin) -
               view.offsets.begin() - 1;
    while (begin < end) {
      const int64_t stop = std::min(end, view.offsets[t + 1]);
      if (stop > begin) fn(t, begin - view.offsets[t], stop - view.offsets[t]);
      begin = stop;
      ++t;
    }
  };
  auto run_ordered = [&](int64_t begin, int64_t end) {
    if (order == SliceOrder::kForward) {
      run_slice(begin, end);
      return;
    }
    for (int64_t stop = end; stop > begin;) {
      const int64_t start = std::max(begin, (stop - 1) / kBackwardBlock * kBackwardBlock);  // aligned blocks
      run_slice(start, stop);
      stop = start;
    }
  };
  if (parts == 1) {
    run_ordered(0, total);
    return;
  }
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) {
      run_ordered(std::min(total, p * slice), std::min(total, (p + 1) * slice));
    }
  });
}

// Loads and stores of one array as math-type registers: float and double load one register per step,
// Half and BFloat16 load twice as many elements and widen them into two float registers.
template <typename scalar_t>
struct VecIO {
  using opmath_t = scalar_t;
  using V = Vectorized<scalar_t>;
  static constexpr int kParts = 1;
  static constexpr int64_t kStep = V::size();
  static inline void load(const scalar_t* p, V (&out)[1], int64_t n) {
    out[0] = n == kStep ? V::loadu(p) : V::loadu(p, n);
  }
  static inline void store(scalar_t* p, const V (&in)[1], int64_t n) {
    n == kStep ? in[0].store(p) : in[0].store(p, n);
  }
};

template <typename half_t>
struct HalfVecIO {
  using opmath_t = float;
  using V = Vectorized<float>;
  using H = Vectorized<half_t>;
  static constexpr int kParts = 2;
  static constexpr int64_t kStep = H::size();
  static inline void load(const half_t* p, V (&out)[2], int64_t n) {
    const H h = n == kStep ? H::loadu(p) : H::loadu(p, n);
    std::tie(out[0], out[1]) = at::vec::convert_to_float<half_t>(h);
  }
  static inline void store(half_t* p, const V (&in)[2], int64_t n) {
    const H h = at::vec::convert_from_float<half_t>(in[0], in[1]);
    n == kStep ? h.store(p) : h.store(p, n);
  }
};
template <>
struct VecIO<at::Half> : HalfVecIO<at::Half> {};
template <>
struct VecIO<at::BFloat16> : HalfVecIO<at::BFloat16> {};

// Prefetches the line kPrefetchBytes past element i of an n-element array `base`, or, once that lies past
// its end and `next` is given, the corresponding line of `next` (the array processed after this one):
// a walk over many small tensors then does not restart every stream cold at each tensor. Addresses are
// computed as integers and never dereferenced (a prefetch does not fault), so they may lie past an end.
inline void prefetch_ahead(const void* base, int64_t i, int64_t n, int64_t element_size, const void* next) {
  const int64_t ahead = i * element_size + kPrefetchBytes;
  const int64_t size = n * element_size;
  const void* base_or_next = ahead < size ? base : next;
  if (base_or_next == nullptr) return;
  const int64_t offset = ahead < size ? ahead : ahead - size;
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(base_or_next) + offset), 0, 3);
}

// Walks n elements of K lockstep arrays of scalar_t. Array k is loaded when bit k of kRead is set and
// stored when bit k of kWrite is set (compile-time masks keep the loop free of branches);
// update(v_0, ..., v_{K-1}) gets one math-type register of each (an unread array's register holds
// zeros and must be assigned before it is used). `next`, when given, points to the K array pointers
// walked after these (next_arrays()): the reads are prefetched across into them (prefetch_ahead).
template <unsigned kRead, unsigned kWrite, typename scalar_t, size_t K, typename Update, size_t... I>
inline void vectorized_map_impl(const std::array<scalar_t*, K>& arrays, int64_t n, const Update& update,
                                void* const* next, std::index_sequence<I...>) {
  using IO = VecIO<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t kStep = IO::kStep;
  constexpr int64_t kSize = sizeof(scalar_t);
  V v[K][IO::kParts];
  for (auto& regs : v)
    for (auto& r : regs) r = V(0);
  auto body = [&](int64_t i, int64_t len) {
    ((kRead >> I & 1u ? IO::load(arrays[I] + i, v[I], len) : void()), ...);
    for (int part = 0; part < IO::kParts; ++part) update(v[I][part]...);
    ((kWrite >> I & 1u ? IO::store(arrays[I] + i, v[I], len) : void()), ...);
  };
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    ((kRead >> I & 1u ? prefetch_ahead(arrays[I], i, n, kSize, next ? next[I] : nullptr) : void()), ...);
    body(i, kStep);
  }
  if (i < n) body(i, n - i);
}

template <unsigned kRead, unsigned kWrite, typename scalar_t, size_t K, typename Update>
inline void vectorized_map(const std::array<scalar_t*, K>& arrays, int64_t n, const Update& update,
                           void* const* next = nullptr) {
  vectorized_map_impl<kRead, kWrite>(arrays, n, update, next, std::make_index_sequence<K>{});
}

// The array pointers of the tensor after tensor i (for vectorized_map's `next`), or nullptr for the last.
template <size_t K>
inline void* const* next_arrays(const TensorListsView<K>& view, size_t i) {
  return i + 1 < view.size() ? view.ptrs[i + 1].data() : nullptr;
}

// Calls fn(std::integral_constant<bool, b>{}) for the runtime bool b: turns a flag into a template
// argument, so each combination of flags gets its own branch-free loop.
template <typename Fn>
inline void with_constant(bool b, const Fn& fn) {
  if (b) fn(std::true_type{});
  else fn(std::false_type{});
}

// Calls fn(unscale, store) with std::bool_constant arguments for an optimizer call's grad scaling:
// grads are unscaled by grad_scale's factors (unscale) and the results written back (store, only with
// unscale: folded clipping without GradScaler clips but leaves the grads as they were).
template <typename Fn>
inline void with_grad_scaling(bool unscale, bool write_grads, const Fn& fn) {
  if (!unscale) fn(std::false_type{}, std::false_type{});
  else if (write_grads) fn(std::true_type{}, std::true_type{});
  else fn(std::true_type{}, std::false_type{});
}

// An optimizer call's grad_scale factors (fusedopt/grad_scale.h) in the vector math type V.
template <typename V>
inline GradFactors<V> splat_grad_factors(const GradFactors<double>& f) {
  using opmath_t = typename V::value_type;
  return {V(static_cast<opmath_t>(f.divisor)), V(static_cast<opmath_t>(f.multiplier))};
}

// The pointers of tensor i's elements [begin, ...) in each of the K lists, typed as scalar_t.
template <typename scalar_t, size_t K>
inline std::array<scalar_t*, K> typed_slice(const TensorListsView<K>& view, size_t i, int64_t begin) {
  std::array<scalar_t*, K> out;
  for (size_t k = 0; k < K; ++k) {
    out[k] = view.ptrs[i][k] ? static_cast<scalar_t*>(view.ptrs[i][k]) + begin : nullptr;
  }
  return out;
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedopt::cpu
