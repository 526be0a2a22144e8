#include "common/rmsprop_adagrad_checks.h"

#include "common/tensor_lists.h"

namespace fusedopt {

void check_state_steps(const char* op, at::TensorList params, at::TensorList state_steps) {
  TORCH_CHECK(state_steps.size() == params.size(), op, ": state_steps has ", state_steps.size(),
              " tensors but params has ", params.size(), "; expected one step count per param");
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& s = state_steps[i];
    TORCH_CHECK(s.defined(), op, ": state_steps[", i, "] is undefined; expected a tensor");
    TORCH_CHECK(s.layout() == at::kStrided, op, ": state_steps[", i, "] has layout ", s.layout(),
                "; expected a strided float32 tensor of one element");
    TORCH_CHECK(s.scalar_type() == at::kFloat, op, ": state_steps[", i, "] has dtype ",
                s.scalar_type(), "; expected float32");
    TORCH_CHECK(s.numel() == 1, op, ": state_steps[", i, "] has ", s.numel(),
                " elements; expected a 1-element tensor");
    TORCH_CHECK(s.device() == params[i].device(), op, ": state_steps[", i, "] is on ", s.device(),
                " but params[", i, "] is on ", params[i].device(), "; expected the same device");
  }
}

void check_rmsprop_inputs(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                          at::TensorList momentum_buffers, at::TensorList grad_avgs,
                          at::TensorList state_steps, double momentum, bool centered,
                          const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf) {
  constexpr const char* op = "fusedopt.rmsprop_";
  TORCH_CHECK(momentum <= 0 || momentum_buffers.size() == params.size(), op, ": momentum is ",
              momentum, " but momentum_buffers has ", momentum_buffers.size(),
              " tensors; expected one per param");
  TORCH_CHECK(!centered || grad_avgs.size() == params.size(), op, ": centered is true but grad_avgs has ",
              grad_avgs.size(), " tensors; expected one per param");
  check_tensor_lists(op, {{"params", params},
                          {"grads", grads},
                          {"square_avgs", square_avgs},
                          {"momentum_buffers", momentum_buffers, /*may_be_empty=*/momentum <= 0},
                          {"grad_avgs", grad_avgs, /*may_be_empty=*/!centered}});
  check_state_steps(op, params, state_steps);
  if (params.empty()) return;
  const at::Device device = params[0].device();
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_scalar_tensor(op, "grad_scale", grad_scale, device, /*allow_float64=*/true);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

void check_adagrad_inputs(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                          at::TensorList state_steps, const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf) {
  constexpr const char* op = "fusedopt.adagrad_";
  check_tensor_lists(op, {{"params", params}, {"grads", grads}, {"state_sums", state_sums}});
  check_state_steps(op, params, state_steps);
  if (params.empty()) return;
  const at::Device device = params[0].device();
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_scalar_tensor(op, "grad_scale", grad_scale, device, /*allow_float64=*/true);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

}  // namespace fusedopt
