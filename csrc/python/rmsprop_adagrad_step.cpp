// The launchers of fusedopt::rmsprop_ and fusedopt::adagrad_ on a CollectedGroup (see collected_group.h),
// and the check of collected step counts.
#include <ATen/core/dispatch/Dispatcher.h>

#include "common/op_signatures.h"
#include "python/collected_group.h"

namespace fusedopt::python {
namespace {

using OptTensor = std::optional<at::Tensor>;

// fusedopt::rmsprop_ on a collected group (keys step, square_avg, then momentum_buffer when
// momentum > 0 and grad_avg when centered), through the dispatcher.
void rmsprop_group(const CollectedGroup& g, double lr, const OptTensor& lr_tensor, double alpha, double eps,
                   double weight_decay, double momentum, bool centered, bool maximize,
                   const OptTensor& grad_scale, const OptTensor& found_inf, bool write_grads) {
  const auto& op = op_signatures::typed_op<op_signatures::kRmspropName, op_signatures::Rmsprop>();
  const std::vector<at::Tensor> none;
  const auto& steps = g.states.at(g.key_index("step")).tensors();
  const auto& square_avgs = g.states.at(g.key_index("square_avg")).tensors();
  const auto& bufs = momentum > 0 ? g.states.at(g.key_index("momentum_buffer")).tensors() : none;
  const auto& grad_avgs = centered ? g.states.at(g.key_index("grad_avg")).tensors() : none;
  py::gil_scoped_release no_gil;
  op.call(g.params.tensors(), g.grads.tensors(), square_avgs, bufs, grad_avgs, steps, lr, alpha, eps, weight_decay, momentum,
          centered, maximize, lr_tensor, grad_scale, found_inf, write_grads);
}

// fusedopt::adagrad_ on a collected group (keys step, sum).
void adagrad_group(const CollectedGroup& g, double lr, const OptTensor& lr_tensor, double lr_decay,
                   double weight_decay, double eps, bool maximize, const OptTensor& grad_scale,
                   const OptTensor& found_inf, bool write_grads) {
  const auto& op = op_signatures::typed_op<op_signatures::kAdagradName, op_signatures::Adagrad>();
  const auto& steps = g.states.at(g.key_index("step")).tensors();
  const auto& sums = g.states.at(g.key_index("sum")).tensors();
  py::gil_scoped_release no_gil;
  op.call(g.params.tensors(), g.grads.tensors(), sums, steps, lr, lr_decay, weight_decay, eps, maximize, lr_tensor, grad_scale,
          found_inf, write_grads);
}

// Indices of the params whose collected state `key` (a step count) exists but must be moved or
// retyped before the op runs (scalar_fit). Returns (fixes, index of a step that cannot be a count, its
// numel), the latter (-1, 0) when every step has one element. Taken from what collect_group noted while
// collecting, unless a state of the key was replaced since.
std::tuple<std::vector<int64_t>, int64_t, int64_t> scalar_state_fixes(const CollectedGroup& g,
                                                                      const std::string& key) {
  const size_t k = g.key_index(key);
  ScalarCheck walked;
  const bool noted = k < g.scalar_checks.size() && g.scalar_checks[k].valid;
  if (!noted) {
    const auto& list = g.states[k];
    for (int64_t i = 0; i < g.size(); ++i) {
      if (list[i].defined()) walked.add(i, list[i], g.params[i].device());
    }
  }
  const ScalarCheck& c = noted ? g.scalar_checks[k] : walked;
  return {c.fixes, c.bad, c.bad_numel};  // bad_numel stays 0 while bad is -1
}

}  // namespace

void add_rmsprop_adagrad_step(py::module& m) {
  m.def("rmsprop_group", &rmsprop_group, py::arg("group"), py::kw_only(), py::arg("lr"),
        py::arg("lr_tensor"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("momentum"), py::arg("centered"), py::arg("maximize"), py::arg("grad_scale"),
        py::arg("found_inf"), py::arg("write_grads") = true,
        "torch.ops.fusedopt.rmsprop_ on a CollectedGroup.");
  m.def("adagrad_group", &adagrad_group, py::arg("group"), py::kw_only(), py::arg("lr"),
        py::arg("lr_tensor"), py::arg("lr_decay"), py::arg("weight_decay"), py::arg("eps"),
        py::arg("maximize"), py::arg("grad_scale"), py::arg("found_inf"), py::arg("write_grads") = true,
        "torch.ops.fusedopt.adagrad_ on a CollectedGroup.");
  m.def("scalar_state_fixes", &scalar_state_fixes, py::arg("group"), py::arg("key"),
        "Indices whose per-param scalar state (e.g. 'step') must be moved to the param's device as a "
        "float32 0-dim tensor, and (index, numel) of one that is not a single value ((-1, 0) if none).");
}

}  // namespace fusedopt::python
