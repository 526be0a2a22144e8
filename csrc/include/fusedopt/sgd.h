// SGD with momentum, dampening, Nesterov, weight decay and maximize: the update of one element (or one
// SIMD register of elements), shared by the CPU and CUDA kernels.
#pragma once

#include "fusedopt/grad_scale.h"
#include "fusedopt/math_ops.h"

namespace fusedopt {

// Hyperparameters of one sgd_ call, in double so that each kernel rounds them once to its math type.
struct SgdHyper {
  double weight_decay;
  double momentum;
  double dampening;
  bool nesterov;
  bool maximize;
  // The momentum buffer is set to the gradient (torch: buf = grad.clone()) instead of being decayed.
  bool first_step;
};

// Follows torch.optim.SGD's single-tensor path operation by operation; each add_(x, alpha=a) of that
// path is one fused multiply-add here (ATen's vectorised add kernel is an fma too).
//   param, momentum_buf: read and written; grad: read (already unscaled by the caller).
// With momentum == 0 the buffer is neither read nor written. `lr` is passed separately because it may
// come from a device tensor.
template <typename T>
FUSEDOPT_INLINE void sgd_update(T& param, T grad, T& momentum_buf, const SgdHyper& h,
                                typename MathOps<T>::scalar_t lr) {
  using Ops = MathOps<T>;
  using S = typename Ops::scalar_t;
  if (h.maximize) grad = Ops::neg(grad);
  if (h.weight_decay != 0) grad = Ops::fma(param, Ops::splat(S(h.weight_decay)), grad);
  if (h.momentum != 0) {
    if (h.first_step) {
      momentum_buf = grad;
    } else {
      momentum_buf = Ops::fma(grad, Ops::splat(S(1 - h.dampening)),
                              momentum_buf * Ops::splat(S(h.momentum)));
    }
    grad = h.nesterov ? Ops::fma(momentum_buf, Ops::splat(S(h.momentum)), grad) : momentum_buf;
  }
  param = Ops::fma(grad, Ops::splat(-lr), param);
}

// sgd_update for a gradient that may still carry GradScaler's scale: when `unscale` is set, grad is
// unscaled (and clipped, fusedopt/grad_scale.h) first and left so for the caller to store back, as
// torch's fused optimizers do.
template <typename T>
FUSEDOPT_INLINE void sgd_step(T& param, T& grad, T& momentum_buf, const SgdHyper& h,
                              typename MathOps<T>::scalar_t lr, bool unscale, const GradFactors<T>& grad_factors) {
  if (unscale) grad = unscale_grad(grad, grad_factors);
  sgd_update(param, grad, momentum_buf, h, lr);
}

// Lists of an sgd_ call: bit 0 params, bit 1 grads, bit 2 momentum_buffers.
FUSEDOPT_INLINE constexpr unsigned sgd_read_mask(const SgdHyper& h) {
  return 0b011u | (h.momentum != 0 && !h.first_step ? 0b100u : 0u);
}
FUSEDOPT_INLINE constexpr unsigned sgd_write_mask(const SgdHyper& h, bool store_grads) {
  return 0b001u | (store_grads ? 0b010u : 0u) | (h.momentum != 0 ? 0b100u : 0u);
}

}  // namespace fusedopt
