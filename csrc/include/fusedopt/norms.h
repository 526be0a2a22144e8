// Vector p-norms over many tensors (gradient clipping): what each element contributes, how partial
// results combine, the final root, and torch's clip coefficient. Shared by the CPU and CUDA kernels.
//
// A norm is computed as  finalize(combine(..., accumulate(identity, x_0), ...)):
//   p = 0     count of nonzero elements (NaN counts, as in torch.linalg.vector_norm)
//   p = 1     sum |x|
//   p = 2     sqrt(sum x*x)
//   p = inf   max |x|       (NaN propagates)
//   p = -inf  min |x|       (NaN propagates)
//   other p   (sum |x|^p)^(1/p)   (negative p too: |0|^p = inf, as torch)
// Accumulation and combination are associative up to rounding; kernels fix the order of every
// combination so results do not depend on the number of threads or blocks.
#pragma once

#include <cmath>
#include <limits>

#include "fusedopt/math_ops.h"

namespace fusedopt {

enum class NormKind : int { Count = 0, Sum = 1, SumSquares = 2, Max = 3, Min = 4, Power = 5 };

FUSEDOPT_INLINE NormKind norm_kind(double p) {
  if (p == 0) return NormKind::Count;
  if (p == 1) return NormKind::Sum;
  if (p == 2) return NormKind::SumSquares;
  if (p == std::numeric_limits<double>::infinity()) return NormKind::Max;
  if (p == -std::numeric_limits<double>::infinity()) return NormKind::Min;
  return NormKind::Power;
}

// The operations norms need beyond MathOps: specialised here for float/double and in
// csrc/cpu/kernels/norm_kernel.cpp for at::vec::Vectorized.
template <typename T>
struct NormOps;

template <typename S>
struct ScalarNormOps {
  using scalar_t = S;
  static FUSEDOPT_INLINE S splat(S x) { return x; }
  // fabs, not x < 0 ? -x : x: that keeps -0, and pow(-0, p) is -inf for a negative odd integer p
  // (then -inf + inf = NaN where torch's norm is 0).
  static FUSEDOPT_INLINE S abs(S x) { return static_cast<S>(::fabs(x)); }
  static FUSEDOPT_INLINE S nonzero(S x) { return x != S(0) ? S(1) : S(0); }  // NaN != 0
  static FUSEDOPT_INLINE S pow(S x, S p) { return ::pow(x, p); }
  static FUSEDOPT_INLINE S maximum(S a, S b) { return MathOps<S>::maximum(a, b); }
  static FUSEDOPT_INLINE S minimum(S a, S b) { return (a != a || a < b) ? a : b; }
  static FUSEDOPT_INLINE S fma(S a, S b, S c) { return MathOps<S>::fma(a, b, c); }
};
template <>
struct NormOps<float> : ScalarNormOps<float> {
  static FUSEDOPT_INLINE float pow(float x, float p) { return ::powf(x, p); }
};
template <>
struct NormOps<double> : ScalarNormOps<double> {};

// The starting value of an accumulation (and the norm of no elements, except for Min where torch
// raises on empty input and callers never finalize an empty Min).
template <typename S>
FUSEDOPT_INLINE S norm_identity(NormKind k) {
  return k == NormKind::Min ? std::numeric_limits<S>::infinity() : S(0);
}

// acc with element (or register) x folded in. T: a value type with NormOps; p: the norm's order.
template <NormKind K, typename T>
FUSEDOPT_INLINE T norm_accumulate(const T& acc, const T& x, const T& p) {
  using Ops = NormOps<T>;
  if constexpr (K == NormKind::Count) return acc + Ops::nonzero(x);
  else if constexpr (K == NormKind::Sum) return acc + Ops::abs(x);
  else if constexpr (K == NormKind::SumSquares) return Ops::fma(x, x, acc);
  else if constexpr (K == NormKind::Max) return Ops::maximum(acc, Ops::abs(x));
  else if constexpr (K == NormKind::Min) return Ops::minimum(acc, Ops::abs(x));
  else return acc + Ops::pow(Ops::abs(x), p);
}

// Two partial accumulations combined.
template <NormKind K, typename T>
FUSEDOPT_INLINE T norm_combine(const T& a, const T& b) {
  using Ops = NormOps<T>;
  if constexpr (K == NormKind::Max) return Ops::maximum(a, b);
  else if constexpr (K == NormKind::Min) return Ops::minimum(a, b);
  else return a + b;
}

// The norm from the full accumulation.
template <typename S>
FUSEDOPT_INLINE S norm_finalize(NormKind k, S acc, double p) {
  if (k == NormKind::SumSquares) return MathOps<S>::sqrt(acc);
  if (k == NormKind::Power) return NormOps<S>::pow(acc, S(1.0 / p));
  return acc;
}

// torch.nn.utils.clip_grads_with_norm_'s coefficient, operation by operation in the norm's dtype S:
// clamp(max_norm / (total_norm + 1e-6), max=1), where `max_norm / t` is reciprocal(t) * max_norm
// (Tensor.__rtruediv__). NaN stays NaN (clamp propagates it).
template <typename S>
FUSEDOPT_INLINE S clip_coefficient(S total_norm, double max_norm) {
  const S coef = (S(1) / (total_norm + S(1e-6))) * S(max_norm);
  return coef > S(1) ? S(1) : coef;
}

}  // namespace fusedopt
