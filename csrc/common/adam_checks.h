// Argument checks of fusedopt::adam_, shared by its CPU and CUDA entry points.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "common/tensor_lists.h"

namespace fusedopt {

// Raises, naming the list and index, unless: params/grads/exp_avgs/exp_avg_sqs (and max_exp_avg_sqs
// with amsgrad) run in lockstep (see check_list_entries); state_steps holds one 1-element float32
// tensor per param on the params' device; master_params is empty, or holds one float32 tensor per
// float16/bfloat16 param of the param's shape and layout, and then the states are float32 too.
// `then` (may be empty) runs on each block of entries once its checks passed (run_entry_checks): the
// launchers fill their view of the lists there, in the checks' walk over the tensors.
void check_adam_inputs(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                       at::TensorList state_steps, bool amsgrad, at::TensorList master_params,
                       const std::optional<at::Tensor>& lr_tensor,
                       const std::optional<at::Tensor>& grad_scale,
                       const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then = {});

}  // namespace fusedopt
