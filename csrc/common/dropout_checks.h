// Argument checks and host-side helpers of the dropout ops, shared by their CPU and CUDA entry points.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace fusedopt {

// Bytes of the packed mask of `numel` elements in groups of `group_size` (one bit per group).
int64_t dropout_mask_bytes(int64_t numel, int64_t group_size);

// Checks the arguments of dropout / dropout_ (op names the op in messages).
void check_dropout_inputs(const char* op, const at::Tensor& input, double p, int64_t group_size,
                          const std::optional<int64_t>& seed, const std::optional<int64_t>& offset);

void check_dropout_backward_inputs(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                   int64_t group_size);

// Fills the mask for p == 0 (every bit of the numel / group_size groups set, the bits past them zero).
void fill_dropout_mask_all_kept(at::Tensor& mask, int64_t bits);

// 1 / (1 - p) as torch computes it: 1 - p rounded to the math type first (p < 1).
template <typename opmath_t>
opmath_t dropout_scale(double p) {
  return static_cast<opmath_t>(1.0 / static_cast<double>(static_cast<opmath_t>(1.0 - p)));
}

}  // namespace fusedopt
