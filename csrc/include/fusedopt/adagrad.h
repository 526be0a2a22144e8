// Adagrad (with lr decay, weight decay, maximize): the update of one element (or one SIMD register of
// elements), shared by the CPU and CUDA kernels.
#pragma once

#include "fusedopt/grad_scale.h"
#include "fusedopt/math_ops.h"

namespace fusedopt {

struct AdagradHyper {
  double lr_decay;
  double weight_decay;
  double eps;
  bool maximize;
};

// torch's clr = lr / (1 + (step - 1) * lr_decay), evaluated as Python does: in double, each operation
// rounded on its own (no contraction into an fma, which nvcc would otherwise do on the device, and gcc
// may do in the CPU kernels, built with -mfma). `step` is the param's step count after this step's
// increment.
FUSEDOPT_INLINE double adagrad_clr(double lr, double step, double lr_decay) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(lr, __dadd_rn(1.0, __dmul_rn(__dsub_rn(step, 1.0), lr_decay)));
#else
  return lr / (1 + mul_rounded(step - 1, lr_decay));
#endif
}

// The scalars of the update rounded once to the math type S (for one tensor: clr depends on its step).
template <typename S>
struct AdagradCoeffs {
  S weight_decay;
  S eps;
  S neg_clr;
  bool maximize;

  FUSEDOPT_INLINE static AdagradCoeffs make(const AdagradHyper& h, double clr) {
    return AdagradCoeffs{S(h.weight_decay), S(h.eps), S(-clr), h.maximize};
  }
};

// Follows torch.optim.Adagrad's single-tensor (dense) path operation by operation:
//   grad.add(param, alpha=wd)             fma(param, wd, grad)
//   state_sum.addcmul_(g, g, value=1)     fma(g, g, sum)
//   std = state_sum.sqrt().add_(eps)      sqrt(sum) + eps
//   param.addcdiv_(g, std, value=-clr)    param + (-clr * g) / std
// param and state_sum are read and written; grad is read (already unscaled by the caller).
template <typename T>
FUSEDOPT_INLINE void adagrad_update(T& param, T grad, T& state_sum,
                                    const AdagradCoeffs<typename MathOps<T>::scalar_t>& c) {
  using Ops = MathOps<T>;
  if (c.maximize) grad = Ops::neg(grad);
  if (c.weight_decay != 0) grad = Ops::fma(param, Ops::splat(c.weight_decay), grad);
  state_sum = Ops::fma(grad, grad, state_sum);
  const T std = Ops::sqrt(state_sum) + Ops::splat(c.eps);
  param = param + (Ops::splat(c.neg_clr) * grad) / std;
}

// adagrad_update for a gradient that may still carry GradScaler's scale (see rmsprop_step).
template <typename T>
FUSEDOPT_INLINE void adagrad_step(T& param, T& grad, T& state_sum,
                                  const AdagradCoeffs<typename MathOps<T>::scalar_t>& c, bool unscale,
                                  const GradFactors<T>& grad_factors) {
  if (unscale) grad = unscale_grad(grad, grad_factors);
  adagrad_update(param, grad, state_sum, c);
}

// Lists of an adagrad_ call: bit 0 params, 1 grads, 2 state_sums, 3 state_steps (never walked
// elementwise: one float32 count per tensor, read once per tensor to compute clr).
FUSEDOPT_INLINE constexpr unsigned adagrad_read_mask() { return 0b0111u; }
FUSEDOPT_INLINE constexpr unsigned adagrad_write_mask(bool store_grads) {
  return 0b0101u | (store_grads ? 0b0010u : 0u);
}

}  // namespace fusedopt
