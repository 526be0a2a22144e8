// Argument checks of fusedopt::rmsprop_ and fusedopt::adagrad_, shared by their CPU and CUDA entry points.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace fusedopt {

void check_rmsprop_inputs(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                          at::TensorList momentum_buffers, at::TensorList grad_avgs,
                          at::TensorList state_steps, double momentum, bool centered,
                          const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf);

void check_adagrad_inputs(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                          at::TensorList state_steps, const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf);

}  // namespace fusedopt
