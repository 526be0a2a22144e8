// fusedopt::total_norm and fusedopt::clip_by_total_norm_ on CUDA.
//
// total_norm: a small reduction launcher of its own. Tensors (any mix of dtypes) are cut into chunks of
// kNormChunk elements, one block per chunk; each block folds its chunk into one partial (fixed
// thread-to-element map, fixed tree order) written to a workspace; a second one-block kernel combines
// the partials in a fixed order and takes the root. The result does not depend on scheduling, and
// nothing waits on the host. clip_by_total_norm_: the multi-tensor launcher with a scale op whose
// coefficient is computed on the device from total_norm.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/norm_checks.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fusedopt/norms.h"

namespace fusedopt::cuda {
namespace {

constexpr int kNormThreads = 512;
constexpr int64_t kNormChunk = 65536;
// Tensors per launch: the table takes ~21 KiB of the 32 KiB of kernel parameters (CUDA >= 12.1, as the
// multi-tensor launcher's), so 10,000 tensors take 10 launches.
constexpr int kNormTableSize = 1024;

struct NormTable {
  const void* ptr[kNormTableSize];
  int64_t numel[kNormTableSize];
  int32_t first_chunk[kNormTableSize + 1];
  int8_t dtype[kNormTableSize];  // 0 float, 1 double, 2 half, 3 bfloat16
  int32_t count;
  int64_t partial_offset;  // where this launch's partials start in the workspace
};

static_assert(sizeof(NormTable) + sizeof(double) + sizeof(void*) <= 32764, "kernel parameters exceed 32764 bytes");

// This thread's elements of [begin, end) of one tensor (every kNormThreads-th), folded in order. Typed
// per tensor, so the loop has no per-element dtype branch and its loads can be issued ahead. Folded in
// the tensor's math type (float32 for float32/half/bfloat16), as on the CPU, and only then widened to
// acc_t (float64 when the list also holds float64 tensors): float32 grads overflow (p-th powers past
// float32's range) on both devices alike.
template <NormKind K, typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t fold_thread(const void* base, int64_t begin, int64_t end, double p) {
  using op_t = at::opmath_type<scalar_t>;
  const scalar_t* x = static_cast<const scalar_t*>(base);
  const op_t pv = static_cast<op_t>(p);
  op_t acc = norm_identity<op_t>(K);
  for (int64_t i = begin + threadIdx.x; i < end; i += kNormThreads) {
    acc = norm_accumulate<K>(acc, static_cast<op_t>(x[i]), pv);
  }
  return static_cast<acc_t>(acc);
}

// Folds shared[0..kNormThreads) into shared[0] in a fixed tree order.
template <NormKind K, typename acc_t>
__device__ acc_t block_combine(acc_t value, acc_t* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kNormThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] = norm_combine<K>(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  return shared[0];
}

template <NormKind K, typename acc_t>
__global__ void __launch_bounds__(kNormThreads)
    norm_partials_kernel(const __grid_constant__ NormTable table, double p, acc_t* partials) {
  __shared__ acc_t shared[kNormThreads];
  const int chunk = blockIdx.x;
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table.first_chunk[mid] <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const int64_t begin = int64_t(chunk - table.first_chunk[lo]) * kNormChunk;
  const int64_t end = min(table.numel[lo], begin + kNormChunk);
  const void* base = table.ptr[lo];
  acc_t acc;
  switch (table.dtype[lo]) {
    case 0: acc = fold_thread<K, acc_t, float>(base, begin, end, p); break;
    case 1: acc = fold_thread<K, acc_t, double>(base, begin, end, p); break;
    case 2: acc = fold_thread<K, acc_t, at::Half>(base, begin, end, p); break;
    default: acc = fold_thread<K, acc_t, at::BFloat16>(base, begin, end, p); break;
  }
  const acc_t total = block_combine<K>(acc, shared);
  if (threadIdx.x == 0) partials[table.partial_offset + chunk] = total;
}

template <NormKind K, typename acc_t>
__global__ void __launch_bounds__(kNormThreads)
    norm_finish_kernel(const acc_t* partials, int64_t count, double p, acc_t* out) {
  __shared__ acc_t shared[kNormThreads];
  acc_t acc = norm_identity<acc_t>(K);
  for (int64_t i = threadIdx.x; i < count; i += kNormThreads) acc = norm_combine<K>(acc, partials[i]);
  const acc_t total = block_combine<K>(acc, shared);
  if (threadIdx.x == 0) *out = norm_finalize<acc_t>(K, total, p);
}

int8_t dtype_code(c10::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    default: return 3;
  }
}

template <NormKind K, typename acc_t>
void launch_total_norm(at::TensorList tensors, double p, const at::Tensor& out) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  int64_t total_chunks = 0;
  for (const at::Tensor& t : tensors) total_chunks += (t.numel() + kNormChunk - 1) / kNormChunk;
  at::Tensor partials = at::empty({std::max<int64_t>(total_chunks, 1)}, out.options());
  acc_t* partial_ptr = partials.mutable_data_ptr<acc_t>();
  NormTable table;
  table.count = 0;
  table.partial_offset = 0;
  int64_t chunks = 0;
  auto flush = [&] {
    if (table.count == 0) return;
    table.first_chunk[table.count] = int32_t(chunks);
    norm_partials_kernel<K, acc_t><<<unsigned(chunks), kNormThreads, 0, stream>>>(table, p, partial_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    table.partial_offset += chunks;
    table.count = 0;
    chunks = 0;
  };
  for (const at::Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    const int64_t tensor_chunks = (t.numel() + kNormChunk - 1) / kNormChunk;
    if (chunks + tensor_chunks > int64_t(INT32_MAX)) flush();
    table.ptr[table.count] = t.const_data_ptr();
    table.numel[table.count] = t.numel();
    table.dtype[table.count] = dtype_code(t.scalar_type());
    table.first_chunk[table.count] = int32_t(chunks);
    chunks += tensor_chunks;
    if (++table.count == kNormTableSize) flush();
  }
  flush();
  norm_finish_kernel<K, acc_t><<<1, kNormThreads, 0, stream>>>(partial_ptr, total_chunks, p,
                                                               out.mutable_data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename acc_t>
void total_norm_typed(at::TensorList tensors, double p, const at::Tensor& out) {
  switch (norm_kind(p)) {
    case NormKind::Count: return launch_total_norm<NormKind::Count, acc_t>(tensors, p, out);
    case NormKind::Sum: return launch_total_norm<NormKind::Sum, acc_t>(tensors, p, out);
    case NormKind::SumSquares: return launch_total_norm<NormKind::SumSquares, acc_t>(tensors, p, out);
    case NormKind::Max: return launch_total_norm<NormKind::Max, acc_t>(tensors, p, out);
    case NormKind::Min: return launch_total_norm<NormKind::Min, acc_t>(tensors, p, out);
    default: return launch_total_norm<NormKind::Power, acc_t>(tensors, p, out);
  }
}

at::Tensor total_norm_cuda(at::TensorList tensors, double norm_type) {
  check_total_norm_inputs(tensors, norm_type);
  TORCH_CHECK(!tensors.empty(), "fusedopt.total_norm: tensors is empty; expected at least one tensor");
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const c10::ScalarType dtype = norm_result_dtype(tensors);
  at::Tensor out = at::empty({}, tensors[0].options().dtype(dtype));
  if (dtype == at::kDouble) total_norm_typed<double>(tensors, norm_type, out);
  else total_norm_typed<float>(tensors, norm_type, out);
  return out;
}

// Lists: 0 the tensors to scale.
struct ClipScaleOp {
  const void* total_norm;
  bool norm_is_double;
  double max_norm;
  unsigned read_mask = 0b1u;
  unsigned write_mask = 0b1u;

  // Clipping inactive (coefficient 1): x * 1 == x, so no block reads or writes anything; decided on
  // the device, so still no host synchronisation.
  __device__ bool skip() const { return coefficient<double>() == 1.0; }

  template <typename S>
  __device__ S coefficient() const {
    // torch's coefficient, in the norm's dtype.
    if (norm_is_double) return S(clip_coefficient<double>(*static_cast<const double*>(total_norm), max_norm));
    return S(clip_coefficient<float>(*static_cast<const float*>(total_norm), max_norm));
  }

  template <typename opmath_t>
  struct Bound {
    opmath_t coef;
    __device__ __forceinline__ void operator()(opmath_t& x) const { x = x * coef; }
  };

  template <typename opmath_t>
  __device__ Bound<opmath_t> bind(void* const* /*tensor_ptrs*/) const {
    // torch's coefficient, in the norm's dtype, then applied in the tensor's math type.
    return {coefficient<opmath_t>()};
  }
};

void clip_by_total_norm_cuda(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  check_clip_inputs(tensors, total_norm);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  ClipScaleOp op;
  op.total_norm = total_norm.const_data_ptr();
  op.norm_is_double = total_norm.scalar_type() == at::kDouble;
  op.max_norm = max_norm;
  launch_multi_tensor(make_lists_view<1>({tensors}), op);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("total_norm", &total_norm_cuda);
  m.impl("clip_by_total_norm_", &clip_by_total_norm_cuda);
}
TORCH_LIBRARY_IMPL(fusedopt, SparseCUDA, m) {
  m.impl("total_norm", &total_norm_cuda);
  m.impl("clip_by_total_norm_", &clip_by_total_norm_cuda);
}

}  // namespace fusedopt::cuda
