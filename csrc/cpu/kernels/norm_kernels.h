// Declarations of the per-variant CPU kernels of the clipping family (csrc/cpu/kernels/norm_kernel.cpp).
#pragma once

#include "common/tensor_lists.h"
#include "cpu/dispatch.h"

FUSEDOPT_DECLARE_CPU_KERNEL(double total_norm_kernel(const TensorListsView<1>& lists, double norm_type,
                                                     bool accumulate_in_double))
FUSEDOPT_DECLARE_CPU_KERNEL(void scale_kernel(const TensorListsView<1>& lists, double factor))
