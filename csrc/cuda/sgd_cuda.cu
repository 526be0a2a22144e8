// fusedopt::sgd_ on CUDA: checks, then the multi-tensor launcher with the shared SGD update rule.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/sgd_checks.h"
#include "cuda/multi_tensor_apply.cuh"
#include "fusedopt/sgd.h"

namespace fusedopt::cuda {
namespace {

// Lists: 0 params, 1 grads, 2 momentum_buffers.
struct SgdOp {
  SgdHyper hyper;
  double lr;
  const float* lr_ptr;      // overrides lr when set
  GradScaleRef grad_scale;  // when set, grads are unscaled by it (written back if write_mask says so)
  const float* found_inf;   // when set and nonzero, nothing happens
  unsigned read_mask;
  unsigned write_mask;

  __device__ bool skip() const { return found_inf != nullptr && *found_inf != 0.f; }

  template <typename opmath_t>
  struct Bound {
    SgdHyper hyper;
    opmath_t lr;
    GradFactors<opmath_t> factors;
    bool unscale;
    __device__ __forceinline__ void operator()(opmath_t& param, opmath_t& grad, opmath_t& buf) const {
      sgd_step(param, grad, buf, hyper, lr, unscale, factors);
    }
  };

  template <typename opmath_t>
  __device__ Bound<opmath_t> bind(void* const* /*tensor_ptrs*/) const {
    return {hyper, lr_ptr ? opmath_t(*lr_ptr) : opmath_t(lr),
            grad_scale.factors<opmath_t>(), grad_scale.has_value()};
  }
};

void sgd_cuda(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, double lr,
              double weight_decay, double momentum, double dampening, bool nesterov, bool maximize,
              bool is_first_step, const std::optional<at::Tensor>& lr_tensor,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
              bool write_grads) {
  const auto view = checked_lists_view<3>({params, grads, momentum_buffers}, [&](const EntryBlockFn& then) {
    check_sgd_inputs(params, grads, momentum_buffers, momentum, lr_tensor, grad_scale, found_inf, then);
  });
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  SgdOp op;
  op.hyper = SgdHyper{weight_decay, momentum, dampening, nesterov, maximize, is_first_step};
  op.lr = lr;
  op.lr_ptr = lr_tensor.has_value() ? lr_tensor->const_data_ptr<float>() : nullptr;
  op.grad_scale = grad_scale_ref(grad_scale);
  op.found_inf = found_inf.has_value() ? found_inf->const_data_ptr<float>() : nullptr;
  op.read_mask = sgd_read_mask(op.hyper);
  op.write_mask = sgd_write_mask(op.hyper, grad_scale.has_value() && write_grads);
  launch_multi_tensor(view, op);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) { m.impl("sgd_", &sgd_cuda); }
TORCH_LIBRARY_IMPL(fusedopt, SparseCUDA, m) { m.impl("sgd_", &sgd_cuda); }

}  // namespace fusedopt::cuda
