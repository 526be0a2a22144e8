// fusedopt::adam_ on CUDA: checks, one launch that increments the step counts, then the multi-tensor
// launcher with the shared Adam update rule (each block reads its tensor's step count in bind()).
// float16/bfloat16 params with float32 masters take a small kernel of their own (mixed dtypes).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/adam_checks.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fusedopt/adam.h"

namespace fusedopt::cuda {
namespace {

// Lists: 0 params, 1 grads, 2 exp_avgs, 3 exp_avg_sqs, 4 max_exp_avg_sqs, 5 state_steps (read by
// bind(), never walked), 6 master_params (master kernel only).
struct AdamOp {
  AdamHyper hyper;
  double lr;
  const float* lr_ptr;      // overrides lr when set
  GradScaleRef grad_scale;  // when set, grads are unscaled by it (written back if write_mask says so)
  const float* found_inf;   // when set and nonzero, nothing happens
  unsigned read_mask;
  unsigned write_mask;

  __device__ bool skip() const { return found_inf != nullptr && *found_inf != 0.f; }

  template <typename opmath_t>
  struct Bound {
    AdamHyper hyper;
    AdamScalars<opmath_t> s;
    GradFactors<opmath_t> factors;
    bool unscale;
    __device__ __forceinline__ void operator()(opmath_t& param, opmath_t& grad, opmath_t& exp_avg,
                                               opmath_t& exp_avg_sq, opmath_t& max_sq,
                                               opmath_t& /*step*/) const {
      adam_step(param, grad, exp_avg, exp_avg_sq, max_sq, hyper, s, unscale, factors);
    }
  };

  template <typename opmath_t>
  __device__ Bound<opmath_t> bind(void* const* tensor_ptrs) const {
    const double step = *static_cast<const float*>(tensor_ptrs[kAdamStepList]);
    const double lr_value = lr_ptr ? double(*lr_ptr) : lr;
    return {hyper, adam_scalars<opmath_t>(hyper, lr_value, step),
            grad_scale.factors<opmath_t>(), grad_scale.has_value()};
  }
};

constexpr int kMasterLists = 7;

// Master weights: half_t params/grads, float32 masters and states. One block per chunk as in
// multi_tensor_apply.cuh, one element per thread and iteration.
template <typename half_t>
__global__ void __launch_bounds__(kThreads)
    adam_master_kernel(const __grid_constant__ TensorTable<kMasterLists> table,
                       const __grid_constant__ AdamOp op) {
  if (op.skip()) return;
  const BlockChunk chunk = block_chunk(table);
  const int64_t begin = chunk.begin;
  const int n = chunk.n;
  void* tensor_ptrs[kMasterLists];
#pragma unroll
  for (int k = 0; k < kMasterLists; ++k) tensor_ptrs[k] = table.ptr[k][chunk.tensor];
  const auto update = op.template bind<float>(tensor_ptrs);
  half_t* param = static_cast<half_t*>(tensor_ptrs[0]) + begin;
  half_t* grad = static_cast<half_t*>(tensor_ptrs[1]) + begin;
  float* exp_avg = static_cast<float*>(tensor_ptrs[2]) + begin;
  float* exp_avg_sq = static_cast<float*>(tensor_ptrs[3]) + begin;
  float* max_sq = op.hyper.amsgrad ? static_cast<float*>(tensor_ptrs[4]) + begin : nullptr;
  float* master = static_cast<float*>(tensor_ptrs[6]) + begin;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float w = master[j], g = static_cast<float>(grad[j]), m = exp_avg[j], v = exp_avg_sq[j];
    float mx = max_sq ? max_sq[j] : 0.f;
    float unused_step = 0.f;
    update(w, g, m, v, mx, unused_step);
    master[j] = w;
    exp_avg[j] = m;
    exp_avg_sq[j] = v;
    if (max_sq) max_sq[j] = mx;
    param[j] = static_cast<half_t>(w);
    if (op.write_mask & 0b10u) grad[j] = static_cast<half_t>(g);
  }
}

void adam_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
               double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
               bool maximize, bool decoupled_weight_decay, at::TensorList master_params,
               const std::optional<at::Tensor>& lr_tensor, const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf, bool write_grads) {
  // The view is filled in the checks' walk over the tensors (checked_lists_view); with master_params
  // it has a seventh list.
  const auto check = [&](const EntryBlockFn& then) {
    check_adam_inputs(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad,
                      master_params, lr_tensor, grad_scale, found_inf, then);
  };
  const bool has_master = !master_params.empty();
  TensorListsView<6> view;
  TensorListsView<kMasterLists> master_view;
  if (!has_master) {
    view = checked_lists_view<6>({params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps}, check);
  } else {
    master_view = checked_lists_view<kMasterLists>(
        {params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, master_params}, check);
  }
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  const float* found_inf_ptr = found_inf.has_value() ? found_inf->const_data_ptr<float>() : nullptr;

  AdamOp op;
  op.hyper = AdamHyper{beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay};
  op.lr = lr;
  op.lr_ptr = lr_tensor.has_value() ? lr_tensor->const_data_ptr<float>() : nullptr;
  op.grad_scale = grad_scale_ref(grad_scale);
  op.found_inf = found_inf_ptr;
  op.read_mask = adam_read_mask(amsgrad);
  op.write_mask = adam_write_mask(amsgrad, grad_scale.has_value() && write_grads);
  // Step counts first (torch: step_t += 1, then the update reads the new count), from the update's
  // view of them.
  if (!has_master) {
    increment_step_counts(view, kAdamStepList, found_inf_ptr);
    launch_multi_tensor(view, op);
    return;
  }
  increment_step_counts(master_view, kAdamStepList, found_inf_ptr);
  for_each_table(master_view, at::kHalf, adam_master_kernel<at::Half>, op);
  for_each_table(master_view, at::kBFloat16, adam_master_kernel<at::BFloat16>, op);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) { m.impl("adam_", &adam_cuda); }
TORCH_LIBRARY_IMPL(fusedopt, SparseCUDA, m) { m.impl("adam_", &adam_cuda); }

}  // namespace fusedopt::cuda
