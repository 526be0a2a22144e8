// Argument checks, host-side helpers and the shared part of the entries of the dropout ops: the CPU and
// CUDA entries are run_dropout*(..., draw / apply) with their device's part.
#pragma once

#include <optional>
#include <tuple>

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

// The device part of dropout / dropout_ for 0 < p < 1 (p == 0 and p == 1 are handled by the shared entry,
// which draws nothing for them): writes output (contiguous; it may be x) and the packed mask (already
// allocated, dropout_mask_bytes(x.numel(), group_size) bytes) from contiguous x.
using DropoutDraw = void (*)(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p,
                             int64_t group_size, const std::optional<int64_t>& seed,
                             const std::optional<int64_t>& offset);
// The device part of dropout_backward: output = input * keep(i / group_size) / (1 - p) for the packed
// mask; input and output contiguous.
using DropoutApply = void (*)(const at::Tensor& input, const at::Tensor& output, const at::Tensor& mask,
                              int64_t group_size, double p);

// The entries. Each checks its arguments, makes the input's device current for the rest of the call
// (c10::DeviceGuard: CUDA's device guard, a no-op on CPU), makes the input contiguous, allocates the
// outputs, calls the device's part and returns the outputs. dropout_ runs a strided input through a
// contiguous copy and copies the result back.
std::tuple<at::Tensor, at::Tensor> run_dropout(const at::Tensor& input, double p, int64_t group_size,
                                               const std::optional<int64_t>& seed,
                                               const std::optional<int64_t>& offset, DropoutDraw draw);
at::Tensor run_dropout_(at::Tensor& input, double p, int64_t group_size, const std::optional<int64_t>& seed,
                        const std::optional<int64_t>& offset, DropoutDraw draw);
at::Tensor run_dropout_backward(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                int64_t group_size, DropoutApply apply);

// 1 / (1 - p) as torch computes it: 1 - p rounded to the math type first (p < 1).
template <typename opmath_t>
opmath_t dropout_scale(double p) {
  return static_cast<opmath_t>(1.0 / static_cast<double>(static_cast<opmath_t>(1.0 - p)));
}

}  // namespace fusedopt
