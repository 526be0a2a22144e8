#include "common/norm_checks.h"

#include <cmath>

#include "common/tensor_lists.h"

namespace fusedopt {
namespace {

void check_norm_tensors(const char* op, at::TensorList tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.defined(), op, ": tensors[", i, "] is undefined");
    TORCH_CHECK(t.layout() == at::kStrided, op, ": tensors[", i, "] has layout ", t.layout(),
                "; expected dense (strided) tensors");
    TORCH_CHECK(is_supported_dtype(t.scalar_type()), op, ": tensors[", i, "] has dtype ", t.scalar_type(),
                "; expected float32, float64, float16 or bfloat16");
    TORCH_CHECK(t.device() == tensors[0].device(), op, ": tensors[", i, "] is on ", t.device(),
                " but tensors[0] is on ", tensors[0].device(), "; expected one device");
    // The kernels walk numel() elements from data_ptr(): exactly the tensor's elements when it fills
    // its memory, in whatever order.
    TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": tensors[", i,
                "] is a strided view with gaps or overlaps; expected tensors that fill their memory");
  }
}

}  // namespace

void check_total_norm_inputs(at::TensorList tensors, double norm_type) {
  constexpr const char* op = "fusedopt.total_norm";
  TORCH_CHECK(!std::isnan(norm_type), op, ": norm_type is nan; expected a number or inf");
  check_norm_tensors(op, tensors);
}

void check_clip_inputs(at::TensorList tensors, const at::Tensor& total_norm) {
  constexpr const char* op = "fusedopt.clip_by_total_norm_";
  check_norm_tensors(op, tensors);
  TORCH_CHECK(total_norm.defined(), op, ": total_norm is undefined");
  TORCH_CHECK(total_norm.numel() == 1, op, ": total_norm has ", total_norm.numel(),
              " elements; expected a 1-element tensor");
  TORCH_CHECK(total_norm.scalar_type() == at::kFloat || total_norm.scalar_type() == at::kDouble, op,
              ": total_norm has dtype ", total_norm.scalar_type(), "; expected float32 or float64");
  TORCH_CHECK(tensors.empty() || total_norm.device() == tensors[0].device(), op, ": total_norm is on ",
              total_norm.device(), " but the tensors are on ", tensors[0].device(),
              "; expected the same device");
}

c10::ScalarType norm_result_dtype(at::TensorList tensors) {
  for (const at::Tensor& t : tensors) {
    if (t.scalar_type() == at::kDouble) return at::kDouble;
  }
  return at::kFloat;
}

}  // namespace fusedopt
