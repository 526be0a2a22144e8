// SGD on CPU: compiled once per CPU variant (see csrc/cpu/dispatch.h).
#include "cpu/kernels/kernels.h"
#include "cpu/multi_tensor_cpu.h"

namespace fusedopt::cpu::CPU_CAPABILITY {

void sgd_kernel(const TensorListsView<3>& lists, const SgdCpuArgs& args) {
  const SgdHyper& h = args.hyper;
  const unsigned read_mask = sgd_read_mask(h);
  const unsigned write_mask = sgd_write_mask(h, args.unscale_grads);
  for_each_segment_parallel(lists, [&](size_t i, int64_t begin, int64_t end) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lists.dtype[i], "fusedopt.sgd_", [&] {
      using opmath_t = typename VecIO<scalar_t>::opmath_t;
      using V = Vectorized<opmath_t>;
      const opmath_t lr = static_cast<opmath_t>(args.lr);
      const V scale(static_cast<opmath_t>(args.grad_scale));
      vectorized_map(typed_slice<scalar_t>(lists, i, begin), end - begin, read_mask, write_mask,
                     [&](V& param, V& grad, V& buf) {
                       sgd_step(param, grad, buf, h, lr, args.unscale_grads, scale);
                     });
    });
  });
}

}  // namespace fusedopt::cpu::CPU_CAPABILITY
