// Declarations of the per-variant dropout CPU kernels (csrc/cpu/kernels/dropout_kernel.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "cpu/dispatch.h"
#include "fusedopt/dropout.h"

// Draws the mask of n elements into mask (dropout_mask_bytes(n, 1) bytes) and, when input is defined
// (dense, n elements), writes output = input * keep / (1 - p) in memory order (output of input's
// strides; it may be input).
FUSEDOPT_DECLARE_CPU_KERNEL(void dropout_forward_kernel(int64_t n, const at::Tensor& input,
                                                        const at::Tensor& output, uint8_t* mask,
                                                        const ::fusedopt::DropoutRng& rng, double p))

// output = input * keep(groups.of(k)) / (1 - p) for a packed mask (backward, and channel-wise
// forward), k walking memory; input dense, output of its strides (it may be input). p < 1.
FUSEDOPT_DECLARE_CPU_KERNEL(void dropout_apply_kernel(const at::Tensor& input, const at::Tensor& output,
                                                      const uint8_t* mask, ::fusedopt::DropoutGroups groups,
                                                      double p))
