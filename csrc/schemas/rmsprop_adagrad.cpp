#include "schemas/schemas.h"

namespace fusedopt::schemas {

void define_rmsprop_adagrad_ops(torch::Library& m) {
  // RMSprop as torch.optim.RMSprop: momentum_buffers are used (and required) when momentum > 0,
  // grad_avgs when centered; either list is otherwise empty. Each call adds 1 to every state_steps
  // entry (float32, one element, on its param's device). With grad_scale, grads are unscaled by it
  // (1 element s: g / s; 2 elements [s, c]: g / s * c, the folded clipping's coefficient c,
  // fusedopt/grad_scale.h) and written back unless write_grads is false (folded clipping without
  // GradScaler leaves the grads as they were); with found_inf != 0 nothing is written, step counts
  // included.
  m.def(
      "rmsprop_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] square_avgs, "
      "Tensor(d!)[] momentum_buffers, Tensor(e!)[] grad_avgs, Tensor(f!)[] state_steps, *, float lr, "
      "float alpha, float eps, float weight_decay, float momentum, bool centered, bool maximize, "
      "Tensor? lr_tensor=None, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "bool write_grads=True) -> ()");
  // Adagrad as torch.optim.Adagrad (dense grads): each call adds 1 to every state_steps entry and uses
  // it for that param's clr = lr / (1 + (step - 1) * lr_decay). grad_scale, found_inf and
  // write_grads as in rmsprop_.
  m.def(
      "adagrad_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] state_sums, "
      "Tensor(d!)[] state_steps, *, float lr, float lr_decay, float weight_decay, float eps, "
      "bool maximize, Tensor? lr_tensor=None, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, bool write_grads=True) -> ()");
}

}  // namespace fusedopt::schemas
