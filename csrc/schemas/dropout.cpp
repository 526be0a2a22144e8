#include "schemas/schemas.h"

namespace fusedopt::schemas {

void define_dropout_ops(torch::Library& m) {
  // Dropout with counter-based masks (csrc/include/fusedopt/dropout.h). Element i (row-major logical
  // order) belongs to group i / group_size; each group is kept with probability 1 - p and scaled by
  // 1 / (1 - p). Returns the output (contiguous, input's shape) and the packed mask: one bit per group,
  // ceil(numel / group_size / 8) uint8. Without a seed, seed and offset come from the default generator
  // of input's device, which they advance; with a seed, the mask is a function of (seed, offset) only,
  // identical on every device.
  //
  // Tagged nondeterministic_seeded: two calls with equal arguments draw different masks, so compiled
  // graphs must neither merge them nor recompute one in backward (fusedopt/_ops/dropout.py adds what
  // torch versions that do not read the tag need).
  m.def(
      "dropout(Tensor input, float p, int group_size=1, *, int? seed=None, int? offset=None) "
      "-> (Tensor output, Tensor mask)",
      {at::Tag::nondeterministic_seeded});
  // The same, writing the output into input; returns the mask.
  m.def(
      "dropout_(Tensor(a!) input, float p, int group_size=1, *, int? seed=None, int? offset=None) "
      "-> Tensor mask",
      {at::Tag::nondeterministic_seeded});
  // grad_input = grad_output * keep / (1 - p) with the mask returned by the forward op.
  m.def("dropout_backward(Tensor grad_output, Tensor mask, float p, int group_size=1) -> Tensor");
  // Philox4x32-10 of each row of counters (N, 4) with keys (N, 2), words held in int64 (tests and the
  // known-answer vectors). torch_engine: computed by torch's own at::philox_engine instead (CPU only).
  m.def("_philox4x32_10(Tensor counters, Tensor keys, bool torch_engine=False) -> Tensor");
}

}  // namespace fusedopt::schemas
