// Declarations of the per-variant RMSprop and Adagrad CPU kernels (see csrc/cpu/dispatch.h) and their
// argument structs.
#pragma once

#include "common/tensor_lists.h"
#include "cpu/dispatch.h"
#include "fusedopt/adagrad.h"
#include "fusedopt/rmsprop.h"

namespace fusedopt::cpu {

// Lists: 0 params, 1 grads, 2 square_avgs, 3 momentum_buffers (nullptr unless momentum > 0),
// 4 grad_avgs (nullptr unless centered). The step counts are incremented by the entry point.
struct RmspropCpuArgs {
  RmspropHyper hyper;
  double lr;
  bool unscale_grads;  // grads divided by grad_scale
  bool write_grads;    // and the divided grads stored (false: folded clipping without GradScaler)
  GradFactors<double> grad_factors;  // grad_scale as two factors (fusedopt/grad_scale.h)
};

// Lists: 0 params, 1 grads, 2 state_sums, 3 state_steps (one float32 per tensor, already incremented
// for this step: the kernel reads it to compute the tensor's clr).
struct AdagradCpuArgs {
  AdagradHyper hyper;
  double lr;
  bool unscale_grads;
  bool write_grads;
  GradFactors<double> grad_factors;  // grad_scale as two factors (fusedopt/grad_scale.h)
};

}  // namespace fusedopt::cpu

FUSEDOPT_DECLARE_CPU_KERNEL(void rmsprop_kernel(const TensorListsView<5>& lists, const RmspropCpuArgs& args))
FUSEDOPT_DECLARE_CPU_KERNEL(void adagrad_kernel(const TensorListsView<4>& lists, const AdagradCpuArgs& args))
