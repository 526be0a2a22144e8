#include "common/dropout_checks.h"
#include "common/large_outputs.h"

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <c10/core/DeviceGuard.h>

#include <algorithm>
#include <limits>

namespace fusedopt {
namespace {

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Writes output (x's strides; may be x) and mask from dense x, walked in memory order (DropoutDraw).
void dropout_into(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p,
                  DropoutGroups groups, const std::optional<int64_t>& seed,
                  const std::optional<int64_t>& offset, DropoutDraw draw) {
  if (p == 0.0) {
    fill_dropout_mask_all_kept(mask, x.numel() / groups.size);
    if (!output.is_same(x)) output.copy_(x);
    return;
  }
  if (p == 1.0) {  // like torch: input * 0, so a dropped inf or NaN gives NaN; nothing is drawn
    mask.zero_();
    at::mul_out(const_cast<at::Tensor&>(output), x, at::zeros({}, x.options()));
    return;
  }
  draw(x, output, mask, p, groups, seed, offset);
}

// Whether dims of size 1 aside (their strides say nothing), a and b have the same strides.
bool same_layout(at::IntArrayRef sizes, at::IntArrayRef a, at::IntArrayRef b) {
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] != 1 && a[d] != b[d]) return false;
  }
  return true;
}

// The groups of group_size elements (row-major) of dense x in x's memory order (DropoutGroups), when
// they are runs of memory or channel-innermost rows; none for other layouts.
std::optional<DropoutGroups> groups_in_memory_order(const at::Tensor& x, int64_t group_size) {
  if (group_size == 1 || x.numel() == 0 || x.is_contiguous()) return DropoutGroups{group_size, 0};
  // Dims [0, split) index the groups (row-major), dims [split, dim) the elements of one group.
  int64_t split = x.dim();
  int64_t inner = 1;
  while (split > 0 && inner < group_size) inner *= x.size(--split);
  if (inner != group_size) return std::nullopt;
  int64_t max_inner_stride = 0;
  for (int64_t d = split; d < x.dim(); ++d) {
    if (x.size(d) != 1) max_inner_stride = std::max(max_inner_stride, x.stride(d));
  }
  // Whether the group dims in [0, end) lie outside every inner dim, in row-major order.
  auto outer_row_major = [&](int64_t end) {
    int64_t previous = std::numeric_limits<int64_t>::max();
    for (int64_t d = 0; d < end; ++d) {
      if (x.size(d) == 1) continue;
      if (x.stride(d) <= max_inner_stride || x.stride(d) >= previous) return false;
      previous = x.stride(d);
    }
    return true;
  };
  if (outer_row_major(split)) return DropoutGroups{group_size, 0};
  // Channels-last: the last group dim of size > 1 (the channel) innermost, the others outside the rest.
  int64_t channel = split - 1;
  while (channel >= 0 && x.size(channel) == 1) --channel;
  if (channel >= 0 && x.stride(channel) == 1 && outer_row_major(channel)) {
    // Group dims after `channel` have size 1, so the group is (outer index) * channels + channel.
    return DropoutGroups{group_size, x.size(channel)};
  }
  return std::nullopt;
}

// compute(x, output, groups) in x's memory order, for dense x and output of x's strides (may be x);
// groups that x's layout does not keep in runs or channel-innermost rows go through contiguous copies.
template <class Compute>
void in_memory_order(const at::Tensor& x, const at::Tensor& output, int64_t group_size, Compute compute) {
  if (const auto groups = groups_in_memory_order(x, group_size)) {
    compute(x, output, *groups);
    return;
  }
  const at::Tensor xc = x.contiguous();
  const at::Tensor oc = empty_large_output(xc, at::MemoryFormat::Contiguous);
  compute(xc, oc, DropoutGroups{group_size, 0});
  const_cast<at::Tensor&>(output).copy_(oc);
}

// dropout_into in x's memory order (in_memory_order), for any group_size.
void dropout_in_layout(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p,
                       int64_t group_size, const std::optional<int64_t>& seed,
                       const std::optional<int64_t>& offset, DropoutDraw draw) {
  in_memory_order(x, output, group_size, [&](const at::Tensor& in, const at::Tensor& out, DropoutGroups groups) {
    dropout_into(in, out, mask, p, groups, seed, offset, draw);
  });
}

}  // namespace

