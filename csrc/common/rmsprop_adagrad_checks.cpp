#include "common/rmsprop_adagrad_checks.h"

#include <array>

#include "common/tensor_lists.h"

namespace fusedopt {

void check_rmsprop_inputs(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                          at::TensorList momentum_buffers, at::TensorList grad_avgs,
                          at::TensorList state_steps, double momentum, bool centered,
                          const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then) {
  constexpr const char* op = "fusedopt.rmsprop_";
  TORCH_CHECK(momentum <= 0 || momentum_buffers.size() == params.size(), op, ": momentum is ",
              momentum, " but momentum_buffers has ", momentum_buffers.size(),
              " tensors; expected one per param");
  TORCH_CHECK(!centered || grad_avgs.size() == params.size(), op, ": centered is true but grad_avgs has ",
              grad_avgs.size(), " tensors; expected one per param");
  const std::array<NamedTensorList, 5> lists{{{"params", params},
                                               {"grads", grads},
                                               {"square_avgs", square_avgs},
                                               {"momentum_buffers", momentum_buffers, /*may_be_empty=*/momentum <= 0},
                                               {"grad_avgs", grad_avgs, /*may_be_empty=*/!centered}}};
  check_lockstep_lists(op, lists, state_steps, then);
  if (params.empty()) return;
  const at::Device device = params[0].device();
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_grad_scale(op, grad_scale, device);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

void check_adagrad_inputs(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                          at::TensorList state_steps, const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then) {
  constexpr const char* op = "fusedopt.adagrad_";
  const std::array<NamedTensorList, 3> lists{{{"params", params}, {"grads", grads}, {"state_sums", state_sums}}};
  check_lockstep_lists(op, lists, state_steps, then);
  if (params.empty()) return;
  const at::Device device = params[0].device();
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_grad_scale(op, grad_scale, device);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

}  // namespace fusedopt
