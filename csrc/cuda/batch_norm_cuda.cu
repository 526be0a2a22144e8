// fusedopt::batch_norm_* on CUDA: small conventional kernels around the shared math in
// fusedopt/batch_norm.h, launched from the entries shared with CPU (common/batch_norm_checks.h).
//
// Reductions (statistics; the two backward sums) run in two launches: a partial kernel where each
// channel is spread over P blocks (P large when C is small, so a few channels still fill the GPU), each
// block writing one partial per channel, then a merge kernel combining a channel's P partials in a
// fixed order (deterministic, no atomics). P depends on the shape alone, not on the GPU, so results are
// the same on every device. Two partial kernels walk the two layouts:
//   N x C x S: grid (C, P), a block's threads stride over the channel's N * S values;
//   rows x C (channels last): grid (ceil(C / 32), P), blocks of 32 channels x 8 rows, so a warp reads
//   32 consecutive channels of one row.
// The elementwise kernels take per-channel coefficients computed once per channel (one thread each),
// and give each thread a run of consecutive elements, moved as one aligned pack (element_packs.cuh),
// whose first channel is found by one division and the rest by counting.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include <limits>

#include "common/batch_norm_checks.h"
#include "cuda/element_packs.cuh"
#include "fusedopt/batch_norm.h"

namespace fusedopt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTileChannels = 32;
constexpr int kTileRows = kThreads / kTileChannels;
constexpr int kMaxPartials = 1024;
// Blocks a reduction aims for: enough for 132 SMs (H100) at four blocks each, fixed so that the split
// into partials, and so the rounding, is the same on every GPU.
constexpr int64_t kTargetBlocks = 512;

// Welford state of values shifted by their channel's first value (see fusedopt/batch_norm.h).
template <typename opmath_t>
struct WelfordAcc {
  opmath_t shift, mean, m2;
  int64_t count;
  __device__ void add(opmath_t x, opmath_t /*dy*/) {
    ++count;
    welford_add(mean, m2, count, x - shift);
  }
  __device__ void merge(const WelfordAcc& o) { chan_merge(mean, m2, count, o.mean, o.m2, o.count); }
};

template <typename scalar_t, typename opmath_t>
struct MakeWelford {
  const scalar_t* x;
  int64_t shift_stride;  // the channel's first value is x[c * shift_stride]
  bool empty;
  __device__ WelfordAcc<opmath_t> operator()(int64_t c) const {
    return {empty ? opmath_t(0) : static_cast<opmath_t>(x[c * shift_stride]), opmath_t(0), opmath_t(0), 0};
  }
};

// sum(dy) and sum(dy * (x - mean)) of one channel.
template <typename opmath_t>
struct SumsAcc {
  opmath_t mean, sum_dy, sum_dy_xmu;
  __device__ void add(opmath_t x, opmath_t dy) {
    sum_dy += dy;
    sum_dy_xmu = MathOps<opmath_t>::fma(dy, x - mean, sum_dy_xmu);
  }
  __device__ void merge(const SumsAcc& o) {
    sum_dy += o.sum_dy;
    sum_dy_xmu += o.sum_dy_xmu;
  }
};

template <typename opmath_t>
struct MakeSums {
  const opmath_t* mean;
  __device__ SumsAcc<opmath_t> operator()(int64_t c) const { return {mean[c], opmath_t(0), opmath_t(0)}; }
};

template <typename scalar_t, typename opmath_t>
__device__ __forceinline__ opmath_t load_dy(const scalar_t* dy, int64_t i) {
  return dy ? static_cast<opmath_t>(dy[i]) : opmath_t(0);
}

