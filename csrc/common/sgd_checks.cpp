#include "common/sgd_checks.h"

#include <array>

#include "common/tensor_lists.h"

namespace fusedopt {

void check_sgd_inputs(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                      double momentum, const std::optional<at::Tensor>& lr_tensor,
                      const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then) {
  constexpr const char* op = "fusedopt.sgd_";
  TORCH_CHECK(momentum == 0 || momentum_buffers.size() == params.size(), op, ": momentum is ",
              momentum, " but momentum_buffers has ", momentum_buffers.size(),
              " tensors; expected one per param");
  const std::array<NamedTensorList, 3> lists{{{"params", params},
                                               {"grads", grads},
                                               {"momentum_buffers", momentum_buffers, /*may_be_empty=*/momentum == 0}}};
  check_lockstep_lists(op, lists, std::nullopt, then);
  if (params.empty()) return;
  const at::Device device = params[0].device();
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_grad_scale(op, grad_scale, device);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

}  // namespace fusedopt
