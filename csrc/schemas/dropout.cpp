#include "schemas/schemas.h"

namespace fusedopt::schemas {

void define_dropout_ops(torch::Library& m) {
  // Dropout with counter-based masks (csrc/include/fusedopt/dropout.h). Element i (row-major logical
  // order) belongs to group i / group_size; each group is kept with probability 1 - p and scaled by
  // 1 / (1 - p). Returns the output (input's shape) and the packed mask: one bit per group,
  // ceil(numel / group_size / 8) uint8. Without a seed, seed and offset come from the default generator
  // of input's device, which they advance; with a seed, the mask is a function of (seed, offset) only,
  // identical on every device.
  //
  // keep_layout=False: the output is contiguous and bit i belongs to group i. keep_layout=True (as
  // torch's dropout keeps its input's layout): the output has input's strides (for an input with gaps
  // or overlaps, those torch's empty_like infers), and with group_size 1 bit k belongs to the output's
  // k-th element in memory order, so its backward must be told the output's strides
  // (dropout_backward's output_strides); with group_size > 1 the bits are in group order as before.
  //
  // Tagged nondeterministic_seeded: two calls with equal arguments draw different masks, so compiled
  // graphs must neither merge them nor recompute one in backward (fusedopt/_ops/dropout.py adds what
  // torch versions that do not read the tag need).
  m.def(
      "dropout(Tensor input, float p, int group_size=1, *, int? seed=None, int? offset=None, "
      "bool keep_layout=False) -> (Tensor output, Tensor mask)",
      {at::Tag::nondeterministic_seeded});
  // The same, writing the output into input; returns the mask. keep_layout=True: input is computed
  // where it is (through a dense copy only when it has gaps or overlaps; the mask then follows that
  // copy's memory order, the strides torch's empty_like infers).
  m.def(
      "dropout_(Tensor(a!) input, float p, int group_size=1, *, int? seed=None, int? offset=None, "
      "bool keep_layout=False) -> Tensor mask",
      {at::Tag::nondeterministic_seeded});
  // grad_input = grad_output * keep / (1 - p) with the mask returned by the forward op. output_strides:
  // the strides of the forward's output when it was called with keep_layout=True; grad_input has them.
  m.def(
      "dropout_backward(Tensor grad_output, Tensor mask, float p, int group_size=1, *, "
      "int[]? output_strides=None) -> Tensor");
  // Philox4x32-10 of each row of counters (N, 4) with keys (N, 2), words held in int64 (tests and the
  // known-answer vectors). torch_engine: computed by torch's own at::philox_engine instead (CPU only).
  m.def("_philox4x32_10(Tensor counters, Tensor keys, bool torch_engine=False) -> Tensor");
}

}  // namespace fusedopt::schemas
