// Autograd of the one-process batch norm ops, in C++: batch_norm_train (training: batch statistics, then
// normalise) and batch_norm_elemt (eval: fixed statistics), each saving its input, weight and the
// statistics; plus a pass-through for the running-statistics update, which records nothing.
//
// Why C++: torch's batch norm is C++ end to end, and the same rules as autograd.Functions in Python cost
// ~30 us more per layer forward+backward, more than the kernels at small sizes. The backward runs our
// kernels, which autograd cannot follow; when the backward is itself recorded (create_graph=True: a
// gradient penalty, MAML's second-order step), it runs through torch's own batch norm instead, so its
// results are differentiable to any order (torch_backward below).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/autograd.h>
#include <ATen/ops/batch_norm.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/library.h>

#include "common/forward_ad.h"
#include "common/op_signatures.h"

namespace fusedopt {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace sig = op_signatures;

const auto& train_op() { return sig::typed_op<sig::kBatchNormTrainName, sig::BatchNormTrain>(); }
const auto& train_backward_op() {
  return sig::typed_op<sig::kBatchNormTrainBackwardName, sig::BatchNormTrainBackward>();
}
const auto& elemt_op() { return sig::typed_op<sig::kBatchNormElemtName, sig::BatchNormElemt>(); }
const auto& backward_reduce_op() {
  return sig::typed_op<sig::kBatchNormBackwardReduceName, sig::BatchNormBackwardReduce>();
}
const auto& update_running_stats_op() {
  return sig::typed_op<sig::kBatchNormUpdateRunningStatsName, sig::BatchNormUpdateRunningStats>();
}

std::optional<Tensor> present(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

// Whether an optional tensor is an input of the autograd node (as torch::autograd::Function counts them).
bool given(const std::optional<Tensor>& t) { return t.has_value() && t->defined(); }

// Whether autograd has anything to record for a call on these.
bool records(const Tensor& input, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias) {
  const auto requires_grad = [](const std::optional<Tensor>& t) { return given(t) && t->requires_grad(); };
  return at::GradMode::is_enabled() && (input.requires_grad() || requires_grad(weight) || requires_grad(bias));
}

// What both Functions keep for backward: input, weight (undefined when absent), the statistics, eps, and
// which of weight and bias autograd wants grads for. Absent ones (nullopt) are not inputs of the node,
// so the edge of bias comes right after input's when there is no weight.
struct ParamGrads {
  bool weight = false, bias = false;
};
struct Saved {
  Tensor input, weight, mean, var;
  double eps;
  ParamGrads wanted;

  static void save(AutogradContext* ctx, const Tensor& input, const std::optional<Tensor>& weight,
                   const std::optional<Tensor>& bias, const Tensor& mean, const Tensor& var, double eps) {
    ctx->save_for_backward({input, weight.value_or(Tensor()), mean, var});
    ctx->saved_data["has_weight"] = given(weight);
    ctx->saved_data["has_bias"] = given(bias);
    ctx->saved_data["eps"] = eps;
  }
  static Saved load(AutogradContext* ctx) {
    variable_list saved = ctx->get_saved_variables();
    const bool has_weight = ctx->saved_data["has_weight"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const ParamGrads wanted{has_weight && ctx->needs_input_grad(1),
                            has_bias && ctx->needs_input_grad(has_weight ? 2 : 1)};
    return {std::move(saved[0]), std::move(saved[1]), std::move(saved[2]), std::move(saved[3]),
            ctx->saved_data["eps"].toDouble(), wanted};
  }
};

// The grads of weight and bias from the two per-channel sums, where autograd wants them.
std::pair<Tensor, Tensor> grads_of_params(const ParamGrads& wanted, const Tensor& sum_dy,
                                          const Tensor& sum_dy_xmu, const Tensor& var, double eps) {
  return {wanted.weight ? sum_dy_xmu.mul(var.add(eps).rsqrt()) : Tensor(), wanted.bias ? sum_dy : Tensor()};
}

// Whether this backward is itself being recorded: create_graph=True, and its results depend on something
// that requires grad (grad_output, or the saved input or weight: the batch statistics and the scale
// make the input's grad a function of both even where grad_output is a constant).
bool backward_recorded(const Tensor& grad_output, const Saved& s) {
  return at::GradMode::is_enabled() && (grad_output.requires_grad() || s.input.requires_grad() ||
                                        (s.weight.defined() && s.weight.requires_grad()));
}

// The backward through torch's batch norm, recomputed from the saved input with autograd on and
// differentiated with create_graph: differentiable to any order by torch's own formulas (torch's double
// backward of batch norm). Only taken when the backward is recorded (backward_recorded), so every first
// order backward still runs our kernels. Training: batch statistics (recomputed by torch); evaluation:
// the saved running statistics, which get no gradient.
variable_list torch_backward(const Saved& s, const Tensor& grad_output, bool training, bool input_wanted) {
  const at::AutoGradMode grad_mode(true);
  Tensor grad_input, grad_weight, grad_bias;
  std::vector<Tensor> wrt;
  if (input_wanted) wrt.push_back(s.input);
  if (s.wanted.weight) wrt.push_back(s.weight);
  if (!wrt.empty()) {
    const Tensor out = at::batch_norm(s.input, present(s.weight), std::nullopt,
                                      training ? std::nullopt : present(s.mean), training ? std::nullopt : present(s.var),
                                      training, 0.0, s.eps, /*cudnn_enabled=*/true);
    variable_list grads = torch::autograd::grad({out}, wrt, {grad_output}, /*retain_graph=*/true,
                                                /*create_graph=*/true, /*allow_unused=*/true);
    size_t next = 0;
    if (input_wanted) grad_input = grads[next++];
    if (s.wanted.weight) grad_weight = grads[next++];
  }
  if (s.wanted.bias) {
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < grad_output.dim(); ++d) dims.push_back(d);
    grad_bias = grad_output.sum(dims);
  }
  return {grad_input, grad_weight, grad_bias};
}

// Our kernels, not recorded.
template <class Compute>
variable_list unrecorded(Compute compute) {
  const at::AutoGradMode no_grad(false);
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return compute();
}

struct BatchNormTrain : torch::autograd::Function<BatchNormTrain> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const std::optional<Tensor>& weight,
                               const std::optional<Tensor>& bias, double eps) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [out, mean, var] = train_op().call(input, weight, bias, eps);
    Saved::save(ctx, input, weight, bias, mean, var, eps);
    ctx->mark_non_differentiable({mean, var});
    // No zero tensors made for the grads of mean and var, which backward never reads.
    ctx->set_materialize_grads(false);
    return {out, mean, var};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
    const Saved s = Saved::load(ctx);
    if (backward_recorded(grads[0], s)) {
      variable_list g = torch_backward(s, grads[0], /*training=*/true, ctx->needs_input_grad(0));
      return {g[0], g[1], g[2], Tensor()};
    }
    return unrecorded([&]() -> variable_list {
      Tensor grad_input, sum_dy, sum_dy_xmu;
      if (ctx->needs_input_grad(0)) {
        std::tie(grad_input, sum_dy, sum_dy_xmu) =
            train_backward_op().call(grads[0], s.input, present(s.weight), s.mean, s.var, s.eps);
      } else {
        std::tie(sum_dy, sum_dy_xmu) = backward_reduce_op().call(grads[0], s.input, s.mean);
      }
      auto [grad_weight, grad_bias] = grads_of_params(s.wanted, sum_dy, sum_dy_xmu, s.var, s.eps);
      return {grad_input, grad_weight, grad_bias, Tensor()};
    });
  }
};

