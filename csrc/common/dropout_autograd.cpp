// Autograd of the dropout ops, in C++: only the packed mask (numel / 8 bytes) is saved, and the gradient
// is dropout_backward with that mask; dropout_backward is linear in grad_output, so its own gradient is
// dropout_backward again (any order of derivatives).
//
// Why C++: dropout sits in every transformer block, and torch's is C++ end to end. The same rules
// written in Python (torch.library.register_autograd, an autograd.Function for the in-place op) cost
// ~35 us per forward+backward on the 2-core Xeon, more than the kernels at small sizes (fwd+bwd of
// 4x64 float32: 53 us against torch's 20 us).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/library.h>

#include "common/dropout_checks.h"
#include "common/forward_ad.h"
#include "common/op_signatures.h"

namespace fusedopt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptInt = std::optional<int64_t>;
namespace sig = op_signatures;

const auto& dropout_op() { return sig::typed_op<sig::kDropoutName, sig::Dropout>(); }
const auto& dropout_inplace_op() { return sig::typed_op<sig::kDropoutInplaceName, sig::DropoutInplace>(); }
const auto& dropout_backward_op() { return sig::typed_op<sig::kDropoutBackwardName, sig::DropoutBackward>(); }

// Whether autograd has anything to record for a call on `t`.
bool records(const at::Tensor& t) {
  return at::GradMode::is_enabled() && t.requires_grad();
}

// output_strides: the layout the mask's bits follow (keep_layout), passed on to dropout_backward.
void save_mask(AutogradContext* ctx, const at::Tensor& mask, double p, int64_t group_size,
               at::OptionalIntArrayRef output_strides) {
  ctx->save_for_backward({mask});
  ctx->saved_data["p"] = p;
  ctx->saved_data["group_size"] = group_size;
  ctx->saved_data["output_strides"] =
      output_strides.has_value() ? c10::IValue(output_strides->vec()) : c10::IValue();
}

// grad_output's gradient through the saved mask; dispatched with autograd, so it is differentiable again.
at::Tensor grad_through_mask(AutogradContext* ctx, const at::Tensor& grad_output) {
  if (!grad_output.defined()) return {};
  const at::Tensor mask = ctx->get_saved_variables()[0];
  const c10::IValue& saved_strides = ctx->saved_data["output_strides"];
  const std::vector<int64_t> strides = saved_strides.isNone() ? std::vector<int64_t>() : saved_strides.toIntVector();
  return dropout_backward_op().call(grad_output, mask, ctx->saved_data["p"].toDouble(),
                                    ctx->saved_data["group_size"].toInt(),
                                    saved_strides.isNone() ? at::OptionalIntArrayRef() : at::OptionalIntArrayRef(strides));
}

struct Dropout : torch::autograd::Function<Dropout> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, double p, int64_t group_size,
                               OptInt seed, OptInt offset, bool keep_layout) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, mask] = dropout_op().call(input, p, group_size, seed, offset, keep_layout);
    save_mask(ctx, mask, p, group_size, keep_layout ? at::OptionalIntArrayRef(output.strides()) : std::nullopt);
    ctx->mark_non_differentiable({mask});
    ctx->set_materialize_grads(false);  // no zero tensor made for the mask's grad, which is never read
    return {output, mask};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grad_through_mask(ctx, grads[0]), {}, {}, {}, {}, {}};
  }
};

// Returns only input (a Function that modifies a view in place may have one output); the mask goes out
// through `mask_out`.
struct DropoutInplace : torch::autograd::Function<DropoutInplace> {
  static variable_list forward(AutogradContext* ctx, at::Tensor input, double p, int64_t group_size, OptInt seed,
                               OptInt offset, bool keep_layout, at::Tensor* mask_out) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    *mask_out = dropout_inplace_op().call(input, p, group_size, seed, offset, keep_layout);
    // The mask follows the memory order input was computed in (dropout_layout_strides).
    const std::vector<int64_t> strides = keep_layout ? dropout_layout_strides(input) : std::vector<int64_t>();
    save_mask(ctx, *mask_out, p, group_size, keep_layout ? at::OptionalIntArrayRef(strides) : std::nullopt);
    ctx->mark_dirty({input});
    return {input};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grad_through_mask(ctx, grads[0]), {}, {}, {}, {}, {}, {}};
  }
};

struct DropoutBackward : torch::autograd::Function<DropoutBackward> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& mask,
                               double p, int64_t group_size, at::OptionalIntArrayRef output_strides) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    save_mask(ctx, mask, p, group_size, output_strides);
    return {dropout_backward_op().call(grad_output, mask, p, group_size, output_strides)};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grad_through_mask(ctx, grads[0]), {}, {}, {}, {}};
  }
};

// The Autograd-key kernels. Nothing to record: straight to the kernels (the in-place op through
// ADInplaceOrView, which counts the write in input's version, as torch's in-place ops do).
std::tuple<at::Tensor, at::Tensor> dropout_autograd(const at::Tensor& input, double p, int64_t group_size,
                                                    OptInt seed, OptInt offset, bool keep_layout) {
  check_no_tangents("dropout", input);
  if (!records(input)) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return dropout_op().call(input, p, group_size, seed, offset, keep_layout);
  }
  variable_list out = Dropout::apply(input, p, group_size, seed, offset, keep_layout);
  return {std::move(out[0]), std::move(out[1])};
}

at::Tensor dropout_inplace_autograd(at::Tensor& input, double p, int64_t group_size, OptInt seed,
                                    OptInt offset, bool keep_layout) {
  check_no_tangents("dropout_", input);
  if (!records(input)) {
    const at::AutoDispatchBelowAutograd below_autograd;
    return dropout_inplace_op().call(input, p, group_size, seed, offset, keep_layout);
  }
  // torch's in-place checks (a leaf that requires grad, a view of one, a view made in no-grad mode or by
  // a multi-output function) before the kernel writes: the Function's own come after forward().
  torch::autograd::check_inplace(input, /*requires_grad=*/true);
  at::Tensor mask;
  DropoutInplace::apply(input, p, group_size, seed, offset, keep_layout, &mask);
  return mask;
}

at::Tensor dropout_backward_autograd(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                     int64_t group_size, at::OptionalIntArrayRef output_strides) {
  check_no_tangents("dropout_backward", grad_output);
  if (!records(grad_output)) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return dropout_backward_op().call(grad_output, mask, p, group_size, output_strides);
  }
  return DropoutBackward::apply(grad_output, mask, p, group_size, output_strides)[0];
}

// The version count of an in-place dropout's input, as torch's generated ADInplaceOrView kernels keep it.
at::Tensor dropout_inplace_count_version(c10::DispatchKeySet keys, at::Tensor& input, double p,
                                         int64_t group_size, OptInt seed, OptInt offset, bool keep_layout) {
  at::Tensor mask;
  {
    const at::AutoDispatchBelowADInplaceOrView below;
    mask = dropout_inplace_op().redispatch(keys & c10::after_ADInplaceOrView_keyset, input, p, group_size,
                                           seed, offset, keep_layout);
  }
  torch::autograd::impl::bump_version(input);
  return mask;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, Autograd, m) {
  m.impl("dropout", &dropout_autograd);
  m.impl("dropout_", &dropout_inplace_autograd);
  m.impl("dropout_backward", &dropout_backward_autograd);
}

TORCH_LIBRARY_IMPL(fusedopt, ADInplaceOrView, m) {
  m.impl("dropout_", &dropout_inplace_count_version);
}

}  // namespace fusedopt
