#include "common/batch_norm_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace fusedopt {

at::ScalarType bn_param_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

BnLayout bn_layout(const at::Tensor& input, const char* op, const char* arg) {
  TORCH_CHECK(input.layout() == at::kStrided, op, ": ", arg, " must be a dense (strided) tensor, got ",
              input.layout());
  TORCH_CHECK(input.dim() >= 2, op, ": ", arg, " must have at least 2 dimensions (N, C, ...), got ",
              input.dim(), "-d input of shape ", input.sizes());
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              op, ": ", arg, " must be float32, float64, float16 or bfloat16, got ", dtype);
  BnLayout l;
  l.N = input.size(0);
  l.C = input.size(1);
  l.S = 1;
  for (int64_t d = 2; d < input.dim(); ++d) l.S *= input.size(d);
  TORCH_CHECK(l.C > 0, op, ": ", arg, " must have at least one channel (dim 1), got shape ", input.sizes());
  const bool cl = (input.dim() == 4 && input.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
                  (input.dim() == 5 && input.is_contiguous(at::MemoryFormat::ChannelsLast3d));
  if (input.is_contiguous()) {
    l.input = input;
    l.channels_last = l.S == 1;
  } else if (cl) {
    l.input = input;
    l.channels_last = true;
  } else {
    l.input = input.contiguous();
    l.channels_last = l.S == 1;
  }
  return l;
}

at::Tensor bn_empty_like(const BnLayout& layout) {
  const at::Tensor& x = layout.input;
  if (layout.channels_last && !x.is_contiguous()) {
    return at::empty_like(x, x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
  }
  return at::empty_like(x, at::MemoryFormat::Contiguous);
}

void check_bn_param(const at::Tensor& t, const BnLayout& layout, const char* op, const char* arg) {
  const auto want = bn_param_dtype(layout.input.scalar_type());
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", arg, " must be a dense tensor, got ", t.layout());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == layout.C, op, ": ", arg, " must have shape [", layout.C,
              "] (one value per channel), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == want, op, ": ", arg, " must be ", want, " for a ",
              layout.input.scalar_type(), " input, got ", t.scalar_type());
  TORCH_CHECK(t.device() == layout.input.device(), op, ": ", arg, " must be on the input's device ",
              layout.input.device(), ", got ", t.device());
}

void check_bn_param(const std::optional<at::Tensor>& t, const BnLayout& layout, const char* op,
                    const char* arg) {
  if (t.has_value()) check_bn_param(*t, layout, op, arg);
}

at::Tensor bn_match_layout(const at::Tensor& other, const BnLayout& layout, const char* op,
                           const char* arg) {
  const at::Tensor& x = layout.input;
  TORCH_CHECK(other.layout() == at::kStrided, op, ": ", arg, " must be a dense tensor, got ", other.layout());
  TORCH_CHECK(other.sizes() == x.sizes(), op, ": ", arg, " must have the input's shape ", x.sizes(),
              ", got ", other.sizes());
  TORCH_CHECK(other.scalar_type() == x.scalar_type(), op, ": ", arg, " must have the input's dtype ",
              x.scalar_type(), ", got ", other.scalar_type());
  TORCH_CHECK(other.device() == x.device(), op, ": ", arg, " must be on the input's device ", x.device(),
              ", got ", other.device());
  // The kernels walk both with the input's strides.
  if (other.strides() == x.strides()) return other;
  if (!layout.channels_last || x.is_contiguous()) return other.contiguous();
  return other.contiguous(x.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d);
}

}  // namespace fusedopt
