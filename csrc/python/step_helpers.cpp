// Host-side helpers of the Python optimizers, in C++ because they touch every parameter every step:
// at 20,000 parameters a Python loop, or passing Python lists to an op, costs milliseconds.
//
// collect_group() makes one checked pass over a param group and keeps the lockstep lists in C++
// (CollectedGroup); the <op>_group() launchers call the op through the dispatcher with those lists,
// so tensors never go back through Python lists on the hot path.
#include <algorithm>
#include <optional>
#include <tuple>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

#include "common/tensor_lists.h"

namespace py = pybind11;

namespace fusedopt::python {
namespace {

// The params of one param group that have a grad, with their grads and state tensors.
struct CollectedGroup {
  py::list param_objects;            // the Python params, for writing state back
  std::vector<at::Tensor> params;
  std::vector<at::Tensor> grads;
  std::vector<std::string> keys;
  std::vector<std::vector<at::Tensor>> states;  // [key][i]; undefined where missing
  std::vector<int64_t> grad_fixes;              // grads laid out unlike their param
  std::vector<std::pair<int64_t, int64_t>> state_fixes;  // (key, i): dtype/device/layout differs
  std::vector<at::Device> devices;
  // Set (and collection stopped) when a state tensor's shape differs from its param's: the caller
  // raises ValueError. (Returned rather than thrown: a C++ exception meant to become ValueError
  // crashed the interpreter under torch 2.11 / Python 3.12.)
  std::optional<std::tuple<int64_t, std::string, std::vector<int64_t>, std::vector<int64_t>>> bad_state;

  int64_t size() const { return static_cast<int64_t>(params.size()); }

  size_t key_index(const std::string& key) const {
    auto it = std::find(keys.begin(), keys.end(), key);
    TORCH_CHECK(it != keys.end(), "no state key '", key, "' was collected");
    return static_cast<size_t>(it - keys.begin());
  }

  std::vector<int64_t> missing(const std::string& key) const {
    std::vector<int64_t> out;
    const auto& list = states[key_index(key)];
    for (int64_t i = 0; i < size(); ++i) {
      if (!list[i].defined()) out.push_back(i);
    }
    return out;
  }

  py::list state_list(const std::string& key) const {
    py::list out;
    for (const auto& t : states[key_index(key)]) {
      if (t.defined()) out.append(py::cast(t));
      else out.append(py::none());
    }
    return out;
  }

  // The entries at `indices`, in that order.
  CollectedGroup select(const std::vector<int64_t>& indices) const {
    CollectedGroup out;
    out.keys = keys;
    out.states.resize(keys.size());
    for (int64_t i : indices) {
      TORCH_CHECK(i >= 0 && i < size(), "index ", i, " out of range");
      out.param_objects.append(param_objects[i]);
      out.params.push_back(params[i]);
      out.grads.push_back(grads[i]);
      for (size_t k = 0; k < keys.size(); ++k) out.states[k].push_back(states[k][i]);
      if (std::find(out.devices.begin(), out.devices.end(), params[i].device()) == out.devices.end()) {
        out.devices.push_back(params[i].device());
      }
    }
    return out;
  }

  // One group per device, in order of first appearance.
  std::vector<CollectedGroup> by_device() const {
    if (devices.size() <= 1) return {*this};
    std::vector<CollectedGroup> out;
    for (const at::Device& d : devices) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < size(); ++i) {
        if (params[i].device() == d) idx.push_back(i);
      }
      out.push_back(select(idx));
    }
    return out;
  }

  std::vector<at::Tensor>& state_tensors(const std::string& key) { return states[key_index(key)]; }
};

