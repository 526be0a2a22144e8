#include "schemas/schemas.h"

namespace fusedopt::schemas {

void define_adam_ops(torch::Library& m) {
  // Adam/AdamW as torch.optim.Adam (decoupled_weight_decay: AdamW). Each state_steps entry (a
  // 1-element float32 tensor per param) is incremented by the op and used for that param's bias
  // correction. max_exp_avg_sqs is empty unless amsgrad; master_params is empty unless master weights are kept. With master_params (float32, one per
  // float16/bfloat16 param; states then float32) the masters are updated and params get their
  // rounded values. With grad_scale, grads are unscaled by it (1 element s: g / s; 2 elements [s, c]:
  // g / s * c, the folded clipping's coefficient c, fusedopt/grad_scale.h) and, unless write_grads is
  // false (folded clipping without GradScaler leaves the grads as they were), written back; with
  // found_inf != 0 nothing is written, step counts included.
  m.def(
      "adam_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
      "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] state_steps, *, "
      "float lr, float beta1, float beta2, float eps, float weight_decay, bool amsgrad, "
      "bool maximize, bool decoupled_weight_decay, Tensor(g!)[] master_params, "
      "Tensor? lr_tensor=None, Tensor? grad_scale=None, Tensor? found_inf=None, "
      "bool write_grads=True) -> ()");
}

}  // namespace fusedopt::schemas
