// fusedopt::total_norm and fusedopt::clip_by_total_norm_ on CPU: checks, then the per-variant kernels
// (csrc/cpu/kernels/norm_kernel.cpp).
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include "common/norm_checks.h"
#include "cpu/kernels/norm_kernels.h"
#include "fusedopt/norms.h"

namespace fusedopt::cpu {
namespace {

at::Tensor total_norm_cpu(at::TensorList tensors, double norm_type) {
  check_total_norm_inputs(tensors, norm_type);
  TORCH_CHECK(!tensors.empty(), "fusedopt.total_norm: tensors is empty; expected at least one tensor");
  const c10::ScalarType dtype = norm_result_dtype(tensors);
  const double norm = FUSEDOPT_CPU_KERNEL(total_norm_kernel)(make_lists_view<1>({tensors}), norm_type,
                                                             dtype == at::kDouble);
  return at::scalar_tensor(norm, at::TensorOptions().dtype(dtype).device(tensors[0].device()));
}

void clip_by_total_norm_cpu(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  check_clip_inputs(tensors, total_norm);
  if (tensors.empty()) return;
  const double coef = total_norm.scalar_type() == at::kDouble
                          ? clip_coefficient<double>(*total_norm.const_data_ptr<double>(), max_norm)
                          : clip_coefficient<float>(*total_norm.const_data_ptr<float>(), max_norm);
  // Clipping inactive (the norm is within max_norm): x * 1 == x for every value, so nothing is
  // written (torch writes every gradient anyway). Only a NaN norm gives a NaN coefficient.
  if (coef == 1.0) return;
  FUSEDOPT_CPU_KERNEL(scale_kernel)(make_lists_view<1>({tensors}), coef);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("total_norm", &total_norm_cpu);
  m.impl("clip_by_total_norm_", &clip_by_total_norm_cpu);
}
// A sparse tensor in the lists routes the call here; the checks then reject it with a clear message.
TORCH_LIBRARY_IMPL(fusedopt, SparseCPU, m) {
  m.impl("total_norm", &total_norm_cpu);
  m.impl("clip_by_total_norm_", &clip_by_total_norm_cpu);
}

}  // namespace fusedopt::cpu
