// fusedopt::batch_norm_* on CPU: checks and outputs, then the per-variant kernels
// (csrc/cpu/kernels/batch_norm_kernel.cpp).
#include <tuple>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/batch_norm_checks.h"
#include "cpu/kernels/batch_norm_kernels.h"

namespace fusedopt::cpu {
namespace {

// Per-channel tensors are read as dense arrays.
std::optional<at::Tensor> dense(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}
const at::Tensor* ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? &*t : nullptr; }

at::Tensor param_empty(const BnLayout& l) {
  return at::empty({l.C}, l.input.options().dtype(bn_param_dtype(l.input.scalar_type())));
}

std::tuple<at::Tensor, at::Tensor> batch_norm_stats_cpu(const at::Tensor& input) {
  const BnLayout l = bn_layout(input, "fusedopt::batch_norm_stats");
  at::Tensor mean = param_empty(l), var = param_empty(l);
  FUSEDOPT_CPU_KERNEL(batch_norm_stats_kernel)(l, mean, var);
  return {mean, var};
}

at::Tensor batch_norm_elemt_cpu(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                                const at::Tensor& var, double eps) {
  constexpr const char* op = "fusedopt::batch_norm_elemt";
  const BnLayout l = bn_layout(input, op);
  check_bn_param(weight, l, op, "weight");
  check_bn_param(bias, l, op, "bias");
  check_bn_param(mean, l, op, "mean");
  check_bn_param(var, l, op, "var");
  at::Tensor out = bn_empty_like(l);
  const auto w = dense(weight), b = dense(bias);
  FUSEDOPT_CPU_KERNEL(batch_norm_elemt_kernel)(l, out, mean.contiguous(), var.contiguous(), ptr(w), ptr(b), eps);
  return out;
}

std::tuple<at::Tensor, at::Tensor> batch_norm_backward_reduce_cpu(const at::Tensor& grad_output,
                                                                  const at::Tensor& input, const at::Tensor& mean) {
  constexpr const char* op = "fusedopt::batch_norm_backward_reduce";
  const BnLayout l = bn_layout(input, op);
  const at::Tensor dy = bn_match_layout(grad_output, l, op, "grad_output");
  check_bn_param(mean, l, op, "mean");
  at::Tensor sum_dy = param_empty(l), sum_dy_xmu = param_empty(l);
  FUSEDOPT_CPU_KERNEL(batch_norm_backward_reduce_kernel)(l, dy, mean.contiguous(), sum_dy, sum_dy_xmu);
  return {sum_dy, sum_dy_xmu};
}

at::Tensor batch_norm_backward_elemt_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                         const std::optional<at::Tensor>& weight, const at::Tensor& mean,
                                         const at::Tensor& var, const at::Tensor& sum_dy,
                                         const at::Tensor& sum_dy_xmu, int64_t count, double eps) {
  constexpr const char* op = "fusedopt::batch_norm_backward_elemt";
  const BnLayout l = bn_layout(input, op);
  const at::Tensor dy = bn_match_layout(grad_output, l, op, "grad_output");
  check_bn_param(weight, l, op, "weight");
  check_bn_param(mean, l, op, "mean");
  check_bn_param(var, l, op, "var");
  check_bn_param(sum_dy, l, op, "sum_dy");
  check_bn_param(sum_dy_xmu, l, op, "sum_dy_xmu");
  TORCH_CHECK(count > 0 || l.count() == 0, op, ": count must be positive, got ", count);
  at::Tensor grad_in = bn_empty_like(l);
  const auto w = dense(weight);
  FUSEDOPT_CPU_KERNEL(batch_norm_backward_elemt_kernel)(l, dy, grad_in, mean.contiguous(), var.contiguous(),
                                                        ptr(w), sum_dy.contiguous(), sum_dy_xmu.contiguous(),
                                                        count, eps);
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("batch_norm_stats", &batch_norm_stats_cpu);
  m.impl("batch_norm_elemt", &batch_norm_elemt_cpu);
  m.impl("batch_norm_backward_reduce", &batch_norm_backward_reduce_cpu);
  m.impl("batch_norm_backward_elemt", &batch_norm_backward_elemt_cpu);
}

}  // namespace fusedopt::cpu
