// The launcher of fusedopt::sgd_ on a CollectedGroup (see collected_group.h).
#include <ATen/core/dispatch/Dispatcher.h>

#include "common/op_signatures.h"
#include "python/collected_group.h"

namespace fusedopt::python {
namespace {

// fusedopt::sgd_ on a collected group, through the dispatcher (no Python lists).
void sgd_group(const CollectedGroup& g, double lr, const std::optional<at::Tensor>& lr_tensor,
               double weight_decay, double momentum, double dampening, bool nesterov, bool maximize,
               bool is_first_step, const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf, bool write_grads) {
  const auto& op = op_signatures::typed_op<op_signatures::kSgdName, op_signatures::Sgd>();
  const std::vector<at::Tensor> none;
  const std::vector<at::Tensor>& bufs = momentum != 0 ? g.states.at(0).tensors() : none;
  py::gil_scoped_release no_gil;
  op.call(g.params.tensors(), g.grads.tensors(), bufs, lr, weight_decay, momentum, dampening, nesterov, maximize,
          is_first_step, lr_tensor, grad_scale, found_inf, write_grads);
}

}  // namespace

void add_sgd_step(py::module& m) {
  m.def("sgd_group", &sgd_group, py::arg("group"), py::kw_only(), py::arg("lr"), py::arg("lr_tensor"),
        py::arg("weight_decay"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
        py::arg("maximize"), py::arg("is_first_step"), py::arg("grad_scale"), py::arg("found_inf"),
        py::arg("write_grads") = true, "torch.ops.fusedopt.sgd_ on a CollectedGroup.");
}

}  // namespace fusedopt::python
