// The launcher of fusedopt::adam_ on a CollectedGroup (see collected_group.h).
#include <ATen/core/dispatch/Dispatcher.h>

#include "common/op_signatures.h"
#include "python/collected_group.h"

namespace fusedopt::python {
namespace {

// fusedopt::adam_ on a collected group, through the dispatcher (no Python lists). The group was
// collected with keys exp_avg, exp_avg_sq, step, and max_exp_avg_sq (amsgrad) / master_param (master).
void adam_group(const CollectedGroup& g, double lr, const std::optional<at::Tensor>& lr_tensor,
                double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
                bool maximize, bool decoupled_weight_decay, bool master_weights,
                const std::optional<at::Tensor>& grad_scale,
                const std::optional<at::Tensor>& found_inf, bool write_grads) {
  const auto& op = op_signatures::typed_op<op_signatures::kAdamName, op_signatures::Adam>();
  const std::vector<at::Tensor> none;
  const auto& states = g.states;
  const std::vector<at::Tensor>& max_sqs = amsgrad ? states.at(g.key_index("max_exp_avg_sq")).tensors() : none;
  const std::vector<at::Tensor>& masters = master_weights ? states.at(g.key_index("master_param")).tensors() : none;
  const std::vector<at::Tensor>& exp_avgs = states.at(g.key_index("exp_avg")).tensors();
  const std::vector<at::Tensor>& exp_avg_sqs = states.at(g.key_index("exp_avg_sq")).tensors();
  const std::vector<at::Tensor>& steps = states.at(g.key_index("step")).tensors();
  py::gil_scoped_release no_gil;
  op.call(g.params.tensors(), g.grads.tensors(), exp_avgs, exp_avg_sqs, max_sqs, steps, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, decoupled_weight_decay, masters, lr_tensor, grad_scale,
          found_inf, write_grads);
}

}  // namespace

void add_adam_step(py::module& m) {
  m.def("adam_group", &adam_group, py::arg("group"), py::kw_only(), py::arg("lr"), py::arg("lr_tensor"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("amsgrad"),
        py::arg("maximize"), py::arg("decoupled_weight_decay"), py::arg("master_weights"),
        py::arg("grad_scale"), py::arg("found_inf"), py::arg("write_grads") = true,
        "torch.ops.fusedopt.adam_ on a CollectedGroup (master_weights: its master_param state is "
        "passed as master_params).");
}

}  // namespace fusedopt::python
