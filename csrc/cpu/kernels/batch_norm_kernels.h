// Declarations of the per-variant batch norm CPU kernels (csrc/cpu/kernels/batch_norm_kernel.cpp).
// Every kernel gets a BnLayout (common/batch_norm_checks.h) and tensors already checked by the entry;
// per-channel tensors are of the parameter dtype (float, or double for double inputs).
#pragma once

#include <ATen/core/Tensor.h>

#include "common/batch_norm_checks.h"
#include "cpu/dispatch.h"

FUSEDOPT_DECLARE_CPU_KERNEL(void batch_norm_stats_kernel(const fusedopt::BnLayout& l, at::Tensor& mean,
                                                         at::Tensor& var))
FUSEDOPT_DECLARE_CPU_KERNEL(void batch_norm_elemt_kernel(const fusedopt::BnLayout& l, at::Tensor& out,
                                                         const at::Tensor& mean, const at::Tensor& var,
                                                         const at::Tensor* weight, const at::Tensor* bias,
                                                         double eps))
FUSEDOPT_DECLARE_CPU_KERNEL(void batch_norm_backward_reduce_kernel(const fusedopt::BnLayout& l,
                                                                   const at::Tensor& grad_out,
                                                                   const at::Tensor& mean, at::Tensor& sum_dy,
                                                                   at::Tensor& sum_dy_xmu))
FUSEDOPT_DECLARE_CPU_KERNEL(void batch_norm_backward_elemt_kernel(
    const fusedopt::BnLayout& l, const at::Tensor& grad_out, at::Tensor& grad_in, const at::Tensor& mean,
    const at::Tensor& var, const at::Tensor* weight, const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu,
    int64_t count, double eps))
// The one-process training forward (stats then elemt) and backward (reduce then elemt with
// count = values per channel) in one call each, fused per channel where that pays (NCHW inputs).
FUSEDOPT_DECLARE_CPU_KERNEL(void batch_norm_train_kernel(const fusedopt::BnLayout& l, at::Tensor& out,
                                                         at::Tensor& mean, at::Tensor& var,
                                                         const at::Tensor* weight, const at::Tensor* bias,
                                                         double eps))
FUSEDOPT_DECLARE_CPU_KERNEL(void batch_norm_train_backward_kernel(
    const fusedopt::BnLayout& l, const at::Tensor& grad_out, at::Tensor& grad_in, const at::Tensor& mean,
    const at::Tensor& var, const at::Tensor* weight, at::Tensor& sum_dy, at::Tensor& sum_dy_xmu, double eps))
