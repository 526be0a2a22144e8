// Portability macros for code compiled by both the host compiler (CPU kernels) and nvcc (CUDA kernels).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FUSEDOPT_HOST_DEVICE __host__ __device__
#define FUSEDOPT_INLINE __host__ __device__ __forceinline__
#else
#define FUSEDOPT_HOST_DEVICE
#define FUSEDOPT_INLINE inline __attribute__((always_inline))
#endif
