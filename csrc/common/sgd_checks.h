// Argument checks of fusedopt::sgd_, shared by its CPU and CUDA entry points.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "common/tensor_lists.h"

namespace fusedopt {

// Raises, naming the list and index, unless the lists run in lockstep (check_list_entries).
// `then`: as in check_adam_inputs.

void check_sgd_inputs(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                      double momentum, const std::optional<at::Tensor>& lr_tensor,
                      const std::optional<at::Tensor>& grad_scale,
                      const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then = {});

}  // namespace fusedopt
