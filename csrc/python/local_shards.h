// DTensor params (FSDP2's fully_shard, tensor parallelism) are stepped on their local shards: the
// kernels see each DTensor's _local_tensor, so one fused launch per group covers them with no
// gathering and no per-param Python. The optimizer state of a DTensor param stays a DTensor with the
// param's mesh and placements (what torch's optimizers store, which torch.distributed.checkpoint
// saves and loads); its local shard is what the kernel updates in place.
#pragma once

#include <string>

#include <torch/extension.h>

namespace fusedopt::python {

// Whether t is a torch.distributed.tensor.DTensor. A tensor without the Python dispatch key (every
// plain tensor and Parameter) answers with one bit test; Python subclasses are classified once per
// type and cached.
bool is_dtensor(const at::Tensor& t);

// The local shard of a DTensor (its _local_tensor); t itself when t is not a DTensor.
at::Tensor local_or_self(const at::Tensor& t);

// The local shards of the DTensor param `param` (its Python object) and of its grad `grad`. Throws,
// naming `where` and `index`, when the grad is not a DTensor placed like the param, except for a grad
// that is Partial where the param is Replicate (SequenceParallel's norm layers): then `*partial` is
// set, and the step reduces that grad before anything runs (fusedopt/optim/_common.py,
// reduce_partial_grads); its local shard is the shape of the param's.
std::pair<at::Tensor, at::Tensor> local_param_and_grad(PyObject* param, const at::Tensor& grad,
                                                       const std::string& where, int64_t index, bool* partial);

// The local shard of the state tensor `state` (Python object; `state_tensor` is the same tensor)
// under `key` of param `param`, when the param (`param_sharded`) or the state is a DTensor. Throws,
// naming `where`, `index` and `key`, unless both are DTensors with the same mesh and placements: a
// DTensor mixed with a plain tensor has no meaning in torch's optimizers either.
at::Tensor local_state(PyObject* param, bool param_sharded, PyObject* state, const at::Tensor& state_tensor,
                       const std::string& where, int64_t index, const std::string& key);

}  // namespace fusedopt::python
