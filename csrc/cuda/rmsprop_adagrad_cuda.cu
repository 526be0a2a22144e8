// fusedopt::rmsprop_ and fusedopt::adagrad_ on CUDA: checks, then two launches: one counts the steps
// (increment_step_counts), one runs the multi-tensor launcher with the shared update rule. Both honour
// found_inf on the device, so a GradScaler step needs no host synchronisation and the pair can be
// captured in a CUDA graph.
#include <array>

#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/rmsprop_adagrad_checks.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fusedopt/adagrad.h"
#include "fusedopt/rmsprop.h"

namespace fusedopt::cuda {
namespace {

// Lists: 0 params, 1 grads, 2 square_avgs, 3 momentum_buffers, 4 grad_avgs.
struct RmspropOp {
  RmspropHyper hyper;
  double lr;
  const float* lr_ptr;      // overrides lr when set
  GradScaleRef grad_scale;  // when set, grads are unscaled by it (written back if write_mask says so)
  const float* found_inf;   // when set and nonzero, nothing happens
  unsigned read_mask;
  unsigned write_mask;

  __device__ bool skip() const { return found_inf != nullptr && *found_inf != 0.f; }

  template <typename opmath_t>
  struct Bound {
    RmspropCoeffs<opmath_t> coeffs;
    GradFactors<opmath_t> factors;
    bool unscale;
    bool momentum;
    bool centered;
    __device__ __forceinline__ void operator()(opmath_t& param, opmath_t& grad, opmath_t& square_avg,
                                               opmath_t& buf, opmath_t& grad_avg) const {
      // The four shapes of the rule, each compiled without the branches of the others.
      if (momentum) {
        if (centered) rmsprop_step<true, true>(param, grad, square_avg, buf, grad_avg, coeffs, unscale, factors);
        else rmsprop_step<true, false>(param, grad, square_avg, buf, grad_avg, coeffs, unscale, factors);
      } else {
        if (centered) rmsprop_step<false, true>(param, grad, square_avg, buf, grad_avg, coeffs, unscale, factors);
        else rmsprop_step<false, false>(param, grad, square_avg, buf, grad_avg, coeffs, unscale, factors);
      }
    }
  };

  template <typename opmath_t>
  __device__ Bound<opmath_t> bind(void* const* /*tensor_ptrs*/) const {
    const double lr_value = lr_ptr ? double(*lr_ptr) : lr;
    return {RmspropCoeffs<opmath_t>::make(hyper, lr_value),
            grad_scale.factors<opmath_t>(), grad_scale.has_value(), hyper.momentum > 0,
            hyper.centered};
  }
};

// Lists: 0 params, 1 grads, 2 state_sums, 3 state_steps (read per tensor in bind(), never walked).
struct AdagradOp {
  AdagradHyper hyper;
  double lr;
  const float* lr_ptr;
  GradScaleRef grad_scale;
  const float* found_inf;
  unsigned read_mask;
  unsigned write_mask;

  __device__ bool skip() const { return found_inf != nullptr && *found_inf != 0.f; }

  template <typename opmath_t>
  struct Bound {
    AdagradCoeffs<opmath_t> coeffs;
    GradFactors<opmath_t> factors;
    bool unscale;
    __device__ __forceinline__ void operator()(opmath_t& param, opmath_t& grad, opmath_t& state_sum,
                                               opmath_t& /*step*/) const {
      adagrad_step(param, grad, state_sum, coeffs, unscale, factors);
    }
  };

  template <typename opmath_t>
  __device__ Bound<opmath_t> bind(void* const* tensor_ptrs) const {
    const double step = double(*static_cast<const float*>(tensor_ptrs[3]));  // already incremented
    const double lr_value = lr_ptr ? double(*lr_ptr) : lr;
    return {AdagradCoeffs<opmath_t>::make(hyper, adagrad_clr(lr_value, step, hyper.lr_decay)),
            grad_scale.factors<opmath_t>(), grad_scale.has_value()};
  }
};

void rmsprop_cuda(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                  at::TensorList momentum_buffers, at::TensorList grad_avgs, at::TensorList state_steps,
                  double lr, double alpha, double eps, double weight_decay, double momentum, bool centered,
                  bool maximize, const std::optional<at::Tensor>& lr_tensor,
                  const std::optional<at::Tensor>& grad_scale,
                  const std::optional<at::Tensor>& found_inf, bool write_grads) {
  const at::TensorList none;
  const std::array<at::TensorList, 5> lists{params, grads, square_avgs, momentum > 0 ? momentum_buffers : none,
                                            centered ? grad_avgs : none};
  // The views are filled in the checks' walk over the tensors (run_entry_checks' `then`).
  auto view = sized_lists_view<5>(params.size());
  auto steps = sized_lists_view<1>(params.size());
  check_rmsprop_inputs(params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps, momentum,
                       centered, lr_tensor, grad_scale, found_inf, [&](size_t begin, size_t end) {
                         fill_lists_view(view, lists, begin, end);
                         fill_lists_view(steps, {state_steps}, begin, end);
                       });
  finish_lists_view(view);
  finish_lists_view(steps);
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  const float* found_inf_ptr = found_inf.has_value() ? found_inf->const_data_ptr<float>() : nullptr;
  increment_step_counts(steps, 0, found_inf_ptr);  // before the update reads them
  RmspropOp op;
  op.hyper = RmspropHyper{alpha, eps, weight_decay, momentum, centered, maximize};
  op.lr = lr;
  op.lr_ptr = lr_tensor.has_value() ? lr_tensor->const_data_ptr<float>() : nullptr;
  op.grad_scale = grad_scale_ref(grad_scale);
  op.found_inf = found_inf_ptr;
  op.read_mask = rmsprop_read_mask(momentum > 0, centered);
  op.write_mask = rmsprop_write_mask(momentum > 0, centered, grad_scale.has_value() && write_grads);
  launch_multi_tensor(view, op);
}

void adagrad_cuda(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                  at::TensorList state_steps, double lr, double lr_decay, double weight_decay, double eps,
                  bool maximize, const std::optional<at::Tensor>& lr_tensor,
                  const std::optional<at::Tensor>& grad_scale,
                  const std::optional<at::Tensor>& found_inf, bool write_grads) {
  const auto view = checked_lists_view<4>({params, grads, state_sums, state_steps}, [&](const EntryBlockFn& then) {
    check_adagrad_inputs(params, grads, state_sums, state_steps, lr_tensor, grad_scale, found_inf, then);
  });
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  const float* found_inf_ptr = found_inf.has_value() ? found_inf->const_data_ptr<float>() : nullptr;
  increment_step_counts(view, 3, found_inf_ptr);  // before the update reads them
  AdagradOp op;
  op.hyper = AdagradHyper{lr_decay, weight_decay, eps, maximize};
  op.lr = lr;
  op.lr_ptr = lr_tensor.has_value() ? lr_tensor->const_data_ptr<float>() : nullptr;
  op.grad_scale = grad_scale_ref(grad_scale);
  op.found_inf = found_inf_ptr;
  op.read_mask = adagrad_read_mask();
  op.write_mask = adagrad_write_mask(grad_scale.has_value() && write_grads);
  launch_multi_tensor(view, op);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("rmsprop_", &rmsprop_cuda);
  m.impl("adagrad_", &adagrad_cuda);
}
TORCH_LIBRARY_IMPL(fusedopt, SparseCUDA, m) {
  m.impl("rmsprop_", &rmsprop_cuda);
  m.impl("adagrad_", &adagrad_cuda);
}

}  // namespace fusedopt::cuda
