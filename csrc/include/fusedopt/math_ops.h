// The arithmetic vocabulary of the shared per-element math.
//
// Update rules in this folder are templates over a value type T. The CUDA kernels instantiate them with
// T = float or double (one element per call); the CPU kernels with T = at::vec::Vectorized<float> or
// Vectorized<double> (a SIMD register per call; see csrc/cpu/vec_ops.h). Operators + - * / come from T
// itself; everything else goes through MathOps<T>, specialised here for the scalar types and in
// csrc/cpu/vec_ops.h for the vector types, so one template body serves both backends.
#pragma once

#include <cmath>
#include <type_traits>

#include "fusedopt/macros.h"

namespace fusedopt {

template <typename T>
struct MathOps;  // specialised per value type

template <>
struct MathOps<float> {
  using scalar_t = float;
  static FUSEDOPT_INLINE float splat(float x) { return x; }
  // a * b + c rounded once, like the fma in torch's add_(other, alpha=...) kernels.
  static FUSEDOPT_INLINE float fma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
  }
  static FUSEDOPT_INLINE float neg(float a) { return -a; }
  static FUSEDOPT_INLINE float sqrt(float a) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(a);
#else
    return std::sqrt(a);
#endif
  }
  // NaN from either side propagates, like torch.maximum.
  static FUSEDOPT_INLINE float maximum(float a, float b) { return (a != a || a > b) ? a : b; }
};

template <>
struct MathOps<double> {
  using scalar_t = double;
  static FUSEDOPT_INLINE double splat(double x) { return x; }
  static FUSEDOPT_INLINE double fma(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
    return __fma_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
  }
  static FUSEDOPT_INLINE double neg(double a) { return -a; }
  static FUSEDOPT_INLINE double sqrt(double a) {
#if defined(__CUDA_ARCH__)
    return __dsqrt_rn(a);
#else
    return std::sqrt(a);
#endif
  }
  static FUSEDOPT_INLINE double maximum(double a, double b) { return (a != a || a > b) ? a : b; }
};

// a * b rounded on its own, also where it feeds an addition that the compiler would otherwise contract
// into an fma (GCC does for SIMD registers, nvcc for scalars): torch rounds the product of an
// in-place mul_ (buf.mul_(momentum), exp_avg_sq.mul_(beta2), param.mul_(1 - lr * wd)) before the next
// operation adds to it. CPU and CUDA then evaluate the same roundings.
template <typename T>
FUSEDOPT_INLINE T mul_rounded(const T& a, const T& b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b);
  else if constexpr (std::is_same_v<T, double>) return __dmul_rn(a, b);
  else return a * b;
#else
  T product = a * b;
#if defined(__GNUC__)
  __asm__("" : "+m"(product));  // opaque to the optimiser, so no contraction across it
#endif
  return product;
#endif
}

}  // namespace fusedopt