std::vector<int64_t> dropout_layout_strides(const at::Tensor& input) {
  if (input.is_non_overlapping_and_dense()) return input.strides().vec();
  return at::infer_dense_strides(input.sizes(), input.strides());
}

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
                                               const std::optional<int64_t>& offset, bool keep_layout,
                                               DropoutDraw draw) {
  check_dropout_inputs("dropout", input, p, group_size, seed, offset);
  const c10::DeviceGuard guard(input.device());
  at::Tensor mask = at::empty({dropout_mask_bytes(input.numel(), group_size)}, input.options().dtype(at::kByte));
  if (!keep_layout) {
    const at::Tensor x = input.contiguous();
    at::Tensor output = empty_large_output(x, at::MemoryFormat::Contiguous);
    dropout_into(x, output, mask, p, DropoutGroups{group_size, 0}, seed, offset, draw);
    return {output, mask};
  }
  const std::vector<int64_t> strides = dropout_layout_strides(input);
  at::Tensor output = empty_large_output_strided(input, strides);
  // An input with gaps or overlaps is read through a dense copy laid out like the output.
  const at::Tensor x = input.is_non_overlapping_and_dense() ? input : at::Tensor(output).copy_(input);
  dropout_in_layout(x, output, mask, p, group_size, seed, offset, draw);
  return {output, mask};
}

at::Tensor run_dropout_(at::Tensor& input, double p, int64_t group_size, const std::optional<int64_t>& seed,
                        const std::optional<int64_t>& offset, bool keep_layout, DropoutDraw draw) {
  check_dropout_inputs("dropout_", input, p, group_size, seed, offset);
  const c10::DeviceGuard guard(input.device());
  at::Tensor mask = at::empty({dropout_mask_bytes(input.numel(), group_size)}, input.options().dtype(at::kByte));
  // Computed where input is (keep_layout: any dense layout; else contiguous only), otherwise through a
  // copy (keep_layout: laid out as dropout_layout_strides says) written back at the end.
  at::Tensor x = input;
  if (keep_layout ? !input.is_non_overlapping_and_dense() : !input.is_contiguous()) {
    x = keep_layout ? empty_large_output_strided(input, dropout_layout_strides(input)).copy_(input) : input.contiguous();
  }
  if (keep_layout) {
    dropout_in_layout(x, x, mask, p, group_size, seed, offset, draw);
  } else {
    dropout_into(x, x, mask, p, DropoutGroups{group_size, 0}, seed, offset, draw);
  }
  if (!x.is_same(input)) input.copy_(x);
  return mask;
}

at::Tensor run_dropout_backward(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                int64_t group_size, at::OptionalIntArrayRef output_strides, DropoutApply apply) {
  check_dropout_backward_inputs(grad_output, mask, p, group_size);
  const c10::DeviceGuard guard(grad_output.device());
  if (!output_strides.has_value()) {
    const at::Tensor g = grad_output.contiguous();
    at::Tensor grad_input = empty_large_output(g, at::MemoryFormat::Contiguous);
    apply(g, grad_input, mask, DropoutGroups{group_size, 0}, p);
    return grad_input;
  }
  const at::IntArrayRef strides = *output_strides;
  TORCH_CHECK_VALUE(static_cast<int64_t>(strides.size()) == grad_output.dim(),
                    "fusedopt.dropout_backward: output_strides has ", strides.size(), " entries but grad_output has ",
                    grad_output.dim(), " dimensions");
  TORCH_CHECK_VALUE(std::all_of(strides.begin(), strides.end(), [](int64_t s) { return s >= 0; }),
                    "fusedopt.dropout_backward: output_strides must be non-negative, got ", strides);
  at::Tensor grad_input = empty_large_output_strided(grad_output, strides);
  TORCH_CHECK_VALUE(grad_input.is_non_overlapping_and_dense(), "fusedopt.dropout_backward: output_strides ",
                    strides, " are not those of a dense tensor of shape ", grad_output.sizes(),
                    " (expected the strides of the forward's output)");
  // The mask follows the forward output's memory order: a grad_output laid out otherwise is read
  // through a copy in that order.
  const bool in_order = grad_output.is_non_overlapping_and_dense() &&
                        same_layout(grad_output.sizes(), grad_output.strides(), strides);
  const at::Tensor g = in_order ? grad_output : empty_large_output_strided(grad_output, strides).copy_(grad_output);
  in_memory_order(g, grad_input, group_size, [&](const at::Tensor& in, const at::Tensor& out, DropoutGroups groups) {
    apply(in, out, mask, groups, p);
  });
  return grad_input;
}

}  // namespace fusedopt
