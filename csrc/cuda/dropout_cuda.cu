// fusedopt::dropout, dropout_, dropout_backward and _philox4x32_10 on CUDA. One thread per mask byte
// (8 elements, moved as one aligned pack where the pointers allow; 2 Philox calls) in the forward, one per
// 8 elements in the backward; the mask is the same function of (seed, offset, index) as on CPU
// (fusedopt/dropout.h). Seed and offset come from the CUDA generator's philox_cuda_state and
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
#include "cuda/element_packs.cuh"
#include "fusedopt/dropout.h"

namespace fusedopt::cuda {
namespace {

constexpr int kThreads = 256;
// Elements per thread: one mask byte's worth, moved as one aligned pack (element_packs.cuh).
constexpr int kRun = 8;

int blocks_for(int64_t work) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, sms * 32)));
}

// Whether the runs of `a` and `b` (either may be null) can move as packs.
template <typename scalar_t>
bool runs_packed(const void* a, const void* b) {
  return pack_aligned<scalar_t, kRun>(a) && pack_aligned<scalar_t, kRun>(b);
}

// out[first + j] = in[first + j] * (bit j of `bits` ? scale : 0) for the run's elements below n.
template <typename scalar_t, bool kPacked>
__device__ __forceinline__ void scale_run(const scalar_t* in, scalar_t* out, int64_t first, int64_t n,
                                          unsigned bits, at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  if (kPacked && first + kRun <= n) {
    Pack<scalar_t, kRun> v = load_pack<scalar_t, kRun>(in, first);
#pragma unroll
    for (int j = 0; j < kRun; ++j) {
      v.v[j] = static_cast<scalar_t>(static_cast<opmath_t>(v.v[j]) * dropout_factor<opmath_t>(bits >> j & 1, scale));
    }
    store_pack<scalar_t, kRun>(out, first, v);
    return;
  }
  const int len = n - first < kRun ? static_cast<int>(n - first) : kRun;
  for (int j = 0; j < len; ++j) {
    out[first + j] =
        static_cast<scalar_t>(static_cast<opmath_t>(in[first + j]) * dropout_factor<opmath_t>(bits >> j & 1, scale));
  }
}

// One thread per mask byte b: draws it and stores it, and with `in` scales its run (elements 8b .. 8b+7).
// Any grid gives the same mask: byte b depends on b alone.
template <typename scalar_t, bool kPacked>
__global__ void dropout_forward_kernel(const scalar_t* in, scalar_t* out, uint8_t* mask, int64_t n,
                                       at::PhiloxCudaState state, uint32_t threshold,
                                       at::opmath_type<scalar_t> scale) {
  const auto seeds = at::cuda::philox::unpack(state);
  DropoutRng rng;
  rng.seed = std::get<0>(seeds);
  rng.counter_base = std::get<1>(seeds) / 4;
  rng.threshold = threshold;
  const int64_t bytes = (n + kRun - 1) / kRun;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < bytes; b += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = dropout_mask_byte(rng, b, n);
    mask[b] = byte;
    if (in != nullptr) scale_run<scalar_t, kPacked>(in, out, kRun * b, n, byte, scale);
  }
}

