// RMSprop (plain or centered, with momentum, weight decay, maximize): the update of one element (or
// one SIMD register of elements), shared by the CPU and CUDA kernels.
#pragma once

#include "fusedopt/grad_scale.h"
#include "fusedopt/math_ops.h"

namespace fusedopt {

// Hyperparameters of one rmsprop_ call, in double so that each kernel rounds them once to its math type.
struct RmspropHyper {
  double alpha;
  double eps;
  double weight_decay;
  double momentum;  // > 0: momentum buffers are read and written
  bool centered;    // grad averages are read and written
  bool maximize;
};

// The scalars of the update rounded to the math type S once per call (torch passes each Python float
// to its kernels as a Scalar, which is rounded to the tensor's math type the same way).
template <typename S>
struct RmspropCoeffs {
  S alpha;
  S one_minus_alpha;  // addcmul_'s value and lerp_'s weight (torch computes 1 - alpha in double)
  S lerp_coeff;       // ATen's lerp: weight when |weight| < 0.5, else weight - 1 (from the other end)
  bool lerp_from_start;
  S eps;
  S weight_decay;
  S momentum;
  S neg_lr;
  bool maximize;

  FUSEDOPT_INLINE static RmspropCoeffs make(const RmspropHyper& h, double lr) {
    RmspropCoeffs c;
    c.alpha = S(h.alpha);
    c.one_minus_alpha = S(1 - h.alpha);
    const S w = c.one_minus_alpha;
    c.lerp_from_start = (w < S(0) ? -w : w) < S(0.5);
    c.lerp_coeff = c.lerp_from_start ? w : w - S(1);
    c.eps = S(h.eps);
    c.weight_decay = S(h.weight_decay);
    c.momentum = S(h.momentum);
    c.neg_lr = S(-lr);
    c.maximize = h.maximize;
    return c;
  }
};

// Follows torch.optim.RMSprop's single-tensor path operation by operation, with ATen's roundings:
//   grad.add(param, alpha=wd)              fma(param, wd, grad)
//   sq.mul_(alpha).addcmul_(g, g, value=v) fma(v * g, g, sq * alpha)
//   ga.lerp_(g, w)                         fma(w, g - ga, ga)  or  fma(w - 1, g - ga, g)  (|w| >= 0.5)
//   sq.addcmul(ga, ga, value=-1).sqrt_()   sqrt(fma(-ga, ga, sq))
//   avg.add_(eps)                          avg + eps
//   buf.mul_(m).addcdiv_(g, avg)           buf * m + g / avg
//   param.add_(buf, alpha=-lr)             fma(buf, -lr, param)
//   param.addcdiv_(g, avg, value=-lr)      param + (-lr * g) / avg
// param, square_avg, momentum_buf (kMomentum), grad_avg (kCentered) are read and written; grad is read
// (already unscaled by the caller).
template <bool kMomentum, bool kCentered, typename T>
FUSEDOPT_INLINE void rmsprop_update(T& param, T grad, T& square_avg, T& momentum_buf, T& grad_avg,
                                    const RmspropCoeffs<typename MathOps<T>::scalar_t>& c) {
  using Ops = MathOps<T>;
  if (c.maximize) grad = Ops::neg(grad);
  if (c.weight_decay != 0) grad = Ops::fma(param, Ops::splat(c.weight_decay), grad);
  square_avg = Ops::fma(Ops::splat(c.one_minus_alpha) * grad, grad, square_avg * Ops::splat(c.alpha));
  T avg;
  if constexpr (kCentered) {
    const T diff = grad - grad_avg;
    grad_avg = c.lerp_from_start ? Ops::fma(Ops::splat(c.lerp_coeff), diff, grad_avg)
                                 : Ops::fma(Ops::splat(c.lerp_coeff), diff, grad);
    avg = Ops::sqrt(Ops::fma(Ops::neg(grad_avg), grad_avg, square_avg));
  } else {
    avg = Ops::sqrt(square_avg);
  }
  avg = avg + Ops::splat(c.eps);
  if constexpr (kMomentum) {
    const T scaled_buf = mul_rounded(momentum_buf, Ops::splat(c.momentum));
    momentum_buf = scaled_buf + grad / avg;
    param = Ops::fma(momentum_buf, Ops::splat(c.neg_lr), param);
  } else {
    param = param + (Ops::splat(c.neg_lr) * grad) / avg;
  }
}

// rmsprop_update for a gradient that may still carry GradScaler's scale: with `unscale`, grad is
// unscaled (and clipped, fusedopt/grad_scale.h) first and left so for the caller to store back
// (torch's fused optimizers do too).
template <bool kMomentum, bool kCentered, typename T>
FUSEDOPT_INLINE void rmsprop_step(T& param, T& grad, T& square_avg, T& momentum_buf, T& grad_avg,
                                  const RmspropCoeffs<typename MathOps<T>::scalar_t>& c, bool unscale,
                                  const GradFactors<T>& grad_factors) {
  if (unscale) grad = unscale_grad(grad, grad_factors);
  rmsprop_update<kMomentum, kCentered>(param, grad, square_avg, momentum_buf, grad_avg, c);
}

// Lists of an rmsprop_ call's update: bit 0 params, 1 grads, 2 square_avgs, 3 momentum_buffers,
// 4 grad_avgs. The step counts are a view of their own, incremented by the entry points.
FUSEDOPT_INLINE constexpr unsigned rmsprop_read_mask(bool momentum, bool centered) {
  return 0b00111u | (momentum ? 0b01000u : 0u) | (centered ? 0b10000u : 0u);
}
FUSEDOPT_INLINE constexpr unsigned rmsprop_write_mask(bool momentum, bool centered, bool store_grads) {
  return 0b00101u | (store_grads ? 0b00010u : 0u) | (momentum ? 0b01000u : 0u) | (centered ? 0b10000u : 0u);
}

}  // namespace fusedopt
