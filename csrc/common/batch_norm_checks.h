// Argument checks, memory-layout choice and the shared part of the entries of the batch_norm_* ops:
// the CPU and CUDA entries are run_batch_norm_*(..., launch) with their device's launch.
#pragma once

#include <optional>
#include <tuple>
#include <type_traits>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>

namespace fusedopt {

// How a kernel walks an input of shape (N, C, *spatial), S = prod(spatial):
//   channels_last = false: N x C x S with S innermost (contiguous tensors);
//   channels_last = true:  rows = N * S, each row C contiguous values (channels_last(_3d) tensors, and
//                          contiguous (N, C) / S == 1 tensors, where C is innermost too).
struct BnLayout {
  at::Tensor input;  // the input itself, or a contiguous copy when its strides fit neither walk
  int64_t N, C, S;
  bool channels_last;
  int64_t rows() const { return N * S; }
  int64_t count() const { return N * S; }  // values per channel
};

// Checks `input` (op names the op in messages) and picks its layout. Other strided inputs are made
// contiguous here, explicitly: one copy, then the contiguous walk.
BnLayout bn_layout(const at::Tensor& input, const char* op, const char* arg = "input");

// A tensor shaped like `layout.input` (same memory format), for outputs.
at::Tensor bn_empty_like(const BnLayout& layout);

// The dtype of statistics, weights and sums: float32 for float32/float16/bfloat16 inputs, float64 for
// float64 inputs.
at::ScalarType bn_param_dtype(at::ScalarType input_dtype);

// `t` (named `arg`) must be a 1-d tensor of C values of the parameter dtype on the input's device.
void check_bn_param(const at::Tensor& t, const BnLayout& layout, const char* op, const char* arg);
void check_bn_param(const std::optional<at::Tensor>& t, const BnLayout& layout, const char* op,
                    const char* arg);
// `other` (grad_output) must match the input's shape and dtype; returns it in the input's layout.
at::Tensor bn_match_layout(const at::Tensor& other, const BnLayout& layout, const char* op,
                           const char* arg);

// A 1-d tensor of C values of the parameter dtype on the input's device, for per-channel outputs.
at::Tensor bn_param_empty(const BnLayout& layout);

// The entries. Each checks its arguments (messages name the op, in the same order on every device),
// makes the input's device current for the rest of the call (c10::DeviceGuard: CUDA's device guard, a
// no-op on CPU), allocates the outputs (bn_empty_like, bn_param_empty), passes per-channel tensors as
// contiguous tensors (absent optional ones as nullptr) and grad_output in the input's layout
// (bn_match_layout) to `launch`, the device's part, and returns the outputs. The launch signatures are
// those of the CPU kernels (csrc/cpu/kernels/batch_norm_kernels.h).
using BnStatsLaunch = void (*)(const BnLayout& l, at::Tensor& mean, at::Tensor& var);
using BnElemtLaunch = void (*)(const BnLayout& l, at::Tensor& out, const at::Tensor& mean,
                               const at::Tensor& var, const at::Tensor* weight, const at::Tensor* bias,
                               double eps);
using BnBackwardReduceLaunch = void (*)(const BnLayout& l, const at::Tensor& grad_out,
                                        const at::Tensor& mean, at::Tensor& sum_dy, at::Tensor& sum_dy_xmu);
using BnBackwardElemtLaunch = void (*)(const BnLayout& l, const at::Tensor& grad_out, at::Tensor& grad_in,
                                       const at::Tensor& mean, const at::Tensor& var,
                                       const at::Tensor* weight, const at::Tensor& sum_dy,
                                       const at::Tensor& sum_dy_xmu, int64_t count, double eps);

// The one-process training ops: forward = stats then elemt, backward = reduce then elemt with
// count = values per channel, each in one launch (CPU fuses them per channel).
using BnTrainLaunch = void (*)(const BnLayout& l, at::Tensor& out, at::Tensor& mean, at::Tensor& var,
                               const at::Tensor* weight, const at::Tensor* bias, double eps);
using BnTrainBackwardLaunch = void (*)(const BnLayout& l, const at::Tensor& grad_out, at::Tensor& grad_in,
                                       const at::Tensor& mean, const at::Tensor& var,
                                       const at::Tensor* weight, at::Tensor& sum_dy, at::Tensor& sum_dy_xmu,
                                       double eps);

std::tuple<at::Tensor, at::Tensor> run_batch_norm_stats(const at::Tensor& input, BnStatsLaunch launch);
at::Tensor run_batch_norm_elemt(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& mean,
                                const at::Tensor& var, double eps, BnElemtLaunch launch);
std::tuple<at::Tensor, at::Tensor> run_batch_norm_backward_reduce(const at::Tensor& grad_output,
                                                                  const at::Tensor& input,
                                                                  const at::Tensor& mean,
                                                                  BnBackwardReduceLaunch launch);
at::Tensor run_batch_norm_backward_elemt(const at::Tensor& grad_output, const at::Tensor& input,
                                         const std::optional<at::Tensor>& weight, const at::Tensor& mean,
                                         const at::Tensor& var, const at::Tensor& sum_dy,
                                         const at::Tensor& sum_dy_xmu, int64_t count, double eps,
                                         BnBackwardElemtLaunch launch);

std::tuple<at::Tensor, at::Tensor, at::Tensor> run_batch_norm_train(const at::Tensor& input,
                                                                    const std::optional<at::Tensor>& weight,
                                                                    const std::optional<at::Tensor>& bias,
                                                                    double eps, BnTrainLaunch launch);
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_batch_norm_train_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const at::Tensor& mean, const at::Tensor& var, double eps, BnTrainBackwardLaunch launch);

// The running-statistics update (fusedopt::batch_norm_update_running_stats_): checks everything, then
// calls `launch` once per present buffer with its batch statistic (contiguous mean or var; is_var: the
// unbiased variance over `count` values enters the rule).
using BnRunningStatsLaunch = void (*)(at::Tensor& running, const at::Tensor& batch, bool is_var, int64_t count,
                                      double momentum);
// Calls fn(TypeTag<acc_t>{}, TypeTag<scalar_t>{}, TypeTag<stat_t>{}) for a running buffer of dtype
// `running` (scalar_t) updated from statistics of dtype `batch` (stat_t, float32 or float64): the rule
// runs in acc_t, float64 when either is float64, else float32. The CPU and CUDA launches share it.
template <typename T>
struct TypeTag {
  using type = T;
};
template <typename Fn>
void dispatch_running_update(at::ScalarType running, at::ScalarType batch, const Fn& fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, running, "fusedopt.batch_norm_update_running_stats_", [&] {
    if (batch == at::kDouble) {
      fn(TypeTag<double>{}, TypeTag<scalar_t>{}, TypeTag<double>{});
    } else if constexpr (std::is_same_v<scalar_t, double>) {
      fn(TypeTag<double>{}, TypeTag<scalar_t>{}, TypeTag<float>{});
    } else {
      fn(TypeTag<float>{}, TypeTag<scalar_t>{}, TypeTag<float>{});
    }
  });
}
void run_batch_norm_update_running_stats(const std::optional<at::Tensor>& running_mean,
                                         const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                                         const at::Tensor& var, int64_t count, double momentum,
                                         BnRunningStatsLaunch launch);

}  // namespace fusedopt
