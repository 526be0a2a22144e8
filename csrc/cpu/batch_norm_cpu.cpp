// fusedopt::batch_norm_* on CPU: the shared entries (checks and outputs, common/batch_norm_checks.h)
// with the per-variant kernels (csrc/cpu/kernels/batch_norm_kernel.cpp) as their launch.
#include <tuple>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/batch_norm_checks.h"
#include "cpu/kernels/batch_norm_kernels.h"
#include "fusedopt/batch_norm.h"

namespace fusedopt::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> batch_norm_stats_cpu(const at::Tensor& input) {
  return run_batch_norm_stats(input, FUSEDOPT_CPU_KERNEL(batch_norm_stats_kernel));
}

at::Tensor batch_norm_elemt_cpu(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                                const at::Tensor& var, double eps) {
  return run_batch_norm_elemt(input, weight, bias, mean, var, eps, FUSEDOPT_CPU_KERNEL(batch_norm_elemt_kernel));
}

std::tuple<at::Tensor, at::Tensor> batch_norm_backward_reduce_cpu(const at::Tensor& grad_output,
                                                                  const at::Tensor& input, const at::Tensor& mean) {
  return run_batch_norm_backward_reduce(grad_output, input, mean,
                                        FUSEDOPT_CPU_KERNEL(batch_norm_backward_reduce_kernel));
}

at::Tensor batch_norm_backward_elemt_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const std::optional<at::Tensor>& weight, const at::Tensor& mean,
                                         const at::Tensor& var, const at::Tensor& sum_dy,
                                         const at::Tensor& sum_dy_xmu, int64_t count, double eps) {
  return run_batch_norm_backward_elemt(grad_output, input, weight, mean, var, sum_dy, sum_dy_xmu, count, eps,
                                       FUSEDOPT_CPU_KERNEL(batch_norm_backward_elemt_kernel));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_train_cpu(const at::Tensor& input,
                                                                    const std::optional<at::Tensor>& weight,
                                                                    const std::optional<at::Tensor>& bias,
                                                                    double eps) {
  return run_batch_norm_train(input, weight, bias, eps, FUSEDOPT_CPU_KERNEL(batch_norm_train_kernel));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_train_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const at::Tensor& mean, const at::Tensor& var, double eps) {
  return run_batch_norm_train_backward(grad_output, input, weight, mean, var, eps,
                                       FUSEDOPT_CPU_KERNEL(batch_norm_train_backward_kernel));
}

// One buffer: running[c * stride] updated from batch[c] in acc_t (a loop over C values; nothing to
// vectorise or parallelise).
template <typename acc_t, typename scalar_t, typename stat_t>
void update_running(scalar_t* running, int64_t stride, const stat_t* batch, int64_t C, int64_t count,
                    double momentum, bool is_var) {
  for (int64_t c = 0; c < C; ++c) {
    running[c * stride] =
        bn_running_channel<acc_t>(running[c * stride], batch[c], count, static_cast<acc_t>(momentum), is_var);
  }
}

void update_running_stats_launch(at::Tensor& running, const at::Tensor& batch, bool is_var, int64_t count,
                                 double momentum) {
  dispatch_running_update(running.scalar_type(), batch.scalar_type(), [&](auto acc, auto scalar, auto stat) {
    using acc_t = typename decltype(acc)::type;
    using scalar_t = typename decltype(scalar)::type;
    using stat_t = typename decltype(stat)::type;
    update_running<acc_t>(running.data_ptr<scalar_t>(), running.stride(0), batch.const_data_ptr<stat_t>(),
                          batch.size(0), count, momentum, is_var);
  });
}

void batch_norm_update_running_stats_cpu(const std::optional<at::Tensor>& running_mean,
                                         const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                                         const at::Tensor& var, int64_t count, double momentum) {
  run_batch_norm_update_running_stats(running_mean, running_var, mean, var, count, momentum,
                                      &update_running_stats_launch);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("batch_norm_update_running_stats_", &batch_norm_update_running_stats_cpu);
  m.impl("batch_norm_train", &batch_norm_train_cpu);
  m.impl("batch_norm_train_backward", &batch_norm_train_backward_cpu);
  m.impl("batch_norm_stats", &batch_norm_stats_cpu);
  m.impl("batch_norm_elemt", &batch_norm_elemt_cpu);
  m.impl("batch_norm_backward_reduce", &batch_norm_backward_reduce_cpu);
  m.impl("batch_norm_backward_elemt", &batch_norm_backward_elemt_cpu);
}

}  // namespace fusedopt::cpu
