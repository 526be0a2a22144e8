// Runs of consecutive elements moved as one aligned access (16-byte loads and stores where the run is
// that long), for the kernels that give each thread a run (the multi-tensor launcher, dropout,
// BatchNorm): a warp's accesses then cover contiguous memory, where a thread walking its run one scalar
// at a time strides the warp over kN-element gaps.
#pragma once

#include <cstdint>

namespace fusedopt::cuda {

template <typename T, int kN>
struct alignas(sizeof(T) * kN < 16 ? sizeof(T) * kN : 16) Pack {
  T v[kN];
};

// Whether packs can be read or written at every multiple of kN elements from `p`.
template <typename T, int kN>
bool pack_aligned(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % alignof(Pack<T, kN>) == 0;
}

template <typename T, int kN>
__device__ __forceinline__ Pack<T, kN> load_pack(const T* base, int64_t first) {
  return *reinterpret_cast<const Pack<T, kN>*>(base + first);
}

template <typename T, int kN>
__device__ __forceinline__ void store_pack(T* base, int64_t first, const Pack<T, kN>& pack) {
  *reinterpret_cast<Pack<T, kN>*>(base + first) = pack;
}

}  // namespace fusedopt::cuda
