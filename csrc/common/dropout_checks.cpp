#include "common/dropout_checks.h"
#include "common/large_outputs.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>

namespace fusedopt {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Writes output (contiguous; may be x) and mask from contiguous x.
void dropout_into(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p,
                  int64_t group_size, const std::optional<int64_t>& seed,
                  const std::optional<int64_t>& offset, DropoutDraw draw) {
  if (p == 0.0) {
    fill_dropout_mask_all_kept(mask, x.numel() / group_size);
    if (!output.is_same(x)) output.copy_(x);
    return;
  }
  if (p == 1.0) {  // like torch: input * 0, so a dropped inf or NaN gives NaN; nothing is drawn
    mask.zero_();
    at::mul_out(const_cast<at::Tensor&>(output), x, at::zeros({}, x.options()));
    return;
  }
  draw(x, output, mask, p, group_size, seed, offset);
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

std::tuple<at::Tensor, at::Tensor> run_dropout(const at::Tensor& input, double p, int64_t group_size,
                                               const std::optional<int64_t>& seed,
                                               const std::optional<int64_t>& offset, DropoutDraw draw) {
  check_dropout_inputs("dropout", input, p, group_size, seed, offset);
  const c10::DeviceGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  at::Tensor output = empty_large_output(x, at::MemoryFormat::Contiguous);
  at::Tensor mask = at::empty({dropout_mask_bytes(x.numel(), group_size)}, x.options().dtype(at::kByte));
  dropout_into(x, output, mask, p, group_size, seed, offset, draw);
  return {output, mask};
}

at::Tensor run_dropout_(at::Tensor& input, double p, int64_t group_size, const std::optional<int64_t>& seed,
                        const std::optional<int64_t>& offset, DropoutDraw draw) {
  check_dropout_inputs("dropout_", input, p, group_size, seed, offset);
  const c10::DeviceGuard guard(input.device());
  at::Tensor mask = at::empty({dropout_mask_bytes(input.numel(), group_size)}, input.options().dtype(at::kByte));
  if (input.is_contiguous()) {
    dropout_into(input, input, mask, p, group_size, seed, offset, draw);
  } else {
    // The kernels walk memory in logical order; a strided input goes through a contiguous copy.
    at::Tensor x = input.contiguous();
    dropout_into(x, x, mask, p, group_size, seed, offset, draw);
    input.copy_(x);
  }
  return mask;
}

at::Tensor run_dropout_backward(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                int64_t group_size, DropoutApply apply) {
  check_dropout_backward_inputs(grad_output, mask, p, group_size);
  const c10::DeviceGuard guard(grad_output.device());
  const at::Tensor g = grad_output.contiguous();
  at::Tensor grad_input = empty_large_output(g, at::MemoryFormat::Contiguous);
  apply(g, grad_input, mask, group_size, p);
  return grad_input;
}

}  // namespace fusedopt
