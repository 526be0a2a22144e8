#include "common/adam_checks.h"

#include "common/tensor_lists.h"

namespace fusedopt {

void check_adam_inputs(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                       at::TensorList state_steps, bool amsgrad, at::TensorList master_params,
                       const std::optional<at::Tensor>& lr_tensor,
                       const std::optional<at::Tensor>& grad_scale,
                       const std::optional<at::Tensor>& found_inf) {
  constexpr const char* op = "fusedopt.adam_";
  const size_t n = params.size();
  TORCH_CHECK(!amsgrad || max_exp_avg_sqs.size() == n, op, ": amsgrad is set but max_exp_avg_sqs has ",
              max_exp_avg_sqs.size(), " tensors; expected one per param");
  TORCH_CHECK(amsgrad || max_exp_avg_sqs.empty(), op, ": amsgrad is not set but max_exp_avg_sqs has ",
              max_exp_avg_sqs.size(), " tensors; expected none");
  if (master_params.empty()) {
    check_tensor_lists(op, {{"params", params},
                            {"grads", grads},
                            {"exp_avgs", exp_avgs},
                            {"exp_avg_sqs", exp_avg_sqs},
                            {"max_exp_avg_sqs", max_exp_avg_sqs, /*may_be_empty=*/!amsgrad}});
  } else {
    // The float32 masters lead the states; params and grads are the half-precision copies.
    TORCH_CHECK(master_params.size() == n, op, ": master_params has ", master_params.size(),
                " tensors but params has ", n, "; expected none or one per param");
    check_tensor_lists(op, {{"params", params}, {"grads", grads}});
    check_tensor_lists(op, {{"master_params", master_params},
                            {"exp_avgs", exp_avgs},
                            {"exp_avg_sqs", exp_avg_sqs},
                            {"max_exp_avg_sqs", max_exp_avg_sqs, /*may_be_empty=*/!amsgrad}});
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor& p = params[i];
      const at::Tensor& m = master_params[i];
      TORCH_CHECK(p.scalar_type() == at::kHalf || p.scalar_type() == at::kBFloat16, op, ": params[", i,
                  "] has dtype ", p.scalar_type(),
                  "; with master_params, expected float16 or bfloat16 params");
      TORCH_CHECK(m.scalar_type() == at::kFloat, op, ": master_params[", i, "] has dtype ",
                  m.scalar_type(), "; expected float32");
      TORCH_CHECK(m.device() == p.device(), op, ": master_params[", i, "] is on ", m.device(),
                  " but params[", i, "] is on ", p.device(), "; expected the same device");
      TORCH_CHECK(m.sizes() == p.sizes(), op, ": master_params[", i, "] has shape ", m.sizes(),
                  " but params[", i, "] has shape ", p.sizes(), "; expected the same shape");
      TORCH_CHECK(same_memory_order(m, p), op, ": master_params[", i, "] has strides ", m.strides(),
                  " but params[", i, "] has strides ", p.strides(), "; expected the same memory layout");
    }
  }
  check_state_steps(op, params, state_steps);
  if (n == 0) return;
  const at::Device device = params[0].device();
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_scalar_tensor(op, "grad_scale", grad_scale, device, /*allow_float64=*/true);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

}  // namespace fusedopt
