// fusedopt::sgd_ on CPU: checks, then the per-variant kernel (csrc/cpu/kernels/sgd_kernel.cpp).
#include <torch/library.h>

#include "common/sgd_checks.h"
#include "common/tensor_lists.h"
#include "cpu/kernels/kernels.h"

namespace fusedopt::cpu {
namespace {

void sgd_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, double lr,
             double weight_decay, double momentum, double dampening, bool nesterov, bool maximize,
             bool is_first_step, const std::optional<at::Tensor>& lr_tensor,
             const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
             bool write_grads) {
  const auto view = checked_lists_view<3>({params, grads, momentum_buffers}, [&](const EntryBlockFn& then) {
    check_sgd_inputs(params, grads, momentum_buffers, momentum, lr_tensor, grad_scale, found_inf, then);
  });
  if (params.empty()) return;
  if (found_inf.has_value() && read_cpu_scalar(*found_inf) != 0) return;  // GradScaler: skip step
  SgdCpuArgs args;
  args.hyper = SgdHyper{weight_decay, momentum, dampening, nesterov, maximize, is_first_step};
  args.lr = lr_tensor.has_value() ? read_cpu_scalar(*lr_tensor) : lr;
  args.unscale_grads = grad_scale.has_value();
  args.write_grads = write_grads;
  args.grad_factors = grad_scale_ref(grad_scale).factors<double>();
  FUSEDOPT_CPU_KERNEL(sgd_kernel)(view, args);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) { m.impl("sgd_", &sgd_cpu); }
// A sparse tensor in the lists routes the call here; the checks then reject it with a clear message.
TORCH_LIBRARY_IMPL(fusedopt, SparseCPU, m) { m.impl("sgd_", &sgd_cpu); }

}  // namespace fusedopt::cpu
