// fusedopt::dropout, dropout_, dropout_backward and _philox4x32_10 on CUDA. One thread per mask byte
// (8 elements, 2 Philox calls) in the forward; the mask is the same function of (seed, offset, index)
// as on CPU (fusedopt/dropout.h). Seed and offset come from the CUDA generator's philox_cuda_state and
// are unpacked in the kernel, so the ops are safe under CUDA-graph capture like torch's RNG ops.
#include <mutex>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/dropout_checks.h"
#include "fusedopt/dropout.h"

namespace fusedopt::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t work) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, sms * 32)));
}

// in == nullptr: mask only. Any grid gives the same mask: byte b depends on b alone.
template <typename scalar_t>
__global__ void dropout_forward_kernel(const scalar_t* in, scalar_t* out, uint8_t* mask, int64_t n,
                                       at::PhiloxCudaState state, uint32_t threshold, double p) {
  using opmath_t = at::opmath_type<scalar_t>;
  const auto seeds = at::cuda::philox::unpack(state);
  DropoutRng rng;
  rng.seed = std::get<0>(seeds);
  rng.counter_base = std::get<1>(seeds) / 4;
  rng.threshold = threshold;
  const opmath_t scale = static_cast<opmath_t>(1.0 / static_cast<double>(static_cast<opmath_t>(1.0 - p)));
  const int64_t bytes = (n + 7) / 8;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < bytes; b += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = dropout_mask_byte(rng, b, n);
    mask[b] = byte;
    if (in == nullptr) continue;
    const int64_t first = 8 * b;
    const int64_t len = n - first < 8 ? n - first : 8;
    for (int64_t j = 0; j < len; ++j) {
      const opmath_t f = dropout_factor<opmath_t>(byte >> j & 1, scale);
      out[first + j] = static_cast<scalar_t>(static_cast<opmath_t>(in[first + j]) * f);
    }
  }
}

template <typename scalar_t>
__global__ void dropout_apply_kernel(const scalar_t* in, scalar_t* out, const uint8_t* mask, int64_t n,
                                     int64_t group_size, double p) {
  using opmath_t = at::opmath_type<scalar_t>;
  const opmath_t scale =
      p < 1.0 ? static_cast<opmath_t>(1.0 / static_cast<double>(static_cast<opmath_t>(1.0 - p))) : opmath_t(0);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t g = i / group_size;
    const opmath_t f = dropout_factor<opmath_t>(mask[g >> 3] >> (g & 7) & 1, scale);
    out[i] = static_cast<scalar_t>(static_cast<opmath_t>(in[i]) * f);
  }
}

__global__ void philox_kernel(const int64_t* counters, const int64_t* keys, int64_t* out, int64_t rows) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t w[4];
    for (int j = 0; j < 4; ++j) w[j] = static_cast<uint32_t>(counters[4 * i + j]);
    philox4x32_10(w, static_cast<uint32_t>(keys[2 * i]), static_cast<uint32_t>(keys[2 * i + 1]));
    for (int j = 0; j < 4; ++j) out[4 * i + j] = w[j];
  }
}

at::PhiloxCudaState resolve_state(const at::Tensor& input, const std::optional<int64_t>& seed,
                                  const std::optional<int64_t>& offset) {
  if (seed.has_value()) {
    return at::PhiloxCudaState(static_cast<uint64_t>(*seed), static_cast<uint64_t>(offset.value_or(0)));
  }
  auto gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
      std::nullopt, at::cuda::detail::getDefaultCUDAGenerator(input.device().index()));
  std::lock_guard<std::mutex> lock(gen->mutex_);
  // Four 32-bit draws per subsequence (element block): one Philox call, as torch counts offsets.
  return gen->philox_cuda_state(4);
}

// The device part of run_dropout / run_dropout_ (0 < p < 1; common/dropout_checks.h).
void dropout_draw(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p, int64_t group_size,
                  const std::optional<int64_t>& seed, const std::optional<int64_t>& offset) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const at::PhiloxCudaState state = resolve_state(x, seed, offset);
  const uint32_t threshold = dropout_keep_threshold(p);
  auto stream = at::cuda::getCurrentCUDAStream();
  uint8_t* mask_ptr = mask.data_ptr<uint8_t>();
  const int64_t bits = n / group_size;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fusedopt.dropout", [&] {
    if (group_size == 1) {
      dropout_forward_kernel<scalar_t><<<blocks_for((n + 7) / 8), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), mask_ptr, n, state, threshold, p);
    } else {
      dropout_forward_kernel<scalar_t><<<blocks_for((bits + 7) / 8), kThreads, 0, stream>>>(
          nullptr, nullptr, mask_ptr, bits, state, threshold, p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      dropout_apply_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), mask_ptr, n, group_size, p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The device part of run_dropout_backward.
void dropout_apply(const at::Tensor& input, const at::Tensor& output, const at::Tensor& mask, int64_t group_size,
                   double p) {
  const int64_t n = input.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fusedopt.dropout_backward", [&] {
    dropout_apply_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        input.const_data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), mask.const_data_ptr<uint8_t>(), n,
        group_size, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> dropout_cuda(const at::Tensor& input, double p, int64_t group_size,
                                                std::optional<int64_t> seed, std::optional<int64_t> offset) {
  return run_dropout(input, p, group_size, seed, offset, &dropout_draw);
}

at::Tensor dropout_inplace_cuda(at::Tensor& input, double p, int64_t group_size, std::optional<int64_t> seed,
                                std::optional<int64_t> offset) {
  return run_dropout_(input, p, group_size, seed, offset, &dropout_draw);
}

at::Tensor dropout_backward_cuda(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                 int64_t group_size) {
  return run_dropout_backward(grad_output, mask, p, group_size, &dropout_apply);
}

at::Tensor philox_cuda(const at::Tensor& counters, const at::Tensor& keys, bool torch_engine) {
  TORCH_CHECK(!torch_engine, "fusedopt._philox4x32_10: torch_engine=True is CPU only");
  TORCH_CHECK(counters.scalar_type() == at::kLong && counters.dim() == 2 && counters.size(1) == 4 &&
                  keys.scalar_type() == at::kLong && keys.dim() == 2 && keys.size(1) == 2 &&
                  keys.size(0) == counters.size(0),
              "fusedopt._philox4x32_10: counters (N, 4) and keys (N, 2) must be int64");
  // Either on the CPU dispatches here too; the kernel would read a host pointer.
  TORCH_CHECK(counters.is_cuda() && keys.device() == counters.device(),
              "fusedopt._philox4x32_10: counters is on ", counters.device(), " and keys on ", keys.device(),
              "; expected both on one CUDA device");
  const c10::cuda::CUDAGuard guard(counters.device());
  const at::Tensor c = counters.contiguous(), k = keys.contiguous();
  at::Tensor out = at::empty_like(c);
  if (c.size(0) == 0) return out;
  philox_kernel<<<blocks_for(c.size(0)), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      c.const_data_ptr<int64_t>(), k.const_data_ptr<int64_t>(), out.data_ptr<int64_t>(), c.size(0));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("dropout", &dropout_cuda);
  m.impl("dropout_", &dropout_inplace_cuda);
  m.impl("dropout_backward", &dropout_backward_cuda);
  m.impl("_philox4x32_10", &philox_cuda);
}

}  // namespace fusedopt::cuda