template <typename scalar_t, typename opmath_t, typename Acc, typename Make>
__global__ void partials_nchw(const scalar_t* x, const scalar_t* dy, int64_t N, int64_t C, int64_t S, Make make,
                              Acc* partials) {
  __shared__ alignas(16) unsigned char raw[kThreads * sizeof(Acc)];
  Acc* shared = reinterpret_cast<Acc*>(raw);
  const int64_t c = blockIdx.x;
  const int64_t P = gridDim.y;
  Acc acc = make(c);
  if (N * S > 0) {
    // The thread's flat indices i = n * S + s over the channel's N planes, from blockIdx.y * blockDim.x
    // + threadIdx.x in steps of P * blockDim.x, as (n, s) advanced by counting instead of dividing.
    const int64_t start = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
    const int64_t step = P * blockDim.x;
    const int64_t step_n = step / S, step_s = step - step_n * S;
    int64_t n = start / S, s = start - n * S;
    while (n < N) {
      const int64_t idx = (n * C + c) * S + s;
      acc.add(static_cast<opmath_t>(x[idx]), load_dy<scalar_t, opmath_t>(dy, idx));
      n += step_n;
      s += step_s;
      if (s >= S) {
        s -= S;
        ++n;
      }
    }
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {  // fixed tree: deterministic
    if (threadIdx.x < half) shared[threadIdx.x].merge(shared[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[c * P + blockIdx.y] = shared[0];
}

template <typename scalar_t, typename opmath_t, typename Acc, typename Make>
__global__ void partials_nhwc(const scalar_t* x, const scalar_t* dy, int64_t rows, int64_t C, Make make,
                              Acc* partials) {
  __shared__ alignas(16) unsigned char raw[kThreads * sizeof(Acc)];
  Acc* shared = reinterpret_cast<Acc*>(raw);
  const int64_t c = blockIdx.x * int64_t(kTileChannels) + threadIdx.x;
  const int64_t P = gridDim.y;
  Acc acc = make(c < C ? c : 0);
  if (c < C) {
    for (int64_t r = blockIdx.y * int64_t(kTileRows) + threadIdx.y; r < rows; r += P * kTileRows) {
      acc.add(static_cast<opmath_t>(x[r * C + c]), load_dy<scalar_t, opmath_t>(dy, r * C + c));
    }
  }
  shared[threadIdx.y * kTileChannels + threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int k = 1; k < kTileRows; ++k) acc.merge(shared[k * kTileChannels + threadIdx.x]);
    partials[c * P + blockIdx.y] = acc;
  }
}

template <typename opmath_t>
struct FinishStats {
  opmath_t* mean;
  opmath_t* var;
  __device__ void operator()(int64_t c, const WelfordAcc<opmath_t>& a) const {
    const opmath_t nan = std::numeric_limits<opmath_t>::quiet_NaN();
    mean[c] = a.count > 0 ? a.shift + a.mean : nan;
    var[c] = a.count > 0 ? a.m2 / static_cast<opmath_t>(a.count) : nan;
  }
};

template <typename opmath_t>
struct FinishSums {
  opmath_t* sum_dy;
  opmath_t* sum_dy_xmu;
  __device__ void operator()(int64_t c, const SumsAcc<opmath_t>& a) const {
    sum_dy[c] = a.sum_dy;
    sum_dy_xmu[c] = a.sum_dy_xmu;
  }
};

template <typename Acc, typename Finish>
__global__ void merge_partials(const Acc* partials, int64_t C, int64_t P, Finish finish) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  Acc acc = partials[c * P];
  for (int64_t p = 1; p < P; ++p) acc.merge(partials[c * P + p]);
  finish(c, acc);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One reduction over every channel: partial kernel for the layout, then the merge.
template <typename scalar_t, typename opmath_t, typename Acc, typename Make, typename Finish>
void reduce_channels(const BnLayout& l, const scalar_t* dy, Make make, Finish finish) {
  const scalar_t* x = l.input.const_data_ptr<scalar_t>();
  const int64_t C = l.C;
  const auto stream = at::cuda::getCurrentCUDAStream();
  int64_t P;
  if (l.channels_last) {
    const int64_t tiles = ceil_div(C, kTileChannels);
    P = std::clamp<int64_t>(ceil_div(kTargetBlocks, tiles), 1, std::min<int64_t>(kMaxPartials, std::max<int64_t>(1, ceil_div(l.rows(), 4 * kTileRows))));
  } else {
    P = std::clamp<int64_t>(ceil_div(kTargetBlocks, C), 1, std::min<int64_t>(kMaxPartials, std::max<int64_t>(1, ceil_div(l.count(), 4 * kThreads))));
  }
  at::Tensor buffer = at::empty({C * P * int64_t(sizeof(Acc))}, l.input.options().dtype(at::kByte));
  Acc* partials = reinterpret_cast<Acc*>(buffer.data_ptr());
  if (l.channels_last) {
    const dim3 grid(ceil_div(C, kTileChannels), P), block(kTileChannels, kTileRows);
    partials_nhwc<scalar_t, opmath_t><<<grid, block, 0, stream>>>(x, dy, l.rows(), C, make, partials);
  } else {
    const dim3 grid(C, P);
    partials_nchw<scalar_t, opmath_t><<<grid, kThreads, 0, stream>>>(x, dy, l.N, C, l.S, make, partials);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  merge_partials<<<ceil_div(C, kThreads), kThreads, 0, stream>>>(partials, C, P, finish);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Per-channel coefficients (fusedopt/batch_norm.h), one thread per channel, for the elementwise kernels.
template <typename opmath_t>
__global__ void forward_coeffs_kernel(int64_t C, const opmath_t* mean, const opmath_t* var, const opmath_t* weight,
                                      const opmath_t* bias, double eps, BnForwardCoeffs<opmath_t>* out) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  out[c] = bn_forward_coeffs<opmath_t>(mean[c], var[c], eps, weight ? weight + c : nullptr, bias ? bias + c : nullptr);
}

template <typename opmath_t>
__global__ void backward_coeffs_kernel(int64_t C, const opmath_t* mean, const opmath_t* var, const opmath_t* weight,
                                       const opmath_t* sum_dy, const opmath_t* sum_dy_xmu, int64_t count, double eps,
                                       BnBackwardCoeffs<opmath_t>* out) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  out[c] = bn_backward_coeffs<opmath_t>(mean[c], var[c], eps, weight ? weight + c : nullptr, sum_dy[c], sum_dy_xmu[c],
                                        count);
}

// The elementwise rules, per element of channel c.
template <typename opmath_t>
struct ForwardRule {
  using Coeffs = BnForwardCoeffs<opmath_t>;
  static constexpr bool kReadsDy = false;
  const Coeffs* coeffs;
  __device__ opmath_t operator()(int64_t c, opmath_t x, opmath_t /*dy*/) const {
    const BnForwardCoeffs<opmath_t> k = coeffs[c];
    return bn_forward(x, k.mean, k.scale, k.shift);
  }
};

template <typename opmath_t>
struct BackwardRule {
  using Coeffs = BnBackwardCoeffs<opmath_t>;
  static constexpr bool kReadsDy = true;
  const Coeffs* coeffs;
  __device__ opmath_t operator()(int64_t c, opmath_t x, opmath_t dy) const {
    const BnBackwardCoeffs<opmath_t> k = coeffs[c];
    return bn_backward(dy, x, k.mean, k.mean_dy, k.xmu_coeff, k.scale);
  }
};

// Elements per thread: 16 bytes (at least two).
template <typename scalar_t>
constexpr int run_length() {
  return sizeof(scalar_t) >= 8 ? 2 : static_cast<int>(16 / sizeof(scalar_t));
}

// The channel of consecutive elements from flat index i: (i / S) % C, channels last i % C.
template <bool kChannelsLast>
struct ChannelCursor {
  int64_t c, s;
  __device__ ChannelCursor(int64_t i, int64_t C, int64_t S) {
    if (kChannelsLast) {
      c = i % C;
      s = 0;
    } else {
      const int64_t q = i / S;
      s = i - q * S;
      c = q % C;
    }
  }
  __device__ void next(int64_t C, int64_t S) {
    if (!kChannelsLast && ++s < S) return;
    s = 0;
    if (++c == C) c = 0;
  }
};

// out[i] = rule(channel of i, x[i], dy[i]) over runs of run_length elements, one run per thread in a
// grid-stride loop; kPacked: x, dy and out are aligned for packs (the last, short run goes one by one).
template <typename scalar_t, bool kChannelsLast, bool kPacked, typename Rule>
__global__ void elementwise_kernel(const scalar_t* x, const scalar_t* dy, scalar_t* out, int64_t numel, int64_t C,
                                   int64_t S, Rule rule) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kRun = run_length<scalar_t>();
  const int64_t runs = (numel + kRun - 1) / kRun;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < runs; r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t first = r * kRun;
    ChannelCursor<kChannelsLast> cursor(first, C, S);
    if (kPacked && first + kRun <= numel) {
      Pack<scalar_t, kRun> xv = load_pack<scalar_t, kRun>(x, first);
      Pack<scalar_t, kRun> dv;
      if (Rule::kReadsDy) dv = load_pack<scalar_t, kRun>(dy, first);
#pragma unroll
      for (int j = 0; j < kRun; ++j) {
        const opmath_t d = Rule::kReadsDy ? static_cast<opmath_t>(dv.v[j]) : opmath_t(0);
        xv.v[j] = static_cast<scalar_t>(rule(cursor.c, static_cast<opmath_t>(xv.v[j]), d));
        cursor.next(C, S);
      }
      store_pack<scalar_t, kRun>(out, first, xv);
    } else {
      for (int64_t i = first; i < numel && i < first + kRun; ++i) {
        const opmath_t d = Rule::kReadsDy ? static_cast<opmath_t>(dy[i]) : opmath_t(0);
        out[i] = static_cast<scalar_t>(rule(cursor.c, static_cast<opmath_t>(x[i]), d));
        cursor.next(C, S);
      }
    }
  }
}

dim3 elementwise_grid(int64_t work) {
  const int64_t max_blocks = 8 * int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  return dim3(static_cast<unsigned>(std::clamp<int64_t>(ceil_div(work, kThreads), 1, max_blocks)));
}

// Launches elementwise_kernel over the layout's elements, choosing the walk and whether packs fit.
template <typename scalar_t, typename Rule>
void launch_elementwise(const BnLayout& l, const scalar_t* dy, scalar_t* out, Rule rule) {
  const int64_t numel = l.input.numel();
  const scalar_t* x = l.input.const_data_ptr<scalar_t>();
  constexpr int kRun = run_length<scalar_t>();
  const bool packed = pack_aligned<scalar_t, kRun>(x) && pack_aligned<scalar_t, kRun>(dy) &&
                      pack_aligned<scalar_t, kRun>(out);
  auto launch = [&](auto kernel) {
    kernel<<<elementwise_grid(ceil_div(numel, kRun)), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x, dy, out, numel, l.C, l.S, rule);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (l.channels_last) {
    if (packed) launch(elementwise_kernel<scalar_t, true, true, Rule>);
    else launch(elementwise_kernel<scalar_t, true, false, Rule>);
  } else {
    if (packed) launch(elementwise_kernel<scalar_t, false, true, Rule>);
    else launch(elementwise_kernel<scalar_t, false, false, Rule>);
  }
}

// coeffs_kernel(C, coeffs_args..., coeffs) fills a buffer of C Rule::Coeffs records, one thread per
// channel; then the elementwise pass reads them through Rule{coeffs}, on the same stream.
template <typename Rule, typename scalar_t, typename CoeffsKernel, typename... CoeffsArgs>
void launch_elementwise_with_coeffs(const BnLayout& l, const scalar_t* dy, scalar_t* out, CoeffsKernel coeffs_kernel,
                                    CoeffsArgs... coeffs_args) {
  using Coeffs = typename Rule::Coeffs;
  at::Tensor buffer = at::empty({l.C * int64_t(sizeof(Coeffs))}, l.input.options().dtype(at::kByte));
  auto* coeffs = reinterpret_cast<Coeffs*>(buffer.data_ptr());
  coeffs_kernel<<<static_cast<unsigned>(ceil_div(l.C, kThreads)), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      l.C, coeffs_args..., coeffs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  launch_elementwise<scalar_t>(l, dy, out, Rule{coeffs});
}

template <typename T>
const T* opt_ptr(const at::Tensor* t) {
  return t != nullptr ? t->const_data_ptr<T>() : nullptr;
}

#define FUSEDOPT_BN_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

// The launches of the shared entries (common/batch_norm_checks.h), which have checked the arguments,
// made the input's device current and allocated the outputs.
void stats_launch(const BnLayout& l, at::Tensor& mean, at::Tensor& var) {
  FUSEDOPT_BN_DISPATCH(l.input.scalar_type(), "fusedopt.batch_norm_stats", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const MakeWelford<scalar_t, opmath_t> make{l.input.const_data_ptr<scalar_t>(), l.channels_last ? 1 : l.S,
                                               l.count() == 0};
    reduce_channels<scalar_t, opmath_t, WelfordAcc<opmath_t>>(
        l, nullptr, make, FinishStats<opmath_t>{mean.data_ptr<opmath_t>(), var.data_ptr<opmath_t>()});
  });
}

