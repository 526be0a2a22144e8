// The CUDA multi-tensor launcher: one kernel launch updates hundreds of tensors, each split into chunks
// of kChunk elements, one chunk per block. The per-element work is a small "op" functor that wraps an
// update rule from csrc/include/fusedopt; everything here is the GPU-only scaffolding around it.
//
// The table of tensors travels in the kernel's parameter space (32 KiB on sm_70+ since CUDA 12.1): no
// host allocation, no host-to-device copy, nothing to keep alive, and CUDA-graph capture records it by
// value. A block finds its tensor by binary search over the table's chunk offsets.
//
// An op provides:
//   unsigned read_mask, write_mask;                  bit k: list k is loaded / stored
//   __device__ bool skip() const;                    true: the whole launch does nothing (found_inf)
//   template <typename opmath_t> __device__ auto bind(void* const* tensor_ptrs) const;
//       returns a callable taking K opmath_t& (one element of each list), with any device-side scalars
//       (lr, grad scale) already loaded. tensor_ptrs[k] is the block's tensor's base pointer in list
//       k: a list in neither mask is never walked elementwise, so it can hold one value per tensor
//       (a per-tensor scalar such as Adam's step count) that bind() reads from there.
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "common/tensor_lists.h"
#include "cuda/element_packs.cuh"

namespace fusedopt::cuda {

constexpr int kThreads = 512;
constexpr int kChunk = 65536;  // elements per block
// Accesses per thread and list issued before the first value is used: as many as fit kValueRegisters
// math-type registers over the K lists, at most 4. ptxas -v (sm_90) showed a fixed 4 spilling kilobytes
// per thread for half/bfloat16 Adam and RMSprop (an access of 8 halves is 8 float registers; 128 is the
// cap under __launch_bounds__(kThreads)); float32 SGD (K = 3) keeps its 4, measured at 94% of the copy
// bandwidth on an H100 (benchmarks/results).
constexpr int kValueRegisters = 64;
template <int K, int W, typename opmath_t>
constexpr int accesses_per_list() {
  constexpr int per_access = K * W * int(sizeof(opmath_t) / 4);
  constexpr int fit = kValueRegisters / per_access;
  return fit < 1 ? 1 : fit > 4 ? 4 : fit;
}
// Bytes of parameter space for the table; the rest of the 32764 is left for the op functor.
constexpr size_t kTableBytes = 31 * 1024;

template <int K>
struct TensorTable {
  static constexpr int kCapacity =
      int((kTableBytes - 16) / (K * sizeof(void*) + sizeof(int64_t) + sizeof(int32_t))) - 1;
  void* ptr[K][kCapacity];
  int64_t numel[kCapacity];
  int32_t first_chunk[kCapacity + 1];  // first_chunk[count] = number of chunks (= blocks)
  int32_t count;
};

// The chunk of the calling block (one block per chunk): its tensor's index in the table, its first
// element in that tensor and its number of elements.
struct BlockChunk {
  int tensor;
  int64_t begin;
  int n;
};

template <int K>
__device__ __forceinline__ BlockChunk block_chunk(const TensorTable<K>& table) {
  // The tensor of this block: the last t with first_chunk[t] <= blockIdx.x.
  const int chunk = blockIdx.x;
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table.first_chunk[mid] <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const int64_t begin = int64_t(chunk - table.first_chunk[lo]) * kChunk;
  return {lo, begin, int(min(int64_t(kChunk), table.numel[lo] - begin))};
}

// Walks the n elements of one chunk, W elements per access (W > 1 only when every list's pointer is
// 16-byte aligned), kUnroll accesses per thread and list in flight.
template <int W, typename scalar_t, typename opmath_t, int K, typename Update, size_t... I>
__device__ __forceinline__ void process_chunk(scalar_t* const (&base)[K], int n, unsigned read_mask,
                                              unsigned write_mask, const Update& update,
                                              std::index_sequence<I...>) {
  constexpr int kUnroll = accesses_per_list<K, W, opmath_t>();
  const int step = blockDim.x * W;
  for (int first = threadIdx.x * W; first < n; first += step * kUnroll) {
    opmath_t v[K][kUnroll][W];
#pragma unroll
    for (int k = 0; k < K; ++k) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int at = first + u * step;
        if ((read_mask >> k & 1u) && at < n) {
          if (at + W <= n) {
            const Pack<scalar_t, W> p = load_pack<scalar_t, W>(base[k], at);
#pragma unroll
            for (int j = 0; j < W; ++j) v[k][u][j] = static_cast<opmath_t>(p.v[j]);
          } else {
#pragma unroll
            for (int j = 0; j < W; ++j) v[k][u][j] = at + j < n ? static_cast<opmath_t>(base[k][at + j]) : opmath_t(0);
          }
        } else {
#pragma unroll
          for (int j = 0; j < W; ++j) v[k][u][j] = opmath_t(0);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int j = 0; j < W; ++j) update(v[I][u][j]...);
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int at = first + u * step;
        if ((write_mask >> k & 1u) && at < n) {
          if (at + W <= n) {
            Pack<scalar_t, W> p;
#pragma unroll
            for (int j = 0; j < W; ++j) p.v[j] = static_cast<scalar_t>(v[k][u][j]);
            store_pack<scalar_t, W>(base[k], at, p);
          } else {
#pragma unroll
            for (int j = 0; j < W; ++j) {
              if (at + j < n) base[k][at + j] = static_cast<scalar_t>(v[k][u][j]);
            }
          }
        }
      }
    }
  }
}