// state[param] without calling Tensor.__hash__, a Python function (~80 ns, most of the per-param cost
// of a step). torch.Tensor.__hash__ returns id(self), so for params whose type inherits exactly that
// method (Tensor, Parameter) the dict lookup can be handed the hash; anything else takes the normal
// path. Types are checked once (the GIL guards the cache).
bool hashes_by_id(PyObject* param) {
  static std::vector<PyTypeObject*> verified;
  PyTypeObject* type = Py_TYPE(param);
  if (std::find(verified.begin(), verified.end(), type) != verified.end()) return true;
  static PyObject* tensor_hash = PyObject_GetAttrString(THPVariableClass, "__hash__");
  PyObject* hash = PyObject_GetAttrString(reinterpret_cast<PyObject*>(type), "__hash__");
  if (hash == nullptr) PyErr_Clear();
  bool ok = hash != nullptr && hash == tensor_hash;
  Py_XDECREF(hash);
  if (ok) {
    const Py_hash_t h = PyObject_Hash(param);  // and it does return id(self)
    if (h == -1) PyErr_Clear();
    ok = h == reinterpret_cast<Py_hash_t>(param);
  }
  if (ok && verified.size() < 16) verified.push_back(type);
  return ok;
}

PyObject* state_entry(PyObject* state, PyObject* param) {
#if PY_VERSION_HEX < 0x030D0000
  if (hashes_by_id(param)) {
    PyObject* entry = _PyDict_GetItem_KnownHash(state, param, reinterpret_cast<Py_hash_t>(param));
    if (entry != nullptr || !PyErr_Occurred()) return entry;
    PyErr_Clear();
  }
#endif
  return PyDict_GetItem(state, param);  // borrowed; no defaultdict insertion
}

[[noreturn]] void fail(const std::string& where, int64_t index, const std::string& what) {
  throw std::runtime_error(where + ", param " + std::to_string(index) + ": " + what);
}

std::string describe(const at::Tensor& t) {
  std::ostringstream os;
  os << t.scalar_type() << " " << t.sizes() << " on " << t.device();
  return os.str();
}

// One pass over a param group before its step: keeps the params that have a grad, their grads and
// their state tensors under `keys`, and notes what needs a layout repair. Raises, naming `where` and
// the param's index in the group, for what no fused kernel can take: sparse grads, complex or
// non-floating params, a grad of another dtype/shape/device, a param with gaps in its memory; a
// state tensor of another shape than its param is reported in bad_state. Modifies nothing.
CollectedGroup collect_group(const py::list& group_params, const py::dict& state,
                             const std::vector<std::string>& keys, const std::string& where) {
  CollectedGroup out;
  out.keys = keys;
  out.states.resize(keys.size());
  std::vector<py::object> key_objects;  // interned once: per-param lookups then hash nothing new
  for (const auto& k : keys) key_objects.push_back(py::reinterpret_steal<py::object>(PyUnicode_InternFromString(k.c_str())));
  const int64_t n = static_cast<int64_t>(group_params.size());
  out.params.reserve(n);
  out.grads.reserve(n);
  for (auto& s : out.states) s.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    PyObject* obj = PyList_GET_ITEM(group_params.ptr(), i);
    if (!THPVariable_Check(obj)) fail(where, i, "is not a tensor");
    const at::Tensor& p = THPVariable_Unpack(obj);
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
    const int64_t k = out.size();
    if (!g.is_non_overlapping_and_dense() || !same_memory_order(p, g)) out.grad_fixes.push_back(k);
    PyObject* entry = keys.empty() ? nullptr : state_entry(state.ptr(), obj);
    for (size_t s = 0; s < keys.size(); ++s) {
      PyObject* value = entry && PyDict_Check(entry) ? PyDict_GetItem(entry, key_objects[s].ptr()) : nullptr;
      if (value == nullptr || !THPVariable_Check(value)) {
        out.states[s].emplace_back();
        continue;
      }
      const at::Tensor& t = THPVariable_Unpack(value);
      if (t.sizes() != p.sizes()) {
        out.bad_state = std::make_tuple(i, keys[s], t.sizes().vec(), p.sizes().vec());
        return out;
      }
      if (t.scalar_type() != p.scalar_type() || t.device() != p.device() ||
          !t.is_non_overlapping_and_dense() || !same_memory_order(p, t)) {
        out.state_fixes.emplace_back(static_cast<int64_t>(s), k);
      }
      out.states[s].push_back(t);
    }
    if (std::find(out.devices.begin(), out.devices.end(), p.device()) == out.devices.end()) {
      out.devices.push_back(p.device());
    }
    out.param_objects.append(py::handle(obj));
    out.params.push_back(p);
    out.grads.push_back(g);
  }
  return out;
}