void elemt_launch(const BnLayout& l, at::Tensor& out, const at::Tensor& mean, const at::Tensor& var,
                  const at::Tensor* weight, const at::Tensor* bias, double eps) {
  if (l.input.numel() == 0) return;
  FUSEDOPT_BN_DISPATCH(l.input.scalar_type(), "fusedopt.batch_norm_elemt", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch_elementwise_with_coeffs<ForwardRule<opmath_t>, scalar_t>(
        l, nullptr, out.data_ptr<scalar_t>(), forward_coeffs_kernel<opmath_t>,
        mean.const_data_ptr<opmath_t>(), var.const_data_ptr<opmath_t>(), opt_ptr<opmath_t>(weight),
        opt_ptr<opmath_t>(bias), eps);
  });
}

void backward_reduce_launch(const BnLayout& l, const at::Tensor& dy, const at::Tensor& mean, at::Tensor& sum_dy,
                            at::Tensor& sum_dy_xmu) {
  FUSEDOPT_BN_DISPATCH(l.input.scalar_type(), "fusedopt.batch_norm_backward_reduce", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    reduce_channels<scalar_t, opmath_t, SumsAcc<opmath_t>>(
        l, dy.const_data_ptr<scalar_t>(), MakeSums<opmath_t>{mean.const_data_ptr<opmath_t>()},
        FinishSums<opmath_t>{sum_dy.data_ptr<opmath_t>(), sum_dy_xmu.data_ptr<opmath_t>()});
  });
}

