// Adam / AdamW (weight decay, decoupled weight decay, AMSGrad, maximize): the update of one element (or
// one SIMD register of elements), shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>

#include "fusedopt/grad_scale.h"
#include "fusedopt/math_ops.h"

namespace fusedopt {

// Hyperparameters of one adam_ call, in double so that each kernel rounds them once to its math type.
struct AdamHyper {
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  bool amsgrad;
  bool maximize;
  bool decoupled_weight_decay;  // AdamW
};

// The per-tensor scalars of one step, computed in double from lr and that tensor's step count exactly
// as torch's single-tensor Adam computes them in Python floats, then rounded once to the math type S.
template <typename S>
struct AdamScalars {
  S weight_decay;    // L2 term: grad += weight_decay * param
  S decay_factor;    // AdamW: param *= 1 - lr * weight_decay
  S lerp_coeff;      // exp_avg.lerp_(grad, 1 - beta1) as ATen computes it: fma(coeff, grad - m, base)
  bool lerp_from_m;  // base = m (weight < 0.5) or grad (weight >= 0.5)
  S beta2;
  S one_minus_beta2;
  S bias_correction2_sqrt;
  S eps;
  S neg_step_size;  // -lr / (1 - beta1**step)
};

// The step count's part of the scalars: 1 - beta1**step and sqrt(1 - beta2**step).
struct AdamBiasCorrections {
  double bias_correction1;
  double bias_correction2_sqrt;
};

FUSEDOPT_INLINE AdamBiasCorrections adam_bias_corrections(const AdamHyper& h, double step) {
  const double bias_correction2 = 1 - ::pow(h.beta2, step);
  return {1 - ::pow(h.beta1, step), ::sqrt(bias_correction2)};  // torch: bias_correction2 ** 0.5
}

template <typename S>
FUSEDOPT_INLINE AdamScalars<S> adam_scalars(const AdamHyper& h, double lr, const AdamBiasCorrections& bc) {
  AdamScalars<S> s;
  s.weight_decay = S(h.weight_decay);
  s.decay_factor = S(1 - mul_rounded(lr, h.weight_decay));  // as torch's Python float: product rounded
  // ATen's lerp: start + w * (end - start) for |w| < 0.5, else end + (w - 1) * (end - start), with w
  // (and w - 1) in the math type, and the branch chosen on w in the math type too: 1 - beta1 just
  // below 0.5 in double can round to 0.5 in float.
  const S weight = S(1 - h.beta1);
  s.lerp_from_m = (weight < S(0) ? -weight : weight) < S(0.5);
  s.lerp_coeff = s.lerp_from_m ? weight : S(weight - S(1));
  s.beta2 = S(h.beta2);
  s.one_minus_beta2 = S(1 - h.beta2);
  s.bias_correction2_sqrt = S(bc.bias_correction2_sqrt);
  s.eps = S(h.eps);
  s.neg_step_size = S(-(lr / bc.bias_correction1));
  return s;
}

template <typename S>
FUSEDOPT_INLINE AdamScalars<S> adam_scalars(const AdamHyper& h, double lr, double step) {
  return adam_scalars<S>(h, lr, adam_bias_corrections(h, step));
}

// Follows torch.optim.Adam's single-tensor path (_single_tensor_adam, capturable=False) operation by
// operation, with ATen's CPU kernels' roundings:
//   grad = -grad if maximize
//   param.mul_(1 - lr*wd) (decoupled) | grad = grad.add(param, alpha=wd)     rounded product | one fma
//   exp_avg.lerp_(grad, 1 - beta1)                                           one fma
//   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)             fma(c*g, g, rounded v*b2)
//   max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)                     (amsgrad)
//   denom = (sqrt(v) / bias_correction2_sqrt).add_(eps)
//   param.addcdiv_(exp_avg, denom, value=-step_size)                         param + (-ss*m)/denom
// param, exp_avg, exp_avg_sq, max_exp_avg_sq: read and written (max only with amsgrad); grad: read.
template <typename T>
FUSEDOPT_INLINE void adam_update(T& param, T grad, T& exp_avg, T& exp_avg_sq, T& max_exp_avg_sq,
                                 const AdamHyper& h,
                                 const AdamScalars<typename MathOps<T>::scalar_t>& s) {
  using Ops = MathOps<T>;
  if (h.maximize) grad = Ops::neg(grad);
  if (h.weight_decay != 0) {
    // mul_rounded: the product must not be contracted into the final addition (see math_ops.h).
    if (h.decoupled_weight_decay) param = mul_rounded(param, Ops::splat(s.decay_factor));
    else grad = Ops::fma(param, Ops::splat(s.weight_decay), grad);
  }
  exp_avg = Ops::fma(Ops::splat(s.lerp_coeff), grad - exp_avg, s.lerp_from_m ? exp_avg : grad);
  // Spelled out, so that no compiler picks its own contraction (ATen's addcmul: self + c * t1 * t2).
  exp_avg_sq = Ops::fma(Ops::splat(s.one_minus_beta2) * grad, grad, mul_rounded(exp_avg_sq, Ops::splat(s.beta2)));
  T second = exp_avg_sq;
  if (h.amsgrad) {
    max_exp_avg_sq = Ops::maximum(max_exp_avg_sq, exp_avg_sq);
    second = max_exp_avg_sq;
  }
  const T denom = Ops::sqrt(second) / Ops::splat(s.bias_correction2_sqrt) + Ops::splat(s.eps);
  param = Ops::splat(s.neg_step_size) * exp_avg / denom + param;
}

// adam_update for a gradient that may still carry GradScaler's scale: when `unscale` is set, grad is
// unscaled (and clipped, fusedopt/grad_scale.h) first and left so for the caller to store back, as
// torch's fused optimizers do.
template <typename T>
FUSEDOPT_INLINE void adam_step(T& param, T& grad, T& exp_avg, T& exp_avg_sq, T& max_exp_avg_sq,
                               const AdamHyper& h,
                               const AdamScalars<typename MathOps<T>::scalar_t>& s, bool unscale,
                               const GradFactors<T>& grad_factors) {
  if (unscale) grad = unscale_grad(grad, grad_factors);
  adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, h, s);
}

// Lists of an adam_ call: bit 0 params, 1 grads, 2 exp_avgs, 3 exp_avg_sqs, 4 max_exp_avg_sqs,
// 5 state_steps (one value per tensor, never walked elementwise).
constexpr int kAdamStepList = 5;
FUSEDOPT_INLINE constexpr unsigned adam_read_mask(bool amsgrad) {
  return 0b01111u | (amsgrad ? 0b10000u : 0u);
}
FUSEDOPT_INLINE constexpr unsigned adam_write_mask(bool amsgrad, bool store_grads) {
  return 0b01101u | (store_grads ? 0b00010u : 0u) | (amsgrad ? 0b10000u : 0u);
}

}  // namespace fusedopt