struct BatchNormEval : torch::autograd::Function<BatchNormEval> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const std::optional<Tensor>& weight,
                               const std::optional<Tensor>& bias, const Tensor& mean, const Tensor& var, double eps) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    Saved::save(ctx, input, weight, bias, mean, var, eps);
    return {elemt_op().call(input, weight, bias, mean, var, eps)};
  }
  // The statistics get no gradient (they are running buffers, as in torch's batch norm).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = Saved::load(ctx);
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    if (backward_recorded(grads[0], s)) {
      variable_list g = torch_backward(s, grads[0], /*training=*/false, ctx->needs_input_grad(0));
      return {g[0], g[1], g[2], Tensor(), Tensor(), Tensor()};
    }
    return unrecorded([&]() -> variable_list {
      Tensor grad_input, grad_weight, grad_bias;
      if (ctx->needs_input_grad(0)) {
        // d/dx = weight * invstd: the forward map with mean 0 and no bias, applied to grad_out.
        grad_input = elemt_op().call(grads[0], present(s.weight), std::nullopt, at::zeros_like(s.mean), s.var, s.eps);
      }
      if (s.wanted.weight || s.wanted.bias) {
        auto [sum_dy, sum_dy_xmu] = backward_reduce_op().call(grads[0], s.input, s.mean);
        std::tie(grad_weight, grad_bias) = grads_of_params(s.wanted, sum_dy, sum_dy_xmu, s.var, s.eps);
      }
      return {grad_input, grad_weight, grad_bias, Tensor(), Tensor(), Tensor()};
    });
  }
};

