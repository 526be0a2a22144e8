// Host-side helpers of the Python optimizers, in C++ because they touch every parameter every step:
// at 20,000 parameters a Python loop alone costs milliseconds.
#include <string>
#include <vector>

#include <torch/extension.h>

#include "common/tensor_lists.h"

namespace py = pybind11;

namespace fusedopt::python {
namespace {

[[noreturn]] void fail(const std::string& where, int64_t index, const std::string& what) {
  throw std::runtime_error(where + ", param " + std::to_string(index) + ": " + what);
}

std::string describe(const at::Tensor& t) {
  std::ostringstream os;
  os << t.scalar_type() << " " << t.sizes() << " on " << t.device();
  return os.str();
}

// One pass over a param group before its step. Returns
//   (params, grads, states, grad_fixes, state_fixes, devices)
// params/grads: the params that have a grad, and those grads; states: one list per key of the
// params' state tensors (None where the state has no such entry yet); grad_fixes: indices whose grad
// walks memory in another order than its param (the caller copies it into the param's layout);
// state_fixes: (key index, index) pairs whose state tensor differs from its param in dtype, device or
// memory order (e.g. loaded from a checkpoint; the caller converts it); devices: how many distinct
// devices the params are on (1 in the common case).
// Raises, naming `where` and the param's index in the group, for what no fused kernel can take:
// sparse grads, complex or non-floating params, a grad of another dtype/shape/device, a param with
// gaps in its memory, a state tensor of another shape than its param. Modifies nothing.
py::tuple collect_group(const py::list& group_params, const py::dict& state,
                        const std::vector<std::string>& keys, const std::string& where) {
  py::list params, grads, grad_fixes, state_fixes;
  std::vector<py::list> states(keys.size());
  std::vector<at::Device> devices;
  const int64_t n = static_cast<int64_t>(group_params.size());
  for (int64_t i = 0; i < n; ++i) {
    py::handle obj = group_params[i];
    const at::Tensor& p = THPVariable_Unpack(obj.ptr());
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (g.layout() != at::kStrided) fail(where, i, "has a sparse gradient; fused kernels need dense gradients");
    if (at::isComplexType(p.scalar_type())) {
      fail(where, i, "is complex (" + std::string(c10::toString(p.scalar_type())) +
                         "); complex parameters are not supported");
    }
    if (!is_supported_dtype(p.scalar_type())) {
      fail(where, i, "has dtype " + std::string(c10::toString(p.scalar_type())) +
                         "; expected float32, float64, float16 or bfloat16");
    }
    if (g.scalar_type() != p.scalar_type() || g.device() != p.device() || g.sizes() != p.sizes()) {
      fail(where, i, "is " + describe(p) + " but its grad is " + describe(g) +
                         "; expected the same dtype, shape and device");
    }
    if (!p.is_non_overlapping_and_dense()) {
      fail(where, i, "is a strided view with gaps in its memory; fused kernels need parameters "
                     "that fill their memory");
    }
    const int64_t k = static_cast<int64_t>(params.size());
    if (!g.is_non_overlapping_and_dense() || !same_memory_order(p, g)) grad_fixes.append(k);
    PyObject* entry = PyDict_GetItem(state.ptr(), obj.ptr());  // borrowed; no defaultdict insert
    for (size_t s = 0; s < keys.size(); ++s) {
      PyObject* value = entry && PyDict_Check(entry) ? PyDict_GetItemString(entry, keys[s].c_str()) : nullptr;
      if (value == nullptr || value == Py_None || !THPVariable_Check(value)) {
        states[s].append(py::none());
        continue;
      }
      const at::Tensor& t = THPVariable_Unpack(value);
      if (t.sizes() != p.sizes()) {
        std::ostringstream os;
        os << where << ", param " << i << ": state '" << keys[s] << "' has shape " << t.sizes()
           << " but the parameter has shape " << p.sizes()
           << "; was the state_dict saved for a different model?";
        throw py::value_error(os.str());
      }
      if (t.scalar_type() != p.scalar_type() || t.device() != p.device() ||
          !t.is_non_overlapping_and_dense() || !same_memory_order(p, t)) {
        state_fixes.append(py::make_tuple(s, k));
      }
      states[s].append(py::reinterpret_borrow<py::object>(value));
    }
    if (std::find(devices.begin(), devices.end(), p.device()) == devices.end()) devices.push_back(p.device());
    params.append(obj);
    grads.append(py::cast(g));
  }
  py::list state_lists;
  for (auto& l : states) state_lists.append(l);
  return py::make_tuple(params, grads, state_lists, grad_fixes, state_fixes, devices.size());
}

}  // namespace

void add_step_helpers(py::module& m) {
  m.def("collect_group", &collect_group, py::arg("params"), py::arg("state"), py::arg("keys"),
        py::arg("where"),
        "Params with grads, their grads and state tensors, checked in one pass (see step_helpers.cpp).");
}

}  // namespace fusedopt::python
