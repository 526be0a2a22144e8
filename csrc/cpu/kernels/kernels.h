// Declarations of the per-variant CPU kernels (see csrc/cpu/dispatch.h) and their argument structs.
#pragma once

#include "common/tensor_lists.h"
#include "cpu/dispatch.h"
#include "fusedopt/sgd.h"

namespace fusedopt::cpu {

// Lists: 0 params, 1 grads, 2 momentum_buffers (nullptr when momentum == 0).
struct SgdCpuArgs {
  SgdHyper hyper;
  double lr;
  // When set, grads are divided by grad_scale and the unscaled values written back (torch's fused
  // optimizers do the same, so GradScaler users see unscaled grads after step()).
  bool unscale_grads;
  bool write_grads;  // store the divided grads (false: folded clipping without GradScaler)
  GradFactors<double> grad_factors;  // grad_scale as two factors (fusedopt/grad_scale.h)
};

}  // namespace fusedopt::cpu

FUSEDOPT_DECLARE_CPU_KERNEL(void sgd_kernel(const TensorListsView<3>& lists, const SgdCpuArgs& args))
