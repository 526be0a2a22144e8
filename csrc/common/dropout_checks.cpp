#include "common/dropout_checks.h"

#include <ATen/ATen.h>

namespace fusedopt {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

}  // namespace

int64_t dropout_mask_bytes(int64_t numel, int64_t group_size) {
  return (numel / group_size + 7) / 8;
}

void check_dropout_inputs(const char* op, const at::Tensor& input, double p, int64_t group_size,
                          const std::optional<int64_t>& seed, const std::optional<int64_t>& offset) {
  TORCH_CHECK(input.layout() == at::kStrided, "fusedopt.", op, ": input must be a dense (strided) tensor, got ",
              input.layout());
  TORCH_CHECK(is_supported_float(input.scalar_type()), "fusedopt.", op,
              ": input must be a float32, float64, float16 or bfloat16 tensor, got ", input.scalar_type());
  TORCH_CHECK_VALUE(p >= 0.0 && p <= 1.0, "dropout probability has to be between 0 and 1, but got ", p);
  TORCH_CHECK_VALUE(group_size >= 1, "fusedopt.", op, ": group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(input.numel() % group_size == 0, "fusedopt.", op, ": group_size (", group_size,
                    ") must divide the number of elements of input (", input.numel(), ")");
  TORCH_CHECK_VALUE(seed.has_value() || !offset.has_value(), "fusedopt.", op,
                    ": offset is only meaningful with an explicit seed");
  if (offset.has_value()) {
    TORCH_CHECK_VALUE(*offset >= 0 && *offset % 4 == 0, "fusedopt.", op,
                      ": offset must be a non-negative multiple of 4 (torch's philox offsets count "
                      "32-bit draws, four per Philox call), got ", *offset);
  }
}

void check_dropout_backward_inputs(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                   int64_t group_size) {
  TORCH_CHECK(grad_output.layout() == at::kStrided,
              "fusedopt.dropout_backward: grad_output must be a dense (strided) tensor");
  TORCH_CHECK(is_supported_float(grad_output.scalar_type()),
              "fusedopt.dropout_backward: grad_output must be a float32, float64, float16 or bfloat16 "
              "tensor, got ", grad_output.scalar_type());
  TORCH_CHECK_VALUE(p >= 0.0 && p <= 1.0, "dropout probability has to be between 0 and 1, but got ", p);
  TORCH_CHECK_VALUE(group_size >= 1, "fusedopt.dropout_backward: group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(grad_output.numel() % group_size == 0, "fusedopt.dropout_backward: group_size (",
                    group_size, ") must divide the number of elements of grad_output (",
                    grad_output.numel(), ")");
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 1 && mask.is_contiguous(),
              "fusedopt.dropout_backward: mask must be a contiguous 1-d uint8 tensor (the packed mask "
              "returned by fusedopt.dropout), got ", mask.scalar_type(), " of shape ", mask.sizes());
  TORCH_CHECK(mask.device() == grad_output.device(), "fusedopt.dropout_backward: mask is on ",
              mask.device(), " but grad_output is on ", grad_output.device());
  const int64_t expected = dropout_mask_bytes(grad_output.numel(), group_size);
  TORCH_CHECK_VALUE(mask.numel() == expected, "fusedopt.dropout_backward: mask has ", mask.numel(),
                    " bytes but ", grad_output.numel(), " elements in groups of ", group_size, " need ",
                    expected);
}

void fill_dropout_mask_all_kept(at::Tensor& mask, int64_t bits) {
  if (mask.numel() == 0) return;
  mask.fill_(0xFF);
  if (bits % 8 != 0) mask.narrow(0, mask.numel() - 1, 1).fill_((1 << (bits % 8)) - 1);
}

}  // namespace fusedopt
