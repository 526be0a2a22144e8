// DTensor unwrapping for collect_group (see local_shards.h).
#include "python/local_shards.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <torch/csrc/autograd/python_variable.h>

namespace fusedopt::python {
namespace {

// The class torch.distributed.tensor.DTensor, or nullptr while that module is not imported (then no
// DTensor can exist). The reference is kept for the life of the process.
PyObject* dtensor_class() {
  static PyObject* cls = nullptr;
  if (cls != nullptr) return cls;
  PyObject* module = PyDict_GetItemString(PyImport_GetModuleDict(), "torch.distributed.tensor");
  if (module == nullptr) return nullptr;
  PyObject* found = PyObject_GetAttrString(module, "DTensor");
  if (found == nullptr) {
    PyErr_Clear();  // the module is still being imported
    return nullptr;
  }
  cls = found;
  return cls;
}

bool is_dtensor_type(PyTypeObject* type) {
  // Few tensor subclasses ever reach an optimizer; the GIL guards the cache.
  static std::vector<std::pair<PyTypeObject*, bool>> seen;
  for (const auto& [t, answer] : seen) {
    if (t == type) return answer;
  }
  PyObject* cls = dtensor_class();
  if (cls == nullptr) return false;  // not cached: the module may be imported later
  const int sub = PyObject_IsSubclass(reinterpret_cast<PyObject*>(type), cls);
  if (sub < 0) throw py::error_already_set();
  if (seen.size() < 16) seen.emplace_back(type, sub == 1);
  return sub == 1;
}

py::object python_object(const at::Tensor& t) {
  return py::reinterpret_steal<py::object>(THPVariable_Wrap(t));
}

PyObject* interned(const char* name) {
  return PyUnicode_InternFromString(name);  // kept for the life of the process by the callers' statics
}

py::object get(PyObject* obj, PyObject* name) {
  py::object out = py::reinterpret_steal<py::object>(PyObject_GetAttr(obj, name));
  if (!out) throw py::error_already_set();
  return out;
}

at::Tensor local_tensor_of(PyObject* dtensor) {
  static PyObject* name = interned("_local_tensor");
  py::object local = get(dtensor, name);
  TORCH_CHECK(THPVariable_Check(local.ptr()), "DTensor._local_tensor is not a tensor");
  return THPVariable_Unpack(local.ptr());
}

bool equal(PyObject* a, PyObject* b) {
  if (a == b) return true;
  const int eq = PyObject_RichCompareBool(a, b, Py_EQ);
  if (eq < 0) throw py::error_already_set();
  return eq == 1;
}

// Same mesh and placements. FSDP2's grads share their param's spec object, and the state torch makes
// from a param (empty_like) shares its mesh and placements objects, so the usual answer costs a few
// attribute lookups and no Python call.
bool same_sharding(PyObject* a, PyObject* b) {
  static PyObject* spec_name = interned("_spec");
  static PyObject* mesh_name = interned("mesh");
  static PyObject* placements_name = interned("placements");
  py::object sa = get(a, spec_name);
  py::object sb = get(b, spec_name);
  if (sa.is(sb)) return true;
  return equal(get(sa.ptr(), mesh_name).ptr(), get(sb.ptr(), mesh_name).ptr()) &&
         equal(get(sa.ptr(), placements_name).ptr(), get(sb.ptr(), placements_name).ptr());
}

std::string sharding_of(PyObject* dtensor) {
  py::object spec = py::reinterpret_borrow<py::object>(dtensor).attr("_spec");
  return py::str(spec.attr("placements")).cast<std::string>() + " on " +
         py::str(spec.attr("mesh")).cast<std::string>();
}

[[noreturn]] void fail(const std::string& where, int64_t index, const std::string& what) {
  throw std::runtime_error(where + ", param " + std::to_string(index) + ": " + what);
}

}  // namespace

bool is_dtensor(const at::Tensor& t) {
  if (!t.unsafeGetTensorImpl()->is_python_dispatch()) return false;
  py::object obj = python_object(t);
  return is_dtensor_type(Py_TYPE(obj.ptr()));
}

at::Tensor local_or_self(const at::Tensor& t) {
  return is_dtensor(t) ? local_tensor_of(python_object(t).ptr()) : t;
}

// Whether the grad is placed like the param but for Partial where the param is Replicate (the rare
// case: asked of Python, fusedopt/optim/_common.py).
bool partial_of_replicated(PyObject* param, PyObject* grad) {
  py::object check = py::module_::import("fusedopt.optim._common").attr("is_partial_grad_of_replicated");
  return check(py::handle(param), py::handle(grad)).cast<bool>();
}

std::pair<at::Tensor, at::Tensor> local_param_and_grad(PyObject* param, const at::Tensor& grad,
                                                       const std::string& where, int64_t index, bool* partial) {
  *partial = false;
  py::object g = python_object(grad);
  if (!grad.unsafeGetTensorImpl()->is_python_dispatch() || !is_dtensor_type(Py_TYPE(g.ptr()))) {
    fail(where, index, "is a DTensor but its grad is a plain tensor; expected a DTensor placed like "
                       "the param");
  }
  if (!same_sharding(param, g.ptr()) && partial_of_replicated(param, g.ptr())) {
    *partial = true;
  } else if (!same_sharding(param, g.ptr())) {
    fail(where, index, "is a DTensor placed as " + sharding_of(param) + " but its grad is placed as " +
                           sharding_of(g.ptr()) + "; expected the same mesh and placements");
  }
  return {local_tensor_of(param), local_tensor_of(g.ptr())};
}

at::Tensor local_state(PyObject* param, bool param_sharded, PyObject* state, const at::Tensor& state_tensor,
                       const std::string& where, int64_t index, const std::string& key) {
  const bool state_sharded = param_sharded ? is_dtensor_type(Py_TYPE(state)) : is_dtensor(state_tensor);
  if (param_sharded != state_sharded) {
    fail(where, index, std::string(param_sharded ? "is a DTensor" : "is a plain tensor") + " but its state '" +
                           key + "' is " + (state_sharded ? "a DTensor" : "a plain tensor") +
                           "; expected both to be DTensors (load sharded optimizer state with "
                           "torch.distributed.checkpoint.state_dict.set_state_dict)");
  }
  if (!same_sharding(param, state)) {
    fail(where, index, "is a DTensor placed as " + sharding_of(param) + " but its state '" + key +
                           "' is placed as " + sharding_of(state) + "; expected the same mesh and placements");
  }
  return local_tensor_of(state);
}

}  // namespace fusedopt::python