template <typename scalar_t, int K, typename Op>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_kernel(const __grid_constant__ TensorTable<K> table, const __grid_constant__ Op op) {
  using opmath_t = at::opmath_type<scalar_t>;
  if (op.skip()) return;

  const BlockChunk chunk = block_chunk(table);
  const int64_t begin = chunk.begin;
  const int n = chunk.n;

  void* tensor_ptrs[K];
  scalar_t* base[K];
  bool aligned = true;
  const unsigned walked = op.read_mask | op.write_mask;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    tensor_ptrs[k] = table.ptr[k][chunk.tensor];
    const bool walk = (walked >> k & 1u) && tensor_ptrs[k] != nullptr;
    base[k] = walk ? static_cast<scalar_t*>(tensor_ptrs[k]) + begin : nullptr;
    aligned &= reinterpret_cast<uintptr_t>(base[k]) % 16 == 0;
  }
  const auto update = op.template bind<opmath_t>(tensor_ptrs);
  constexpr int kVec = 16 / sizeof(scalar_t);
  if (aligned) {
    process_chunk<kVec, scalar_t, opmath_t>(base, n, op.read_mask, op.write_mask, update,
                                            std::make_index_sequence<K>{});
  } else {
    process_chunk<1, scalar_t, opmath_t>(base, n, op.read_mask, op.write_mask, update,
                                         std::make_index_sequence<K>{});
  }
}

// Fills tensor tables with the view's non-empty tensors of `dtype`, in order, and launches
// kernel<<<chunks, kThreads>>>(table, op) on the current stream of the current device for each: a table
// holds at most kCapacity tensors and fewer than 2^31 chunks, one block per chunk. `kernel` is a
// __global__ function taking (const __grid_constant__ TensorTable<K>, const __grid_constant__ Op), such
// as multi_tensor_kernel, or a kernel of its own for lists the one-scalar_t walk does not fit.
template <size_t K, typename Kernel, typename Op>
void for_each_table(const TensorListsView<K>& view, c10::ScalarType dtype, Kernel kernel, const Op& op) {
  static_assert(sizeof(TensorTable<K>) + sizeof(Op) <= 32764, "kernel parameters exceed 32764 bytes");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  TensorTable<K> table;
  table.count = 0;
  int64_t chunks = 0;
  auto flush = [&] {
    if (table.count == 0) return;
    table.first_chunk[table.count] = int32_t(chunks);
    kernel<<<unsigned(chunks), kThreads, 0, stream>>>(table, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    table.count = 0;
    chunks = 0;
  };
  for (size_t i = 0; i < view.size(); ++i) {
    if (view.dtype[i] != dtype || view.numel[i] == 0) continue;
    const int64_t tensor_chunks = (view.numel[i] + kChunk - 1) / kChunk;
    if (chunks + tensor_chunks > int64_t(INT32_MAX)) flush();
    for (size_t k = 0; k < K; ++k) table.ptr[k][table.count] = view.ptrs[i][k];
    table.numel[table.count] = view.numel[i];
    table.first_chunk[table.count] = int32_t(chunks);
    chunks += tensor_chunks;
    if (++table.count == TensorTable<K>::kCapacity) flush();
  }
  flush();
}

// Launches `op` over every tensor of the view on the current stream of the current device: one launch
// per dtype and per table's worth of tensors. Empty tensors are skipped.
template <size_t K, typename Op>
void launch_multi_tensor(const TensorListsView<K>& view, const Op& op) {
  const c10::ScalarType dtypes[] = {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble};
  for (const c10::ScalarType dtype : dtypes) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fusedopt multi_tensor", [&] {
      for_each_table(view, dtype, multi_tensor_kernel<scalar_t, int(K), Op>, op);
    });
  }
}

// Step counts, one float32 value per tensor at view.ptrs[i][k], all incremented by one; nothing happens
// when found_inf is set and nonzero (read on the device: no host synchronisation, graph-safe). One
// thread per count: launch_multi_tensor would spend a 512-thread block on each one-element tensor
// (20,000 blocks for 20,000 params). The pointers travel in the parameter space, as the tensor tables do.
struct StepCountTable {
  static constexpr int kCapacity = int((kTableBytes - 16) / sizeof(float*));
  float* ptr[kCapacity];
  int32_t count;
};

template <int kBlock>
__global__ void __launch_bounds__(kBlock)
    increment_step_counts_kernel(const __grid_constant__ StepCountTable table, const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.f) return;
  const int i = blockIdx.x * kBlock + threadIdx.x;
  if (i < table.count) *table.ptr[i] += 1.f;
}

template <size_t K>
void increment_step_counts(const TensorListsView<K>& view, size_t k, const float* found_inf) {
  static_assert(sizeof(StepCountTable) + sizeof(const float*) <= 32764, "kernel parameters exceed 32764 bytes");
  constexpr int kStepThreads = 256;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  StepCountTable table;
  table.count = 0;
  auto flush = [&] {
    if (table.count == 0) return;
    const unsigned blocks = unsigned((table.count + kStepThreads - 1) / kStepThreads);
    increment_step_counts_kernel<kStepThreads><<<blocks, kStepThreads, 0, stream>>>(table, found_inf);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    table.count = 0;
  };
  for (size_t i = 0; i < view.size(); ++i) {
    table.ptr[table.count] = static_cast<float*>(view.ptrs[i][k]);
    if (++table.count == StepCountTable::kCapacity) flush();
  }
  flush();
}

}  // namespace fusedopt::cuda
