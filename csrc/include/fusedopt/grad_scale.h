// The grad_scale divisor of the optimizer ops as their kernels read it. GradScaler passes its scale in
// float32. Folded clipping (max_grad_norm) passes (scale or 1) / clip_coef, in float64 when the norm
// is float64 (float64 grads): torch's clip_grad_norm_ scales such grads by a float64 coefficient, and a
// float32 divisor would cost them float32 precision. The value is converted to the kernel's math type.
#pragma once

#include "fusedopt/macros.h"

namespace fusedopt {

struct GradScaleRef {
  const void* ptr = nullptr;  // nullptr: no division
  bool is_double = false;

  FUSEDOPT_HOST_DEVICE bool has_value() const { return ptr != nullptr; }

  template <typename T>
  FUSEDOPT_HOST_DEVICE T value() const {
    if (ptr == nullptr) return T(1);
    return is_double ? T(*static_cast<const double*>(ptr)) : T(*static_cast<const float*>(ptr));
  }
};

}  // namespace fusedopt
