// MathOps for at::vec::Vectorized, so the shared update rules in csrc/include/fusedopt run on whole SIMD
// registers in the CPU kernels. Included only by files compiled per CPU variant (csrc/cpu/kernels).
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "fusedopt/math_ops.h"

namespace fusedopt {

template <typename Real>
struct VecMathOps {
  using V = at::vec::Vectorized<Real>;
  using scalar_t = Real;
  static inline V splat(Real x) { return V(x); }
  static inline V fma(const V& a, const V& b, const V& c) { return at::vec::fmadd(a, b, c); }
  static inline V neg(const V& a) { return a.neg(); }
  static inline V sqrt(const V& a) { return a.sqrt(); }
  static inline V maximum(const V& a, const V& b) { return at::vec::maximum(a, b); }
};

template <>
struct MathOps<at::vec::Vectorized<float>> : VecMathOps<float> {};
template <>
struct MathOps<at::vec::Vectorized<double>> : VecMathOps<double> {};

}  // namespace fusedopt
