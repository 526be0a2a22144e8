#include "common/batch_norm_checks.h"
#include "common/large_outputs.h"
#include "common/tensor_lists.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

namespace fusedopt {
namespace {

// Per-channel tensors are read as dense arrays.
std::optional<at::Tensor> dense(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}
const at::Tensor* ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? &*t : nullptr; }

}  // namespace

at::ScalarType bn_param_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

BnLayout bn_layout(const at::Tensor& input, const char* op, const char* arg) {
  TORCH_CHECK(input.layout() == at::kStrided, op, ": ", arg, " must be a dense (strided) tensor, got ",
              input.layout());
  TORCH_CHECK(input.dim() >= 2, op, ": ", arg, " must have at least 2 dimensions (N, C, ...), got ",
              input.dim(), "-d input of shape ", input.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              op, ": ", arg, " must be float32, float64, float16 or bfloat16, got ", dtype);
  BnLayout l;
  l.N = input.size(0);
  l.C = input.size(1);
  l.S = 1;
  for (int64_t d = 2; d < input.dim(); ++d) l.S *= input.size(d);
  TORCH_CHECK(l.C > 0, op, ": ", arg, " must have at least one channel (dim 1), got shape ", input.sizes());
  const bool cl = (input.dim() == 4 && input.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
                  (input.dim() == 5 && input.is_contiguous(at::MemoryFormat::ChannelsLast3d));
  if (input.is_contiguous()) {
    l.input = input;
    l.channels_last = l.S == 1;
  } else if (cl) {
    l.input = input;
    l.channels_last = true;
  } else if (input.dim() >= 4 && input.suggest_memory_format() != at::MemoryFormat::Contiguous) {
    // A channels-last input that is not dense (a slice of one): copied in its own format, so the output
    // stays channels-last, as torch's does (it keeps suggest_memory_format()).
    l.input = input.contiguous(input.suggest_memory_format());
    l.channels_last = true;
  } else {
    l.input = input.contiguous();
    l.channels_last = l.S == 1;
  }
  return l;
}

at::Tensor bn_empty_like(const BnLayout& layout) {
  const at::Tensor& x = layout.input;
  if (layout.channels_last && !x.is_contiguous()) {
    return empty_large_output(x, x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
  }
  return empty_large_output(x, at::MemoryFormat::Contiguous);
}

void check_bn_param(const at::Tensor& t, const BnLayout& layout, const char* op, const char* arg) {
  const auto want = bn_param_dtype(layout.input.scalar_type());
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", arg, " must be a dense tensor, got ", t.layout());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == layout.C, op, ": ", arg, " must have shape [", layout.C,
              "] (one value per channel), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == want, op, ": ", arg, " must be ", want, " for a ",
              layout.input.scalar_type(), " input, got ", t.scalar_type());
  TORCH_CHECK(t.device() == layout.input.device(), op, ": ", arg, " must be on the input's device ",
              layout.input.device(), ", got ", t.device());
}

void check_bn_param(const std::optional<at::Tensor>& t, const BnLayout& layout, const char* op,
                    const char* arg) {
  if (t.has_value()) check_bn_param(*t, layout, op, arg);
}

at::Tensor bn_match_layout(const at::Tensor& other, const BnLayout& layout, const char* op,
                           const char* arg) {
  const at::Tensor& x = layout.input;
  TORCH_CHECK(other.layout() == at::kStrided, op, ": ", arg, " must be a dense tensor, got ", other.layout());
  TORCH_CHECK(other.sizes() == x.sizes(), op, ": ", arg, " must have the input's shape ", x.sizes(),
              ", got ", other.sizes());
  TORCH_CHECK(other.scalar_type() == x.scalar_type(), op, ": ", arg, " must have the input's dtype ",
              x.scalar_type(), ", got ", other.scalar_type());
  TORCH_CHECK(other.device() == x.device(), op, ": ", arg, " must be on the input's device ", x.device(),
              ", got ", other.device());
  // The kernels walk both with the input's strides.
  if (other.strides() == x.strides()) return other;
  if (!layout.channels_last || x.is_contiguous()) return other.contiguous();
  return other.contiguous(x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
}

at::Tensor bn_param_empty(const BnLayout& l) {
  return at::empty({l.C}, l.input.options().dtype(bn_param_dtype(l.input.scalar_type())));
}

std::tuple<at::Tensor, at::Tensor> run_batch_norm_stats(const at::Tensor& input, BnStatsLaunch launch) {
  const BnLayout l = bn_layout(input, "fusedopt::batch_norm_stats");
  const c10::DeviceGuard guard(input.device());
  at::Tensor mean = bn_param_empty(l), var = bn_param_empty(l);
  launch(l, mean, var);
  return {mean, var};
}

at::Tensor run_batch_norm_elemt(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                                const at::Tensor& var, double eps, BnElemtLaunch launch) {
  constexpr const char* op = "fusedopt::batch_norm_elemt";
  const BnLayout l = bn_layout(input, op);
  check_bn_param(weight, l, op, "weight");
  check_bn_param(bias, l, op, "bias");
  check_bn_param(mean, l, op, "mean");
  check_bn_param(var, l, op, "var");
  const c10::DeviceGuard guard(input.device());
  at::Tensor out = bn_empty_like(l);
  const auto w = dense(weight), b = dense(bias);
  launch(l, out, mean.contiguous(), var.contiguous(), ptr(w), ptr(b), eps);
  return out;
}

std::tuple<at::Tensor, at::Tensor> run_batch_norm_backward_reduce(const at::Tensor& grad_output,
                                                                  const at::Tensor& input,
                                                                  const at::Tensor& mean,
                                                                  BnBackwardReduceLaunch launch) {
  constexpr const char* op = "fusedopt::batch_norm_backward_reduce";
  const BnLayout l = bn_layout(input, op);
  const at::Tensor dy = bn_match_layout(grad_output, l, op, "grad_output");
  check_bn_param(mean, l, op, "mean");
  const c10::DeviceGuard guard(input.device());
  at::Tensor sum_dy = bn_param_empty(l), sum_dy_xmu = bn_param_empty(l);
  launch(l, dy, mean.contiguous(), sum_dy, sum_dy_xmu);
  return {sum_dy, sum_dy_xmu};
}

at::Tensor run_batch_norm_backward_elemt(const at::Tensor& grad_output, const at::Tensor& input,
                                         const std::optional<at::Tensor>& weight, const at::Tensor& mean,
                                         const at::Tensor& var, const at::Tensor& sum_dy,
                                         const at::Tensor& sum_dy_xmu, int64_t count, double eps,
                                         BnBackwardElemtLaunch launch) {
  constexpr const char* op = "fusedopt::batch_norm_backward_elemt";
  const BnLayout l = bn_layout(input, op);
  const at::Tensor dy = bn_match_layout(grad_output, l, op, "grad_output");
  check_bn_param(weight, l, op, "weight");
  check_bn_param(mean, l, op, "mean");
  check_bn_param(var, l, op, "var");
  check_bn_param(sum_dy, l, op, "sum_dy");
  check_bn_param(sum_dy_xmu, l, op, "sum_dy_xmu");
  TORCH_CHECK(count > 0 || l.count() == 0, op, ": count must be positive, got ", count);
  const c10::DeviceGuard guard(input.device());
  at::Tensor grad_in = bn_empty_like(l);
  const auto w = dense(weight);
  launch(l, dy, grad_in, mean.contiguous(), var.contiguous(), ptr(w), sum_dy.contiguous(),
         sum_dy_xmu.contiguous(), count, eps);
  return grad_in;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_batch_norm_train(const at::Tensor& input,
                                                                    const std::optional<at::Tensor>& weight,
                                                                    const std::optional<at::Tensor>& bias,
                                                                    double eps, BnTrainLaunch launch) {
  constexpr const char* op = "fusedopt::batch_norm_train";
  const BnLayout l = bn_layout(input, op);
  check_bn_param(weight, l, op, "weight");
  check_bn_param(bias, l, op, "bias");
  const c10::DeviceGuard guard(input.device());
  at::Tensor out = bn_empty_like(l);
  at::Tensor mean = bn_param_empty(l), var = bn_param_empty(l);
  const auto w = dense(weight), b = dense(bias);
  launch(l, out, mean, var, ptr(w), ptr(b), eps);
  return {out, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_batch_norm_train_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const at::Tensor& mean, const at::Tensor& var, double eps, BnTrainBackwardLaunch launch) {
  constexpr const char* op = "fusedopt::batch_norm_train_backward";
  const BnLayout l = bn_layout(input, op);
  const at::Tensor dy = bn_match_layout(grad_output, l, op, "grad_output");
  check_bn_param(weight, l, op, "weight");
  check_bn_param(mean, l, op, "mean");
  check_bn_param(var, l, op, "var");
  const c10::DeviceGuard guard(input.device());
  at::Tensor grad_in = bn_empty_like(l);
  at::Tensor sum_dy = bn_param_empty(l), sum_dy_xmu = bn_param_empty(l);
  const auto w = dense(weight);
  launch(l, dy, grad_in, mean.contiguous(), var.contiguous(), ptr(w), sum_dy, sum_dy_xmu, eps);
  return {grad_in, sum_dy, sum_dy_xmu};
}

void run_batch_norm_update_running_stats(const std::optional<at::Tensor>& running_mean,
                                         const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                                         const at::Tensor& var, int64_t count, double momentum,
                                         BnRunningStatsLaunch launch) {
  constexpr const char* op = "fusedopt::batch_norm_update_running_stats_";
  for (const auto& [t, arg] : {std::pair<const at::Tensor&, const char*>{mean, "mean"}, {var, "var"}}) {
    TORCH_CHECK(t.layout() == at::kStrided && t.dim() == 1, op, ": ", arg,
                " must be a dense 1-d tensor (one value per channel), got ", t.sizes());
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", arg,
                " must be float32 or float64, got ", t.scalar_type());
  }
  const int64_t C = mean.size(0);
  TORCH_CHECK(var.size(0) == C && var.scalar_type() == mean.scalar_type() && var.device() == mean.device(), op,
              ": var must be like mean (", C, " values of ", mean.scalar_type(), " on ", mean.device(), "), got ",
              var.sizes(), " of ", var.scalar_type(), " on ", var.device());
  TORCH_CHECK(count >= 0, op, ": count must be >= 0, got ", count);
  for (const auto& [t, arg] : {std::pair<const std::optional<at::Tensor>&, const char*>{running_mean, "running_mean"},
                               {running_var, "running_var"}}) {
    if (!t.has_value()) continue;
    TORCH_CHECK(t->layout() == at::kStrided && t->dim() == 1 && t->size(0) == C, op, ": ", arg,
                " must be a dense 1-d tensor of ", C, " values (one per channel), got ", t->sizes());
    // An expanded buffer: torch takes it and keeps whichever channel's update comes last (its CUDA kernel
    // races), and so would ours; an error instead.
    TORCH_CHECK(C <= 1 || t->stride(0) != 0, op, ": ", arg,
                " must hold one value per channel in memory of its own, got an expanded tensor (stride 0)");
    TORCH_CHECK(is_supported_dtype(t->scalar_type()), op, ": ", arg,
                " must be float32, float64, float16 or bfloat16, got ", t->scalar_type());
    TORCH_CHECK(t->device() == mean.device(), op, ": ", arg, " must be on mean's device ", mean.device(), ", got ",
                t->device());
  }
  if (C == 0 || (!running_mean.has_value() && !running_var.has_value())) return;
  // (Empty buffers may both have no memory: compared only when there is something to update.)
  TORCH_CHECK(!running_mean.has_value() || !running_var.has_value() ||
                  running_mean->const_data_ptr() != running_var->const_data_ptr(),
              op, ": running_mean and running_var must be different tensors");
  const c10::DeviceGuard guard(mean.device());
  if (running_mean.has_value()) {
    at::Tensor running = *running_mean;
    launch(running, mean.contiguous(), /*is_var=*/false, count, momentum);
  }
  if (running_var.has_value()) {
    at::Tensor running = *running_var;
    launch(running, var.contiguous(), /*is_var=*/true, count, momentum);
  }
}

}  // namespace fusedopt
