// Adagrad on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
#include "cpu/kernels/rmsprop_adagrad_kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {

void adagrad_kernel(const TensorListsView<4>& lists, const AdagradCpuArgs& args) {
  const AdagradHyper& h = args.hyper;
  with_grad_scaling(args.unscale_grads, args.write_grads, [&](auto unscale, auto store) {
    constexpr unsigned kRead = adagrad_read_mask();
    constexpr unsigned kWrite = adagrad_write_mask(store);
    for_each_segment_parallel(lists, [&](size_t i, int64_t begin, int64_t end) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lists.dtype[i], "fusedopt.adagrad_", [&] {
        using opmath_t = typename VecIO<scalar_t>::opmath_t;
        using V = Vectorized<opmath_t>;
        // List 3 holds the tensor's step count, not elements: read once, never walked.
        const double step = *static_cast<const float*>(lists.ptrs[i][3]);
        const auto coeffs = AdagradCoeffs<opmath_t>::make(h, adagrad_clr(args.lr, step, h.lr_decay));
        const auto factors = splat_grad_factors<V>(args.grad_factors);
        const auto all = typed_slice<scalar_t>(lists, i, begin);
        const std::array<scalar_t*, 3> arrays{all[0], all[1], all[2]};
        vectorized_map<kRead, kWrite>(arrays, end - begin, [&](V& param, V& grad, V& state_sum) {
          adagrad_step(param, grad, state_sum, coeffs, unscale, factors);
        }, next_arrays(lists, i));
      });
    });
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