// fusedopt::sgd_ on a collected group, through the dispatcher (no Python lists).
void sgd_group(const CollectedGroup& g, double lr, const std::optional<at::Tensor>& lr_tensor,
               double weight_decay, double momentum, double dampening, bool nesterov, bool maximize,
               bool is_first_step, const std::optional<at::Tensor>& grad_scale,
               const std::optional<at::Tensor>& found_inf) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fusedopt::sgd_", "")
                             .typed<void(at::TensorList, at::TensorList, at::TensorList, double, double,
                                         double, double, bool, bool, bool,
                                         const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&,
                                         const std::optional<at::Tensor>&)>();
  const std::vector<at::Tensor> none;
  const std::vector<at::Tensor>& bufs = momentum != 0 ? g.states.at(0) : none;
  py::gil_scoped_release no_gil;
  op.call(g.params, g.grads, bufs, lr, weight_decay, momentum, dampening, nesterov, maximize,
          is_first_step, lr_tensor, grad_scale, found_inf);
}

}  // namespace

void add_step_helpers(py::module& m) {
  py::class_<CollectedGroup>(m, "CollectedGroup",
                             "Params of a param group that have grads, their grads and state "
                             "tensors, checked (see collect_group).")
      .def("__len__", &CollectedGroup::size)
      .def_property_readonly("params", [](const CollectedGroup& g) { return g.param_objects; })
      .def_property_readonly("grads", [](const CollectedGroup& g) { return g.grads; })
      .def_property_readonly("keys", [](const CollectedGroup& g) { return g.keys; })
      .def_property_readonly("grad_fixes", [](const CollectedGroup& g) { return g.grad_fixes; })
      .def_property_readonly("state_fixes", [](const CollectedGroup& g) { return g.state_fixes; })
      .def_property_readonly("bad_state", [](const CollectedGroup& g) -> py::object {
        if (!g.bad_state) return py::none();
        return py::cast(*g.bad_state);
      }, "(param index in group, key, state shape, param shape) of a state of the wrong shape")
      .def_property_readonly("num_devices", [](const CollectedGroup& g) { return g.devices.size(); })
      .def_property_readonly("device", [](const CollectedGroup& g) { return py::cast(g.params.at(0).device()); })
      .def("state", &CollectedGroup::state_list, py::arg("key"),
           "State tensors under key, None where missing.")
      .def("missing", &CollectedGroup::missing, py::arg("key"), "Indices whose state key is missing.")
      .def("set_grad", [](CollectedGroup& g, int64_t i, const at::Tensor& t) { g.grads.at(i) = t; })
      .def("set_state", [](CollectedGroup& g, const std::string& key, int64_t i, const at::Tensor& t) {
        g.state_tensors(key).at(i) = t;
      })
      .def("select", &CollectedGroup::select, py::arg("indices"))
      .def("by_device", &CollectedGroup::by_device);
  m.def("collect_group", &collect_group, py::arg("params"), py::arg("state"), py::arg("keys"),
        py::arg("where"), "Check and collect a param group in one pass (see step_helpers.cpp).");
  m.def("sgd_group", &sgd_group, py::arg("group"), py::kw_only(), py::arg("lr"), py::arg("lr_tensor"),
        py::arg("weight_decay"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"),
        py::arg("maximize"), py::arg("is_first_step"), py::arg("grad_scale"), py::arg("found_inf"),
        "torch.ops.fusedopt.sgd_ on a CollectedGroup.");
}

}  // namespace fusedopt::python