void backward_elemt_launch(const BnLayout& l, const at::Tensor& dy, at::Tensor& grad_in, const at::Tensor& mean,
                           const at::Tensor& var, const at::Tensor* weight, const at::Tensor& sum_dy,
                           const at::Tensor& sum_dy_xmu, int64_t count, double eps) {
  if (l.input.numel() == 0) return;
  FUSEDOPT_BN_DISPATCH(l.input.scalar_type(), "fusedopt.batch_norm_backward_elemt", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    launch_elementwise_with_coeffs<BackwardRule<opmath_t>, scalar_t>(
        l, dy.const_data_ptr<scalar_t>(), grad_in.data_ptr<scalar_t>(), backward_coeffs_kernel<opmath_t>,
        mean.const_data_ptr<opmath_t>(), var.const_data_ptr<opmath_t>(), opt_ptr<opmath_t>(weight),
        sum_dy.const_data_ptr<opmath_t>(), sum_dy_xmu.const_data_ptr<opmath_t>(), count, eps);
  });
}

std::tuple<at::Tensor, at::Tensor> batch_norm_stats_cuda(const at::Tensor& input) {
  return run_batch_norm_stats(input, &stats_launch);
}

at::Tensor batch_norm_elemt_cuda(const at::Tensor& input, const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& bias, const at::Tensor& mean, const at::Tensor& var,
                                 double eps) {
  return run_batch_norm_elemt(input, weight, bias, mean, var, eps, &elemt_launch);
}

