// fusedopt::adam_ on CPU: checks, step counts, then the per-variant kernel
// (csrc/cpu/kernels/adam_kernel.cpp).
#include <torch/library.h>

#include "common/adam_checks.h"
#include "cpu/kernels/adam_kernels.h"
#include "cpu/step_counts.h"

namespace fusedopt::cpu {
namespace {

void adam_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
              at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
              double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
              bool maximize, bool decoupled_weight_decay, at::TensorList master_params,
              const std::optional<at::Tensor>& lr_tensor, const std::optional<at::Tensor>& grad_scale,
              const std::optional<at::Tensor>& found_inf, bool write_grads) {
  // The view is filled in the checks' walk over the tensors (checked_lists_view).
  const auto view = checked_lists_view<7>(
      {params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, master_params},
      [&](const EntryBlockFn& then) {
        check_adam_inputs(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad,
                          master_params, lr_tensor, grad_scale, found_inf, then);
      });
  if (params.empty()) return;
  if (found_inf.has_value() && read_cpu_scalar(*found_inf) != 0) return;  // GradScaler: skip step
  AdamCpuArgs args;
  args.hyper = AdamHyper{beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay};
  args.lr = lr_tensor.has_value() ? read_cpu_scalar(*lr_tensor) : lr;
  args.has_master = !master_params.empty();
  args.unscale_grads = grad_scale.has_value();
  args.write_grads = write_grads;
  args.grad_factors = grad_scale_ref(grad_scale).factors<double>();
  increment_step_counts(view, kAdamStepList);
  FUSEDOPT_CPU_KERNEL(adam_kernel)(view, args);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) { m.impl("adam_", &adam_cpu); }
// A sparse tensor in the lists routes the call here; the checks then reject it with a clear message.
TORCH_LIBRARY_IMPL(fusedopt, SparseCPU, m) { m.impl("adam_", &adam_cpu); }

}  // namespace fusedopt::cpu
