// Argument checks of the clipping ops (fusedopt::total_norm, fusedopt::clip_by_total_norm_), shared by
// their CPU and CUDA entry points.
#pragma once

#include <ATen/core/Tensor.h>

namespace fusedopt {

// Every tensor dense (any memory order), of a supported float dtype, all on one device; norm_type not
// NaN. Raises c10::Error naming the op, argument and index.
void check_total_norm_inputs(at::TensorList tensors, double norm_type);

// The tensors as above, and no two sharing memory (each is scaled in place once).
void check_clip_tensors(at::TensorList tensors);

// check_clip_tensors; total_norm a 1-element float32/float64 tensor on their device.
void check_clip_inputs(at::TensorList tensors, const at::Tensor& total_norm);

// float64 when any tensor is float64, else float32: the dtype norms accumulate and are returned in.
c10::ScalarType norm_result_dtype(at::TensorList tensors);

}  // namespace fusedopt
