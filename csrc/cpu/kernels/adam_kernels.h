// Declarations of the per-variant Adam CPU kernel (see csrc/cpu/dispatch.h) and its argument struct.
#pragma once

#include "common/tensor_lists.h"
#include "cpu/dispatch.h"
#include "fusedopt/adam.h"

namespace fusedopt::cpu {

// Lists: 0 params, 1 grads, 2 exp_avgs, 3 exp_avg_sqs, 4 max_exp_avg_sqs (nullptr unless amsgrad),
// 5 state_steps (one float per tensor, already incremented), 6 master_params (nullptr when absent;
// then params/grads are float16/bfloat16 and lists 2-4 and 6 float32).
constexpr int kAdamMasterList = 6;

struct AdamCpuArgs {
  AdamHyper hyper;
  double lr;
  bool has_master;
  // When set, grads are divided by grad_scale and the unscaled values written back (as torch's fused
  // optimizers do, so GradScaler users see unscaled grads after step()).
  bool unscale_grads;
  bool write_grads;  // store the divided grads (false: folded clipping without GradScaler)
  GradFactors<double> grad_factors;  // grad_scale as two factors (fusedopt/grad_scale.h)
};

}  // namespace fusedopt::cpu

FUSEDOPT_DECLARE_CPU_KERNEL(void adam_kernel(const TensorListsView<7>& lists, const AdamCpuArgs& args))
