// RMSprop on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
#include "cpu/kernels/rmsprop_adagrad_kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {

void rmsprop_kernel(const TensorListsView<5>& lists, const RmspropCpuArgs& args) {
  const RmspropHyper& h = args.hyper;
  // Which lists are read and written, and the shape of the rule, become template arguments.
  with_constant(h.momentum > 0, [&](auto has_momentum) {
    with_constant(h.centered, [&](auto centered) {
      with_grad_scaling(args.unscale_grads, args.write_grads, [&](auto unscale, auto store) {
        constexpr unsigned kRead = rmsprop_read_mask(has_momentum, centered);
        constexpr unsigned kWrite = rmsprop_write_mask(has_momentum, centered, store);
        for_each_segment_parallel(lists, [&](size_t i, int64_t begin, int64_t end) {
          AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lists.dtype[i], "fusedopt.rmsprop_", [&] {
            using opmath_t = typename VecIO<scalar_t>::opmath_t;
            using V = Vectorized<opmath_t>;
            const auto coeffs = RmspropCoeffs<opmath_t>::make(h, args.lr);
            const auto factors = splat_grad_factors<V>(args.grad_factors);
            vectorized_map<kRead, kWrite>(
                typed_slice<scalar_t>(lists, i, begin), end - begin,
                [&](V& param, V& grad, V& square_avg, V& buf, V& grad_avg) {
                  rmsprop_step<decltype(has_momentum)::value, decltype(centered)::value>(param, grad, square_avg, buf, grad_avg, coeffs,
                                                       unscale, factors);
                },
                next_arrays(lists, i));
          });
        });
      });
    });
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
