// fusedopt::dropout, dropout_, dropout_backward and _philox4x32_10 on CPU: the shared entries (checks and
// outputs, common/dropout_checks.h) with seed and offset from the default CPU generator and the
// per-variant kernels (csrc/cpu/kernels/dropout_kernel.cpp) as the device part.
//
// The mask is stored (1 bit per element) rather than regenerated in backward. Measured on the 2-core
// AVX-512 development machine (12.8M float32, loaded, so roughly): in-place forward (16 Philox calls +
// 64 multiplies per 64 elements) 44-53 ms against 42-48 ms for a plain x * 2 into a preallocated
// output, i.e. drawing is just hidden behind memory traffic when both cores are free, and not at all
// on the DEFAULT (scalar) variant or under load; reading the mask back costs numel / 8 bytes, 1/32 of
// the float32 traffic of backward. Storing keeps backward a pure streaming multiply, costs numel / 8
// bytes of activation memory, and makes "backward uses the forward mask" hold by construction.
#include <mutex>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/PhiloxRNGEngine.h>
#include <torch/library.h>

#include "common/dropout_checks.h"
#include "cpu/kernels/dropout_kernels.h"

namespace fusedopt::cpu {
namespace {

// The CPU generator (mt19937) has no philox offset: each call draws a fresh 64-bit key from it instead,
// so successive calls differ and torch.manual_seed reproduces them.
DropoutRng resolve_rng(const std::optional<int64_t>& seed, const std::optional<int64_t>& offset, double p) {
  DropoutRng rng{};
  rng.threshold = dropout_keep_threshold(p);
  if (seed.has_value()) {
    rng.seed = static_cast<uint64_t>(*seed);
    rng.counter_base = static_cast<uint64_t>(offset.value_or(0)) / 4;
    return rng;
  }
  auto gen = at::detail::getDefaultCPUGenerator();
  auto* impl = at::check_generator<at::CPUGeneratorImpl>(gen);
  std::lock_guard<std::mutex> lock(gen.mutex());
  rng.seed = impl->random64();
  rng.counter_base = 0;
  return rng;
}

// The device part of run_dropout / run_dropout_ (0 < p < 1; common/dropout_checks.h).
void dropout_draw(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p, DropoutGroups groups,
                  const std::optional<int64_t>& seed, const std::optional<int64_t>& offset) {
  const int64_t n = x.numel();
  if (n == 0) return;  // draws nothing, as torch's dropout and the CUDA path: the generator stays put
  const DropoutRng rng = resolve_rng(seed, offset, p);
  uint8_t* mask_ptr = mask.data_ptr<uint8_t>();
  if (groups.size == 1) {
    FUSEDOPT_CPU_KERNEL(dropout_forward_kernel)(n, x, output, mask_ptr, rng, p);
  } else {
    FUSEDOPT_CPU_KERNEL(dropout_forward_kernel)(n / groups.size, at::Tensor(), at::Tensor(), mask_ptr, rng, p);
    FUSEDOPT_CPU_KERNEL(dropout_apply_kernel)(x, output, mask_ptr, groups, p);
  }
}

// The device part of run_dropout_backward.
void dropout_apply(const at::Tensor& input, const at::Tensor& output, const at::Tensor& mask, DropoutGroups groups,
                   double p) {
  FUSEDOPT_CPU_KERNEL(dropout_apply_kernel)(input, output, mask.const_data_ptr<uint8_t>(), groups, p);
}

std::tuple<at::Tensor, at::Tensor> dropout_cpu(const at::Tensor& input, double p, int64_t group_size,
                                               std::optional<int64_t> seed, std::optional<int64_t> offset,
                                               bool keep_layout) {
  return run_dropout(input, p, group_size, seed, offset, keep_layout, &dropout_draw);
}

at::Tensor dropout_inplace_cpu(at::Tensor& input, double p, int64_t group_size, std::optional<int64_t> seed,
                               std::optional<int64_t> offset, bool keep_layout) {
  return run_dropout_(input, p, group_size, seed, offset, keep_layout, &dropout_draw);
}

at::Tensor dropout_backward_cpu(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                int64_t group_size, at::OptionalIntArrayRef output_strides) {
  return run_dropout_backward(grad_output, mask, p, group_size, output_strides, &dropout_apply);
}

at::Tensor philox_cpu(const at::Tensor& counters, const at::Tensor& keys, bool torch_engine) {
  TORCH_CHECK(counters.scalar_type() == at::kLong && counters.dim() == 2 && counters.size(1) == 4,
              "fusedopt._philox4x32_10: counters must be an int64 tensor of shape (N, 4)");
  TORCH_CHECK(keys.scalar_type() == at::kLong && keys.dim() == 2 && keys.size(1) == 2 &&
                  keys.size(0) == counters.size(0),
              "fusedopt._philox4x32_10: keys must be an int64 tensor of shape (N, 2), N as counters");
  const at::Tensor c = counters.contiguous(), k = keys.contiguous();
  at::Tensor out = at::empty_like(c);
  const int64_t* cp = c.const_data_ptr<int64_t>();
  const int64_t* kp = k.const_data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < c.size(0); ++i) {
    uint32_t w[4];
    for (int j = 0; j < 4; ++j) w[j] = static_cast<uint32_t>(cp[4 * i + j]);
    const uint32_t k0 = static_cast<uint32_t>(kp[2 * i]), k1 = static_cast<uint32_t>(kp[2 * i + 1]);
    if (torch_engine) {
      // torch's engine: key = seed, counter words 2-3 = subsequence, words 0-1 = offset.
      at::philox_engine engine((uint64_t(k1) << 32) | k0, (uint64_t(w[3]) << 32) | w[2],
                               (uint64_t(w[1]) << 32) | w[0]);
      for (int j = 0; j < 4; ++j) w[j] = engine();
    } else {
      philox4x32_10(w, k0, k1);
    }
    for (int j = 0; j < 4; ++j) op[4 * i + j] = w[j];
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("dropout", &dropout_cpu);
  m.impl("dropout_", &dropout_inplace_cpu);
  m.impl("dropout_backward", &dropout_backward_cpu);
  m.impl("_philox4x32_10", &philox_cpu);
}

}  // namespace fusedopt::cpu
