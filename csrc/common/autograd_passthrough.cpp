// Autograd-key kernels for the ops that mutate tensor lists and return nothing (the optimizer steps and
// clip_by_total_norm_), and for total_norm: they only step below autograd.
//
// Why: every tensor carries an Autograd dispatch key, so without a kernel there the dispatcher runs
// torch's boxed autograd fallback, which copies each list element into an IValue and checks its
// requires_grad: ~0.2 us per param and step (several ms at 20,000 params), for nothing, since the
// mutating ops return no tensor a hook could be put on. Like torch's own fused optimizers, they leave
// version counters alone (tests/test_build.py::test_optimizer_ops_skip_the_autograd_fallback).
// total_norm is not differentiable (torch's get_total_norm runs under no_grad too): with grad mode on
// and an input that requires grad it raises instead of returning a norm without a gradient.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include "common/op_signatures.h"

namespace fusedopt {
namespace {

using at::TensorList;
namespace sig = op_signatures;

// BelowAutograd<kName, Signature>::run: the op named kName redispatched, unboxed, to the keys after
// Autograd and ADInplaceOrView (a fallthrough for these ops), with the key set the dispatcher already
// computed (recomputing it walks every tensor of every list again).
template <const char* kName, class Signature>
struct BelowAutograd;

template <const char* kName, class Result, class... Args>
struct BelowAutograd<kName, Result(Args...)> {
  static Result run(c10::DispatchKeySet keys, Args... args) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // for whatever the kernels call
    return sig::typed_op<kName, Result(Args...)>().redispatch(keys & c10::after_ADInplaceOrView_keyset,
                                                              args...);
  }
};

at::Tensor total_norm_below_autograd(c10::DispatchKeySet keys, TensorList tensors, double norm_type) {
  if (at::GradMode::is_enabled()) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      TORCH_CHECK(!tensors[i].requires_grad(), "fusedopt::total_norm: tensors[", i,
                  "] requires grad, but the norm is not differentiable; call it under torch.no_grad() "
                  "(as fusedopt.nn.utils.get_total_norm does) or use torch.linalg.vector_norm");
    }
  }
  return BelowAutograd<sig::kTotalNormName, sig::TotalNorm>::run(keys, tensors, norm_type);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, Autograd, m) {
  m.impl("sgd_", &BelowAutograd<sig::kSgdName, sig::Sgd>::run);
  m.impl("adam_", &BelowAutograd<sig::kAdamName, sig::Adam>::run);
  m.impl("rmsprop_", &BelowAutograd<sig::kRmspropName, sig::Rmsprop>::run);
  m.impl("adagrad_", &BelowAutograd<sig::kAdagradName, sig::Adagrad>::run);
  m.impl("clip_by_total_norm_", &BelowAutograd<sig::kClipByTotalNormName, sig::ClipByTotalNorm>::run);
  m.impl("total_norm", &total_norm_below_autograd);
}

}  // namespace fusedopt
