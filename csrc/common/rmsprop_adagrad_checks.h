// Argument checks of fusedopt::rmsprop_ and fusedopt::adagrad_, shared by their CPU and CUDA entry points.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "common/tensor_lists.h"

namespace fusedopt {

// Raise, naming the list and index, unless the lists run in lockstep (check_list_entries) and
// state_steps holds one 1-element float32 tensor per param. `then`: as in check_adam_inputs.

void check_rmsprop_inputs(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                          at::TensorList momentum_buffers, at::TensorList grad_avgs,
                          at::TensorList state_steps, double momentum, bool centered,
                          const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then = {});

void check_adagrad_inputs(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                          at::TensorList state_steps, const std::optional<at::Tensor>& lr_tensor,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then = {});

}  // namespace fusedopt