sig::Tensor3 train_autograd(const Tensor& input, const std::optional<Tensor>& weight,
                            const std::optional<Tensor>& bias, double eps) {
  check_no_tangents("batch_norm_train", input, weight, bias);
  if (!records(input, weight, bias)) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return train_op().call(input, weight, bias, eps);
  }
  variable_list out = BatchNormTrain::apply(input, weight, bias, eps);
  return {std::move(out[0]), std::move(out[1]), std::move(out[2])};
}

Tensor elemt_autograd(const Tensor& input, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                      const Tensor& mean, const Tensor& var, double eps) {
  check_no_tangents("batch_norm_elemt", input, weight, bias, mean, var);
  // As torch's batch norm: running statistics are never differentiated, so one that requires grad is refused.
  TORCH_CHECK(!at::GradMode::is_enabled() || !(mean.requires_grad() || var.requires_grad()),
              "fusedopt::batch_norm_elemt: mean and var are not differentiable (running statistics), but ",
              mean.requires_grad() ? "mean" : "var", " requires grad; detach it");
  if (!records(input, weight, bias)) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return elemt_op().call(input, weight, bias, mean, var, eps);
  }
  return BatchNormEval::apply(input, weight, bias, mean, var, eps)[0];
}

// Running statistics are buffers: their update is never recorded (as in torch's batch norm), so it skips
// torch's boxed autograd fallback, which would look at every argument on every training forward.
void update_running_stats_below_autograd(c10::DispatchKeySet keys, const std::optional<Tensor>& running_mean,
                                         const std::optional<Tensor>& running_var, const Tensor& mean,
                                         const Tensor& var, int64_t count, double momentum) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  update_running_stats_op().redispatch(keys & c10::after_ADInplaceOrView_keyset, running_mean, running_var, mean,
                                       var, count, momentum);
}

}  // namespace

// The Autograd kernel of the pieces with no derivative (statistics and the backward's reductions, which
// SyncBatchNorm and the backward above call below autograd): with grad mode on and an input that
// requires grad they raise, where torch's autograd fallback would only warn and return outputs whose
// gradients never reach the inputs.
void not_differentiable(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  if (at::GradMode::is_enabled()) {
    const auto& args = op.schema().arguments();
    const size_t first = stack->size() - args.size();
    for (size_t i = 0; i < args.size(); ++i) {
      const c10::IValue& arg = (*stack)[first + i];
      TORCH_CHECK(!(arg.isTensor() && arg.toTensor().requires_grad()), op.schema().name(), ": ", args[i].name(),
                  " requires grad, but this op has no derivative; use fusedopt.nn.functional.batch_norm "
                  "(differentiable) or call it under torch.no_grad()");
    }
  }
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
}

TORCH_LIBRARY_IMPL(fusedopt, Autograd, m) {
  for (const char* name : {"batch_norm_stats", "batch_norm_backward_reduce", "batch_norm_backward_elemt",
                           "batch_norm_train_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&not_differentiable>());
  }
  m.impl("batch_norm_train", &train_autograd);
  m.impl("batch_norm_elemt", &elemt_autograd);
  m.impl("batch_norm_update_running_stats_", &update_running_stats_below_autograd);
}

}  // namespace fusedopt