// One thread per run of kRun elements (in memory order): out = in * the factor of each element's
// group bit (DropoutGroups). A run's first group is found by a few divisions; the rest follow by counting.
template <typename scalar_t, bool kPacked>
__global__ void dropout_apply_kernel(const scalar_t* in, scalar_t* out, const uint8_t* mask, int64_t n,
                                     DropoutGroups groups, at::opmath_type<scalar_t> scale) {
  const int64_t group_size = groups.size;
  const int64_t runs = (n + kRun - 1) / kRun;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < runs; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t first = kRun * k;
    unsigned bits;
    if (group_size == 1) {
      bits = mask[k];
    } else if (groups.channels > 0) {
      // Channel innermost: element first is channel c of row `row`; the row's batch entry is row /
      // group_size, and its group entry * channels + c.
      const int64_t channels = groups.channels;
      const int64_t row = first / channels;
      int64_t c = first - row * channels;
      int64_t entry = row / group_size;
      int64_t s = row - entry * group_size;
      bits = 0;
      const int len = n - first < kRun ? static_cast<int>(n - first) : kRun;
      for (int j = 0; j < len; ++j) {
        const int64_t g = entry * channels + c;
        bits |= static_cast<unsigned>(mask[g >> 3] >> (g & 7) & 1) << j;
        if (++c == channels) {
          c = 0;
          if (++s == group_size) {
            s = 0;
            ++entry;
          }
        }
      }
    } else {
      bits = 0;
      int64_t g = first / group_size;
      int64_t r = first - g * group_size;
      const int len = n - first < kRun ? static_cast<int>(n - first) : kRun;
      for (int j = 0; j < len; ++j) {
        bits |= static_cast<unsigned>(mask[g >> 3] >> (g & 7) & 1) << j;
        if (++r == group_size) {
          r = 0;
          ++g;
        }
      }
    }
    scale_run<scalar_t, kPacked>(in, out, first, n, bits, scale);
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
void dropout_draw(const at::Tensor& x, const at::Tensor& output, at::Tensor& mask, double p, DropoutGroups groups,
                  const std::optional<int64_t>& seed, const std::optional<int64_t>& offset) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const at::PhiloxCudaState state = resolve_state(x, seed, offset);
  const uint32_t threshold = dropout_keep_threshold(p);
  auto stream = at::cuda::getCurrentCUDAStream();
  uint8_t* mask_ptr = mask.data_ptr<uint8_t>();
  const int64_t bits = n / groups.size;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fusedopt.dropout", [&] {
    const auto scale = dropout_scale<at::opmath_type<scalar_t>>(p);
    const scalar_t* in = x.const_data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    const bool packed = runs_packed<scalar_t>(in, out);
    if (groups.size == 1) {
      auto kernel = packed ? dropout_forward_kernel<scalar_t, true> : dropout_forward_kernel<scalar_t, false>;
      kernel<<<blocks_for((n + kRun - 1) / kRun), kThreads, 0, stream>>>(in, out, mask_ptr, n, state, threshold,
                                                                         scale);
    } else {
      dropout_forward_kernel<scalar_t, false><<<blocks_for((bits + kRun - 1) / kRun), kThreads, 0, stream>>>(
          nullptr, nullptr, mask_ptr, bits, state, threshold, scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      auto kernel = packed ? dropout_apply_kernel<scalar_t, true> : dropout_apply_kernel<scalar_t, false>;
      kernel<<<blocks_for((n + kRun - 1) / kRun), kThreads, 0, stream>>>(in, out, mask_ptr, n, groups, scale);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The device part of run_dropout_backward.
void dropout_apply(const at::Tensor& input, const at::Tensor& output, const at::Tensor& mask, DropoutGroups groups,
                   double p) {
  const int64_t n = input.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fusedopt.dropout_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t scale = p < 1.0 ? dropout_scale<opmath_t>(p) : opmath_t(0);
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    auto kernel = runs_packed<scalar_t>(in, out) ? dropout_apply_kernel<scalar_t, true>
                                                 : dropout_apply_kernel<scalar_t, false>;
    kernel<<<blocks_for((n + kRun - 1) / kRun), kThreads, 0, stream>>>(in, out, mask.const_data_ptr<uint8_t>(), n,
                                                                       groups, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> dropout_cuda(const at::Tensor& input, double p, int64_t group_size,
                                                std::optional<int64_t> seed, std::optional<int64_t> offset,
                                                bool keep_layout) {
  return run_dropout(input, p, group_size, seed, offset, keep_layout, &dropout_draw);
}

at::Tensor dropout_inplace_cuda(at::Tensor& input, double p, int64_t group_size, std::optional<int64_t> seed,
                                std::optional<int64_t> offset, bool keep_layout) {
  return run_dropout_(input, p, group_size, seed, offset, keep_layout, &dropout_draw);
}

at::Tensor dropout_backward_cuda(const at::Tensor& grad_output, const at::Tensor& mask, double p,
                                 int64_t group_size, at::OptionalIntArrayRef output_strides) {
  return run_dropout_backward(grad_output, mask, p, group_size, output_strides, &dropout_apply);
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
