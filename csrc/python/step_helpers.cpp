// Host-side helpers of the Python optimizers, in C++ because they touch every parameter every step:
// at 20,000 parameters a Python loop, or passing Python lists to an op, costs milliseconds.
//
// collect_group() makes one checked pass over a param group and keeps the lockstep lists in C++
// (CollectedGroup, collected_group.h); the <op>_group() launchers in csrc/python/<family>_step.cpp call
// the op through the dispatcher with those lists.
#include <sstream>

#include "common/tensor_lists.h"
#include "python/collected_group.h"
#include "python/local_shards.h"

namespace fusedopt::python {
namespace {

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

inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// Brings the params' and grads' metadata into cache ahead of the collecting pass, in short loops whose
// cache misses the CPU overlaps (one miss per param per loop, independent across params), rather than
// in the collecting loop, where each param's misses come one after the other. A training step finds
// this metadata evicted by forward and backward: collecting 2,000 params took ~5.3 ms cold against
// ~1.4 ms warm, ~4.3 ms cold with this. The state dicts are left out: looked up twice they cost more
// warm than they save cold. Done per block of kPrefetchBlock params [begin, end), so that what it
// brings in is still in L1/L2 when collected. Reads and prefetches only; what it skips (non-tensors,
// params without grads) the collecting pass handles.
constexpr int64_t kPrefetchBlock = 256;

void prefetch_group_metadata(PyObject* list, int64_t begin, int64_t end) {
  PyObject** items = PySequence_Fast_ITEMS(list);
  for (int64_t i = begin; i < end; ++i) prefetch(items[i]);  // the Python objects
  for (int64_t i = begin; i < end; ++i) {                     // their TensorImpls
    if (THPVariable_Check(items[i])) prefetch(THPVariable_Unpack(items[i]).unsafeGetTensorImpl());
  }
  for (int64_t i = begin; i < end; ++i) {  // their autograd metadata (which holds the grad)
    if (THPVariable_Check(items[i])) prefetch(THPVariable_Unpack(items[i]).unsafeGetTensorImpl()->autograd_meta());
  }
  for (int64_t i = begin; i < end; ++i) {  // the grads' TensorImpls
    if (!THPVariable_Check(items[i])) continue;
    const at::Tensor& g = THPVariable_Unpack(items[i]).grad();
    if (g.defined()) prefetch(g.unsafeGetTensorImpl());
  }
}

// One pass over a param group before its step: keeps the params that have a grad, their grads and
// their state tensors under `keys`, and notes what needs a layout repair. Raises, naming `where` and
// the param's index in the group, for what no fused kernel can take: sparse grads, complex or
// non-floating params, a grad of another dtype/shape/device, a param with gaps in its memory; a
// state tensor of another shape than its param is reported in bad_state. Modifies nothing.
CollectedGroup collect_group(const py::list& group_params, const py::dict& state,
                             const std::vector<std::string>& keys, const std::string& where,
                             const std::vector<std::string>& scalar_keys) {
  CollectedGroup out;
  out.keys = keys;
  out.scalar_keys = scalar_keys;
  std::vector<bool> is_scalar;
  for (const auto& k : keys) {
    is_scalar.push_back(std::find(scalar_keys.begin(), scalar_keys.end(), k) != scalar_keys.end());
  }
  out.states.resize(keys.size());
  std::vector<py::object> key_objects;  // interned once: per-param lookups then hash nothing new
  for (const auto& k : keys) key_objects.push_back(py::reinterpret_steal<py::object>(PyUnicode_InternFromString(k.c_str())));
  const int64_t n = static_cast<int64_t>(group_params.size());
  out.params.reserve(n);
  out.grads.reserve(n);
  for (auto& s : out.states) s.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    if (i % kPrefetchBlock == 0) {
      prefetch_group_metadata(group_params.ptr(), i, std::min(n, i + kPrefetchBlock));
    }
    PyObject* obj = PyList_GET_ITEM(group_params.ptr(), i);
    if (!THPVariable_Check(obj)) fail(where, i, "is not a tensor");
    const at::Tensor& p_arg = THPVariable_Unpack(obj);
    const at::Tensor& g_arg = p_arg.grad();
    if (!g_arg.defined()) continue;
    // A DTensor param is checked and stepped as its local shard (local_shards.h); the rest unchanged.
    const bool sharded = is_dtensor(p_arg);
    out.has_dtensor = out.has_dtensor || sharded;
    std::pair<at::Tensor, at::Tensor> shard;
    if (sharded) shard = local_param_and_grad(obj, g_arg, where, i);
    const at::Tensor& p = sharded ? shard.first : p_arg;
    const at::Tensor& g = sharded ? shard.second : g_arg;
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
      const at::Tensor& t_arg = THPVariable_Unpack(value);
      if (is_scalar[s]) {
        out.states[s].push_back(local_or_self(t_arg));
        continue;
      }
      if (t_arg.sizes() != p_arg.sizes()) {  // global shapes for DTensors
        out.bad_state = std::make_tuple(i, keys[s], t_arg.sizes().vec(), p_arg.sizes().vec());
        return out;
      }
      const bool state_sharded = sharded || is_dtensor(t_arg);
      at::Tensor local;
      if (state_sharded) local = local_state(obj, sharded, value, t_arg, where, i, keys[s]);
      const at::Tensor& t = state_sharded ? local : t_arg;
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
      .def_property_readonly("devices", [](const CollectedGroup& g) {
        py::list out;
        for (const auto& d : g.devices) out.append(py::cast(d));
        return out;
      }, "The params' devices, in order of first appearance.")
      .def_property_readonly("has_dtensor", [](const CollectedGroup& g) { return g.has_dtensor; },
                             "Whether some param is a DTensor (its local shard is what the kernels see).")
      .def_property_readonly("device", [](const CollectedGroup& g) { return py::cast(g.params.at(0).device()); })
      .def("state", &CollectedGroup::state_list, py::arg("key"),
           "State tensors under key, None where missing.")
      .def("missing", &CollectedGroup::missing, py::arg("key"), "Indices whose state key is missing.")
      .def("local_param", [](const CollectedGroup& g, int64_t i) { return g.params.at(i); },
           "The tensor the kernel updates for param i: the param, or a DTensor's local shard.")
      .def("set_grad", [](CollectedGroup& g, int64_t i, const at::Tensor& t) { g.grads.at(i) = local_or_self(t); })
      .def("set_state", [](CollectedGroup& g, const std::string& key, int64_t i, const at::Tensor& t) {
        g.state_tensors(key).at(i) = local_or_self(t);
      })
      .def("select", &CollectedGroup::select, py::arg("indices"))
      .def("by_device", [](py::object self) {
        // One device (the usual case): the group itself, not a copy of its lists.
        const auto& g = self.cast<const CollectedGroup&>();
        py::list out;
        if (g.devices.size() <= 1) {
          out.append(self);
          return out;
        }
        for (auto& part : g.by_device()) out.append(py::cast(std::move(part)));
        return out;
      }, "One group per device, in order of first appearance (the group itself when it has one).");
  m.def("collect_group", &collect_group, py::arg("params"), py::arg("state"), py::arg("keys"),
        py::arg("where"), py::arg("scalar_keys") = std::vector<std::string>{},
        "Check and collect a param group in one pass (see step_helpers.cpp). States under scalar_keys "
        "(e.g. 'step') are collected without comparing their shape to the param's.");
  add_sgd_step(m);
  add_adam_step(m);
  add_rmsprop_adagrad_step(m);
  add_clip_helpers(m);
}

}  // namespace fusedopt::python
