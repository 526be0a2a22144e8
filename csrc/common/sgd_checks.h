// Argument checks of fusedopt::sgd_, shared by its CPU and CUDA entry points.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace fusedopt {

void check_sgd_inputs(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                      double momentum, const std::optional<at::Tensor>& lr_tensor,
                      const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf);

}  // namespace fusedopt
