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

at::Tensor local_tensor_of(const py::object& dtensor) {
  static PyObject* name = PyUnicode_InternFromString("_local_tensor");
  py::object local = py::reinterpret_steal<py::object>(PyObject_GetAttr(dtensor.ptr(), name));
  if (!local) throw py::error_already_set();
  TORCH_CHECK(THPVariable_Check(local.ptr()), "DTensor._local_tensor is not a tensor");
  return THPVariable_Unpack(local.ptr());
}

// Same mesh and placements. FSDP2's grads share their param's spec object, so the usual answer costs
// one attribute lookup per tensor.
bool same_sharding(const py::object& a, const py::object& b) {
  static PyObject* spec_name = PyUnicode_InternFromString("_spec");
  py::object sa = a.attr(spec_name);
  py::object sb = b.attr(spec_name);
  if (sa.is(sb)) return true;
  return sa.attr("mesh").equal(sb.attr("mesh")) && sa.attr("placements").equal(sb.attr("placements"));
}

std::string sharding_of(const py::object& dtensor) {
  py::object spec = dtensor.attr("_spec");
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
  return is_dtensor(t) ? local_tensor_of(python_object(t)) : t;
}

std::pair<at::Tensor, at::Tensor> local_param_and_grad(const at::Tensor& param, const at::Tensor& grad,
                                                       const std::string& where, int64_t index) {
  py::object p = python_object(param);
  if (!is_dtensor(grad)) {
    fail(where, index, "is a DTensor but its grad is a plain tensor; expected a DTensor placed like "
                       "the param");
  }
  py::object g = python_object(grad);
  if (!same_sharding(p, g)) {
    fail(where, index, "is a DTensor placed as " + sharding_of(p) + " but its grad is placed as " +
                           sharding_of(g) + "; expected the same mesh and placements");
  }
  return {local_tensor_of(p), local_tensor_of(g)};
}

at::Tensor local_state(const at::Tensor& param, const at::Tensor& state, const std::string& where,
                       int64_t index, const std::string& key) {
  const bool param_sharded = is_dtensor(param);
  const bool state_sharded = is_dtensor(state);
  if (param_sharded != state_sharded) {
    fail(where, index, std::string(param_sharded ? "is a DTensor" : "is a plain tensor") + " but its state '" +
                           key + "' is " + (state_sharded ? "a DTensor" : "a plain tensor") +
                           "; expected both to be DTensors (load sharded optimizer state with "
                           "torch.distributed.checkpoint.state_dict.set_state_dict)");
  }
  py::object p = python_object(param);
  py::object s = python_object(state);
  if (!same_sharding(p, s)) {
    fail(where, index, "is a DTensor placed as " + sharding_of(p) + " but its state '" + key +
                           "' is placed as " + sharding_of(s) + "; expected the same mesh and placements");
  }
  return local_tensor_of(s);
}

}  // namespace fusedopt::python
