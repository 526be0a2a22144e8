// Argument checks and memory-layout choice of the batch_norm_* ops, shared by CPU and CUDA entries.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace fusedopt {

// How a kernel walks an input of shape (N, C, *spatial), S = prod(spatial):
//   channels_last = false: N x C x S with S innermost (contiguous tensors);
//   channels_last = true:  rows = N * S, each row C contiguous values (channels_last(_3d) tensors, and
//                          contiguous (N, C) / S == 1 tensors, where C is innermost too).
struct BnLayout {
  at::Tensor input;  // the input itself, or a contiguous copy when its strides fit neither walk
  int64_t N, C, S;
  bool channels_last;
  int64_t rows() const { return N * S; }
  int64_t count() const { return N * S; }  // values per channel
};

// Checks `input` (op names the op in messages) and picks its layout. Other strided inputs are made
// contiguous here, explicitly: one copy, then the contiguous walk.
BnLayout bn_layout(const at::Tensor& input, const char* op, const char* arg = "input");

// A tensor shaped like `layout.input` (same memory format), for outputs.
at::Tensor bn_empty_like(const BnLayout& layout);

// The dtype of statistics, weights and sums: float32 for float32/float16/bfloat16 inputs, float64 for
// float64 inputs.
at::ScalarType bn_param_dtype(at::ScalarType input_dtype);

// `t` (named `arg`) must be a 1-d tensor of C values of the parameter dtype on the input's device.
void check_bn_param(const at::Tensor& t, const BnLayout& layout, const char* op, const char* arg);
void check_bn_param(const std::optional<at::Tensor>& t, const BnLayout& layout, const char* op,
                    const char* arg);
// `other` (grad_output) must match the input's shape and dtype; returns it in the input's layout.
at::Tensor bn_match_layout(const at::Tensor& other, const BnLayout& layout, const char* op,
                           const char* arg);

}  // namespace fusedopt
