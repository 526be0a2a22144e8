// Argument checks, host-side helpers and the shared part of the entries of the dropout ops: the CPU and
// CUDA entries are run_dropout*(..., draw / apply) with their device's part.
#pragma once

#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>

#include "fusedopt/dropout.h"

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

// The device part of dropout / dropout_ for 0 < p < 1 (p == 0 and p == 1 are handled by the shared entry,
// which draws nothing for them): draws the packed mask (already allocated, dropout_mask_bytes(x.numel(),
// groups.size) bytes) and writes output (x's strides; it may be x) from dense x, walking both in memory
// order, each element with the bit groups.of(its position) (fusedopt/dropout.h).
using DropoutDraw = void (*)(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p,
                             DropoutGroups groups, const std::optional<int64_t>& seed,
                             const std::optional<int64_t>& offset);
// The device part of dropout_backward: output = input * keep(groups.of(k)) / (1 - p) for the packed
// mask, input dense and output of its strides, both walked in memory order.
using DropoutApply = void (*)(const at::Tensor& input, const at::Tensor& output, const at::Tensor& mask,
                              DropoutGroups groups, double p);

// The entries. Each checks its arguments, makes the input's device current for the rest of the call
// (c10::DeviceGuard: CUDA's device guard, a no-op on CPU), allocates the outputs, calls the device's part
// and returns the outputs.
//
// keep_layout false: the input is made contiguous, the output is contiguous and mask bit i belongs to
// group i / group_size of the elements in row-major order; dropout_ runs a non-contiguous input through
// a contiguous copy. keep_layout true (what fusedopt.nn uses, as torch's output keeps the input's
// layout): the output has the input's strides (those of torch's empty_like when the input has gaps or
// overlaps), and the input is read where it is. Element-wise masks (group_size 1) then follow the
// output's memory order, so their backward needs the output's strides (dropout_backward's
// output_strides); channel-wise masks stay in group order, so they are the same for every layout.
std::tuple<at::Tensor, at::Tensor> run_dropout(const at::Tensor& input, double p, int64_t group_size,
                                               const std::optional<int64_t>& seed,
                                               const std::optional<int64_t>& offset, bool keep_layout,
                                               DropoutDraw draw);
at::Tensor run_dropout_(at::Tensor& input, double p, int64_t group_size, const std::optional<int64_t>& seed,
                        const std::optional<int64_t>& offset, bool keep_layout, DropoutDraw draw);
// output_strides: those of the forward's output under keep_layout (grad_input gets them, and a
// grad_output laid out otherwise is copied into them first); none: row-major mask, contiguous result.
at::Tensor run_dropout_backward(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                int64_t group_size, at::OptionalIntArrayRef output_strides, DropoutApply apply);

// The strides of the layout dropout(keep_layout=True) gives `input`'s output and dropout_ computes
// `input` in: input's own when it is dense and non-overlapping, else the dense ones torch's empty_like
// infers from them.
std::vector<int64_t> dropout_layout_strides(const at::Tensor& input);

// 1 / (1 - p) as torch computes it: 1 - p rounded to the math type first (p < 1).
template <typename opmath_t>
opmath_t dropout_scale(double p) {
  return static_cast<opmath_t>(1.0 / static_cast<double>(static_cast<opmath_t>(1.0 - p)));
}

}  // namespace fusedopt
