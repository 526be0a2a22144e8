// Forward-mode AD on the differentiable ops: their autograd is a torch::autograd::Function, which has no
// jvp rule. Where nothing requires grad, autograd would not even see the call, and a tangent on an input
// would be dropped without a word; these checks raise instead. (fusedopt.nn.functional runs torch's own
// batch_norm and dropout for such inputs, and under torch.func transforms.)
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace fusedopt {

// Level 0: torch has one forward-AD level (nested dual levels are not supported).
inline bool has_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }
inline bool has_tangent(const std::optional<at::Tensor>& t) { return t.has_value() && has_tangent(*t); }

template <class... Tensors>
void check_no_tangents(const char* op, const Tensors&... tensors) {
  TORCH_CHECK_NOT_IMPLEMENTED(!(has_tangent(tensors) || ...), "fusedopt::", op,
                              ": forward-mode AD is not supported (no jvp rule); use the fusedopt.nn.functional "
                              "function, which computes with torch's own for inputs with tangents");
}

}  // namespace fusedopt
