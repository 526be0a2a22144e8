// fusedopt::rmsprop_ and fusedopt::adagrad_ on CPU: checks, step counts, then the per-variant kernels
// (csrc/cpu/kernels/rmsprop_kernel.cpp, adagrad_kernel.cpp).
#include <array>

#include <torch/library.h>

#include "common/rmsprop_adagrad_checks.h"
#include "common/tensor_lists.h"
#include "cpu/step_counts.h"
#include "cpu/kernels/rmsprop_adagrad_kernels.h"

namespace fusedopt::cpu {
namespace {

void rmsprop_cpu(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                 at::TensorList momentum_buffers, at::TensorList grad_avgs, at::TensorList state_steps,
                 double lr, double alpha, double eps, double weight_decay, double momentum, bool centered,
                 bool maximize, const std::optional<at::Tensor>& lr_tensor,
                 const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                 bool write_grads) {
  const at::TensorList none;
  const std::array<at::TensorList, 5> lists{params, grads, square_avgs, momentum > 0 ? momentum_buffers : none,
                                            centered ? grad_avgs : none};
  // The views are filled in the checks' walk over the tensors (run_entry_checks' `then`).
  auto view = sized_lists_view<5>(params.size());
  auto steps = sized_lists_view<1>(params.size());
  check_rmsprop_inputs(params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps, momentum,
                       centered, lr_tensor, grad_scale, found_inf, [&](size_t begin, size_t end) {
                         fill_lists_view(view, lists, begin, end);
                         fill_lists_view(steps, {state_steps}, begin, end);
                       });
  finish_lists_view(view);
  finish_lists_view(steps);
  if (params.empty()) return;
  if (found_inf.has_value() && read_cpu_scalar(*found_inf) != 0) return;  // GradScaler: skip step
  increment_step_counts(steps, 0);
  RmspropCpuArgs args;
  args.hyper = RmspropHyper{alpha, eps, weight_decay, momentum, centered, maximize};
  args.lr = lr_tensor.has_value() ? read_cpu_scalar(*lr_tensor) : lr;
  args.unscale_grads = grad_scale.has_value();
  args.write_grads = write_grads;
  args.grad_factors = grad_scale_ref(grad_scale).factors<double>();
  FUSEDOPT_CPU_KERNEL(rmsprop_kernel)(view, args);
}

void adagrad_cpu(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                 at::TensorList state_steps, double lr, double lr_decay, double weight_decay, double eps,
                 bool maximize, const std::optional<at::Tensor>& lr_tensor,
                 const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                 bool write_grads) {
  const auto view = checked_lists_view<4>({params, grads, state_sums, state_steps}, [&](const EntryBlockFn& then) {
    check_adagrad_inputs(params, grads, state_sums, state_steps, lr_tensor, grad_scale, found_inf, then);
  });
  if (params.empty()) return;
  if (found_inf.has_value() && read_cpu_scalar(*found_inf) != 0) return;
  AdagradCpuArgs args;
  args.hyper = AdagradHyper{lr_decay, weight_decay, eps, maximize};
  args.lr = lr_tensor.has_value() ? read_cpu_scalar(*lr_tensor) : lr;
  args.unscale_grads = grad_scale.has_value();
  args.write_grads = write_grads;
  args.grad_factors = grad_scale_ref(grad_scale).factors<double>();
  increment_step_counts(view, 3);
  FUSEDOPT_CPU_KERNEL(adagrad_kernel)(view, args);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("rmsprop_", &rmsprop_cpu);
  m.impl("adagrad_", &adagrad_cpu);
}
// A sparse tensor in the lists routes the call here; the checks then reject it with a clear message.
TORCH_LIBRARY_IMPL(fusedopt, SparseCPU, m) {
  m.impl("rmsprop_", &rmsprop_cpu);
  m.impl("adagrad_", &adagrad_cpu);
}

}  // namespace fusedopt::cpu
