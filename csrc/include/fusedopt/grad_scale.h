// The grad_scale argument of the optimizer ops as their kernels read it: one element s (grads are
// divided by s: GradScaler's unscale) or two, [s, c] (divided by s, then multiplied by c: clipping
// folded into the step, max_grad_norm, passes (GradScaler's scale or 1) and clip_coef). Two factors,
// applied in torch's order (scaler.unscale_, then clip_grad_norm_'s multiply), because one divisor
// s / c overflows float32 for a clip_coef below s / FLT_MAX (an inf- or 1-norm near float32's limit
// with max_norm < 1) and the update would take zero grads. float32, or float64 when the norm is
// float64 (float64 grads: torch scales them by a float64 coefficient); converted to the math type.
#pragma once

#include "fusedopt/macros.h"

namespace fusedopt {

// The two factors in the kernel's math type T (a scalar, or a vector register on the CPU).
template <typename T>
struct GradFactors {
  T divisor;
  T multiplier;
};

// grad / divisor * multiplier. multiplier is 1 without clipping, and x * 1 == x for every x, so
// GradScaler's unscale alone rounds once, as torch's fused optimizers do.
template <typename T>
FUSEDOPT_INLINE T unscale_grad(const T& grad, const GradFactors<T>& f) {
  return grad / f.divisor * f.multiplier;
}

struct GradScaleRef {
  const void* ptr = nullptr;  // nullptr: no division
  bool is_double = false;
  bool has_multiplier = false;  // two elements

  FUSEDOPT_HOST_DEVICE bool has_value() const { return ptr != nullptr; }

  template <typename T>
  FUSEDOPT_HOST_DEVICE T element(int k) const {
    return is_double ? T(static_cast<const double*>(ptr)[k]) : T(static_cast<const float*>(ptr)[k]);
  }

  template <typename T>
  FUSEDOPT_HOST_DEVICE GradFactors<T> factors() const {
    if (ptr == nullptr) return {T(1), T(1)};
    return {element<T>(0), has_multiplier ? element<T>(1) : T(1)};
  }
};

}  // namespace fusedopt
