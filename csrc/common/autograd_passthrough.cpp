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

namespace fusedopt {
namespace {

using OptTensor = const std::optional<at::Tensor>&;
using at::TensorList;

// BelowAutograd<kName, Signature>::run: the op named kName redispatched, unboxed, to the keys after
// Autograd and ADInplaceOrView (a fallthrough for these ops), with the key set the dispatcher already
// computed (recomputing it walks every tensor of every list again).
template <const char* kName, class Signature>
struct BelowAutograd;

template <const char* kName, class... Args>
struct BelowAutograd<kName, void(Args...)> {
  static void run(c10::DispatchKeySet keys, Args... args) {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").template typed<void(Args...)>();
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // for whatever the kernels call
    op.redispatch(keys & c10::after_ADInplaceOrView_keyset, args...);
  }
};

constexpr char kSgd[] = "fusedopt::sgd_";
constexpr char kAdam[] = "fusedopt::adam_";
constexpr char kRmsprop[] = "fusedopt::rmsprop_";
constexpr char kAdagrad[] = "fusedopt::adagrad_";
constexpr char kClip[] = "fusedopt::clip_by_total_norm_";

// The schemas' C++ signatures (csrc/schemas/).
using SgdSignature = void(TensorList, TensorList, TensorList, double, double, double, double, bool, bool,
                          bool, OptTensor, OptTensor, OptTensor, bool);
using AdamSignature = void(TensorList, TensorList, TensorList, TensorList, TensorList, TensorList, double,
                           double, double, double, double, bool, bool, bool, TensorList, OptTensor,
                           OptTensor, OptTensor, bool);
using RmspropSignature = void(TensorList, TensorList, TensorList, TensorList, TensorList, TensorList,
                              double, double, double, double, double, bool, bool, OptTensor, OptTensor,
                              OptTensor, bool);
using AdagradSignature = void(TensorList, TensorList, TensorList, TensorList, double, double, double,
                              double, bool, OptTensor, OptTensor, OptTensor, bool);
using ClipSignature = void(TensorList, const at::Tensor&, double);

at::Tensor total_norm_below_autograd(c10::DispatchKeySet keys, TensorList tensors, double norm_type) {
  if (at::GradMode::is_enabled()) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      TORCH_CHECK(!tensors[i].requires_grad(), "fusedopt::total_norm: tensors[", i,
                  "] requires grad, but the norm is not differentiable; call it under torch.no_grad() "
                  "(as fusedopt.nn.utils.get_total_norm does) or use torch.linalg.vector_norm");
    }
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fusedopt::total_norm", "")
                             .typed<at::Tensor(TensorList, double)>();
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.redispatch(keys & c10::after_ADInplaceOrView_keyset, tensors, norm_type);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedopt, Autograd, m) {
  m.impl("sgd_", &BelowAutograd<kSgd, SgdSignature>::run);
  m.impl("adam_", &BelowAutograd<kAdam, AdamSignature>::run);
  m.impl("rmsprop_", &BelowAutograd<kRmsprop, RmspropSignature>::run);
  m.impl("adagrad_", &BelowAutograd<kAdagrad, AdagradSignature>::run);
  m.impl("clip_by_total_norm_", &BelowAutograd<kClip, ClipSignature>::run);
  m.impl("total_norm", &total_norm_below_autograd);
}

}  // namespace fusedopt
