// fusedopt::batch_norm_* on CPU: the shared entries (checks and outputs, common/batch_norm_checks.h)
// with the per-variant kernels (csrc/cpu/kernels/batch_norm_kernel.cpp) as their launch.
#include <tuple>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/batch_norm_checks.h"
#include "cpu/kernels/batch_norm_kernels.h"

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

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("batch_norm_train", &batch_norm_train_cpu);
  m.impl("batch_norm_train_backward", &batch_norm_train_backward_cpu);
  m.impl("batch_norm_stats", &batch_norm_stats_cpu);
  m.impl("batch_norm_elemt", &batch_norm_elemt_cpu);
  m.impl("batch_norm_backward_reduce", &batch_norm_backward_reduce_cpu);
  m.impl("batch_norm_backward_elemt", &batch_norm_backward_elemt_cpu);
}

}  // namespace fusedopt::cpu
