#include "schemas/schemas.h"

namespace fusedopt::schemas {

void define_clipping_ops(torch::Library& m) {
  // The p-norm of the concatenation of all tensors (one device, any mix of float dtypes), as a 0-dim
  // tensor on that device: float64 when any tensor is float64, else float32 (also for float16/bfloat16
  // inputs, so a norm beyond their range stays finite). norm_type: 0 (nonzeros), inf, -inf or any p.
  m.def("total_norm(Tensor[] tensors, float norm_type) -> Tensor");
  // Multiplies every tensor by clamp(max_norm / (total_norm + 1e-6), max=1), computed on the device in
  // total_norm's dtype as torch.nn.utils.clip_grads_with_norm_ does.
  m.def("clip_by_total_norm_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm) -> ()");
}

}  // namespace fusedopt::schemas
