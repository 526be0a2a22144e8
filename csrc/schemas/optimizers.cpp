#include "schemas/schemas.h"

namespace fusedopt::schemas {

void define_optimizer_ops(torch::Library& m) {
  // SGD with momentum/dampening/Nesterov/weight decay/maximize, as torch.optim.SGD. is_first_step sets
  // each buffer to its (decayed) gradient. With grad_scale, grads are unscaled by it (1 element s:
  // g / s; 2 elements [s, c]: g / s * c, the folded clipping's coefficient c, fusedopt/grad_scale.h)
  // and, unless write_grads is false (folded clipping without GradScaler leaves the grads as they
  // were), written back; with found_inf != 0 nothing is written.
  m.def(
      "sgd_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, *, float lr, "
      "float weight_decay, float momentum, float dampening, bool nesterov, bool maximize, "
      "bool is_first_step, Tensor? lr_tensor=None, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, bool write_grads=True) -> ()");
}

}  // namespace fusedopt::schemas
