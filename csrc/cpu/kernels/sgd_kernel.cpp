// SGD on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
#include "cpu/kernels/kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {

void sgd_kernel(const TensorListsView<3>& lists, const SgdCpuArgs& args) {
  const SgdHyper& h = args.hyper;
  // The masks (which lists are read and written) become template arguments.
  with_constant(h.momentum != 0, [&](auto has_buffer) {
    with_constant(h.first_step, [&](auto first_step) {
      with_grad_scaling(args.unscale_grads, args.write_grads, [&](auto unscale, auto store) {
        constexpr SgdHyper flags{0, has_buffer ? 1.0 : 0.0, 0, false, false, first_step};
        constexpr unsigned kRead = sgd_read_mask(flags);
        constexpr unsigned kWrite = sgd_write_mask(flags, store);
        for_each_segment_parallel(lists, [&](size_t i, int64_t begin, int64_t end) {
          AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lists.dtype[i], "fusedopt.sgd_", [&] {
            using opmath_t = typename VecIO<scalar_t>::opmath_t;
            using V = Vectorized<opmath_t>;
            const opmath_t lr = static_cast<opmath_t>(args.lr);
            const auto factors = splat_grad_factors<V>(args.grad_factors);
            vectorized_map<kRead, kWrite>(typed_slice<scalar_t>(lists, i, begin), end - begin,
                                          [&](V& param, V& grad, V& buf) {
                                            sgd_step(param, grad, buf, h, lr, unscale, factors);
                                          },
                                          next_arrays(lists, i));
          });
        });
      });
    });
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