std::tuple<at::Tensor, at::Tensor> batch_norm_backward_reduce_cuda(const at::Tensor& grad_output,
                                                                   const at::Tensor& input, const at::Tensor& mean) {
  return run_batch_norm_backward_reduce(grad_output, input, mean, &backward_reduce_launch);
}

at::Tensor batch_norm_backward_elemt_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                          const std::optional<at::Tensor>& weight, const at::Tensor& mean,
                                          const at::Tensor& var, const at::Tensor& sum_dy,
                                          const at::Tensor& sum_dy_xmu, int64_t count, double eps) {
  return run_batch_norm_backward_elemt(grad_output, input, weight, mean, var, sum_dy, sum_dy_xmu, count, eps,
                                       &backward_elemt_launch);
}

// The one-process training ops: the two launches of each direction, one after the other on the stream
// (the per-channel coefficients come from device memory, so nothing waits on the host).
void train_launch(const BnLayout& l, at::Tensor& out, at::Tensor& mean, at::Tensor& var, const at::Tensor* weight,
                  const at::Tensor* bias, double eps) {
  stats_launch(l, mean, var);
  elemt_launch(l, out, mean, var, weight, bias, eps);
}

void train_backward_launch(const BnLayout& l, const at::Tensor& dy, at::Tensor& grad_in, const at::Tensor& mean,
                           const at::Tensor& var, const at::Tensor* weight, at::Tensor& sum_dy,
                           at::Tensor& sum_dy_xmu, double eps) {
  backward_reduce_launch(l, dy, mean, sum_dy, sum_dy_xmu);
  backward_elemt_launch(l, dy, grad_in, mean, var, weight, sum_dy, sum_dy_xmu, l.count(), eps);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_train_cuda(const at::Tensor& input,
                                                                     const std::optional<at::Tensor>& weight,
                                                                     const std::optional<at::Tensor>& bias,
                                                                     double eps) {
  return run_batch_norm_train(input, weight, bias, eps, &train_launch);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_train_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const at::Tensor& mean, const at::Tensor& var, double eps) {
  return run_batch_norm_train_backward(grad_output, input, weight, mean, var, eps, &train_backward_launch);
}

// One thread per channel: running[c * stride] updated from batch[c] in acc_t (fusedopt/batch_norm.h).
template <typename acc_t, typename scalar_t, typename stat_t>
__global__ void update_running_kernel(scalar_t* running, int64_t stride, const stat_t* batch, int64_t C,
                                      int64_t count, acc_t momentum, bool is_var) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  running[c * stride] = bn_running_channel<acc_t>(running[c * stride], batch[c], count, momentum, is_var);
}

