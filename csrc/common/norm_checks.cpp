#include "common/norm_checks.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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

// No two tensors share memory. The kernel scales the list's elements in parallel, so a tensor listed
// twice (or overlapping another) would be scaled by whichever thread wrote last. torch's CPU
// clip_grad_norm_ scales such memory once per appearance (coefficient squared), its CUDA foreach
// path races like ours; neither is what a caller means, so this is an error. The tensors fill their
// memory (check_norm_tensors), so tensor i spans [data_ptr, data_ptr + nbytes).
void check_no_shared_memory(const char* op, at::TensorList tensors) {
  struct Span {
    uintptr_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  spans.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (t.numel() == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    spans.push_back({begin, begin + static_cast<uintptr_t>(t.numel() * t.element_size()), i});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t k = 1; k < spans.size(); ++k) {
    const Span& a = spans[k - 1];
    const Span& b = spans[k];
    TORCH_CHECK(b.begin >= a.end, op, ": tensors[", std::min(a.index, b.index), "] and tensors[",
                std::max(a.index, b.index), "] share memory; each tensor is scaled in place once, so "
                "every gradient must appear once and not overlap another (a parameter listed twice?)");
  }
}

}  // namespace

void check_total_norm_inputs(at::TensorList tensors, double norm_type) {
  constexpr const char* op = "fusedopt.total_norm";
  TORCH_CHECK(!std::isnan(norm_type), op, ": norm_type is nan; expected a number or inf");
  check_norm_tensors(op, tensors);
}

void check_clip_tensors(at::TensorList tensors) {
  constexpr const char* op = "fusedopt.clip_by_total_norm_";
  check_norm_tensors(op, tensors);
  check_no_shared_memory(op, tensors);
}

void check_clip_inputs(at::TensorList tensors, const at::Tensor& total_norm) {
  constexpr const char* op = "fusedopt.clip_by_total_norm_";
  check_clip_tensors(tensors);
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