void update_running_stats_launch(at::Tensor& running, const at::Tensor& batch, bool is_var, int64_t count,
                                 double momentum) {
  const int64_t C = batch.size(0);
  const auto stream = at::cuda::getCurrentCUDAStream();
  dispatch_running_update(running.scalar_type(), batch.scalar_type(), [&](auto acc, auto scalar, auto stat) {
    using acc_t = typename decltype(acc)::type;
    using scalar_t = typename decltype(scalar)::type;
    using stat_t = typename decltype(stat)::type;
    update_running_kernel<acc_t><<<static_cast<unsigned>(ceil_div(C, kThreads)), kThreads, 0, stream>>>(
        running.data_ptr<scalar_t>(), running.stride(0), batch.const_data_ptr<stat_t>(), C, count,
        static_cast<acc_t>(momentum), is_var);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void batch_norm_update_running_stats_cuda(const std::optional<at::Tensor>& running_mean,
                                          const std::optional<at::Tensor>& running_var, const at::Tensor& mean,
                                          const at::Tensor& var, int64_t count, double momentum) {
  run_batch_norm_update_running_stats(running_mean, running_var, mean, var, count, momentum,
                                      &update_running_stats_launch);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("batch_norm_update_running_stats_", &batch_norm_update_running_stats_cuda);
  m.impl("batch_norm_train", &batch_norm_train_cuda);
  m.impl("batch_norm_train_backward", &batch_norm_train_backward_cuda);
  m.impl("batch_norm_stats", &batch_norm_stats_cuda);
  m.impl("batch_norm_elemt", &batch_norm_elemt_cuda);
  m.impl("batch_norm_backward_reduce", &batch_norm_backward_reduce_cuda);
  m.impl("batch_norm_backward_elemt", &batch_norm_backward_elemt_cuda);
}

}  // namespace fusedopt::cuda
