// Host-side helper of fusedopt.nn.utils' clipping functions, in C++ because it touches every tensor on
// every call: at 2,000 gradients a Python loop of checks costs milliseconds, as much as the fused
// norm pass itself on a 2-core CPU.
#include <algorithm>
#include <limits>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/python_variable.h>

#include "common/norm_checks.h"
#include "common/op_signatures.h"
#include "common/tensor_lists.h"
#include "python/collected_group.h"
#include "python/local_shards.h"
#include "python/metadata_prefetch.h"

namespace fusedopt::python {
namespace {

// One pass over a list of tensors for clipping. Returns (first_bad, n_dtensors, all_dense,
// one_device): first_bad is the index of the first entry the fused kernels cannot take (not a tensor,
// an unsupported dtype, not strided, not on CPU/CUDA), -1 if none: the caller re-checks that entry in
// Python to raise torch-style errors naming it, or surveys the list in Python when it is a sparse COO
// tensor (taken there: lists without one never leave this pass). all_dense: every plain tensor fills
// its memory (what the kernels walk); one_device: every entry is on the device of the first.
py::tuple survey_tensors(const py::list& tensors) {
  const int64_t n = static_cast<int64_t>(tensors.size());
  int64_t n_dtensors = 0;
  bool all_dense = true;
  bool one_device = true;
  std::optional<at::Device> first_device;
  for (int64_t i = 0; i < n; ++i) {
    PyObject* obj = PyList_GET_ITEM(tensors.ptr(), i);
    if (!THPVariable_Check(obj)) return py::make_tuple(i, n_dtensors, all_dense, one_device);
    const at::Tensor& t = THPVariable_Unpack(obj);
    const at::Device device = t.device();
    if (!is_supported_dtype(t.scalar_type()) || t.layout() != at::kStrided ||
        !(device.is_cpu() || device.is_cuda())) {
      return py::make_tuple(i, n_dtensors, all_dense, one_device);
    }
    if (is_dtensor(t)) {
      ++n_dtensors;
    } else if (!t.is_non_overlapping_and_dense()) {
      all_dense = false;
    }
    if (!first_device) first_device = device;
    else if (device != *first_device) one_device = false;
  }
  return py::make_tuple(int64_t{-1}, n_dtensors, all_dense, one_device);
}

// Whether t can go to the fused norm and clip ops as it is: a plain tensor (no Python subclass such as
// DTensor behind it) of a supported dtype, dense, on `device`.
bool plain_dense_on(const at::Tensor& t, const at::Device& device) {
  return !t.unsafeGetTensorImpl()->is_python_dispatch() && t.layout() == at::kStrided &&
         is_supported_dtype(t.scalar_type()) && t.device() == device &&
         (device.is_cpu() || device.is_cuda()) && t.is_non_overlapping_and_dense();
}

// The grads of `params` (a list), when every entry is a leaf torch.Tensor or nn.Parameter (exactly
// those types: a subclass may define `.grad` otherwise) and every grad present can go to the fused
// ops as it is (plain_dense_on the first grad's CPU or CUDA device); nullopt otherwise. What this
// refuses, the Python path takes (sparse COO grads, and torch's errors for bad entries). Metadata is prefetched a
// block ahead (metadata_prefetch.h): this replaces a Python loop over p.grad that took ~1.8 ms for
// 2,000 params with a cold cache.
std::optional<std::vector<at::Tensor>> plain_grads(const py::list& params) {
  static PyObject* parameter_type = py::object(py::module_::import("torch.nn").attr("Parameter")).release().ptr();
  PyObject* const* items = PySequence_Fast_ITEMS(params.ptr());
  const int64_t n = static_cast<int64_t>(params.size());
  std::vector<at::Tensor> grads;
  grads.reserve(n);
  std::optional<at::Device> device;
  for (int64_t i = 0; i < n; ++i) {
    if (i % kPrefetchBlock == 0) prefetch_params_and_grads(items, i, std::min(n, i + kPrefetchBlock));
    PyObject* obj = items[i];
    PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(obj));
    if (type != THPVariableClass && type != parameter_type) return std::nullopt;
    const at::Tensor& p = THPVariable_Unpack(obj);
    if (!p.is_leaf()) return std::nullopt;  // torch warns when .grad of a non-leaf is read
    const at::Tensor* g = grad_or_null(obj);
    if (g == nullptr) continue;
    if (!device) device = g->device();
    if (!plain_dense_on(*g, *device)) return std::nullopt;
    grads.push_back(*g);
  }
  return grads;
}

// torch takes each tensor's norm first, and refuses the inf and negative-order norms of an empty tensor
// (a max, or a sum of negative powers, has no identity): with such a norm and an empty tensor, the
// helpers below return None and the Python path raises torch's error.
bool refused_by_torch(const std::vector<at::Tensor>& tensors, double norm_type) {
  if (!(norm_type < 0 || norm_type == std::numeric_limits<double>::infinity())) return false;
  return std::any_of(tensors.begin(), tensors.end(), [](const at::Tensor& t) { return t.numel() == 0; });
}

// clip_grad_norm_(params, max_norm, norm_type) for the common case (see plain_grads): the total norm
// of the grads and their scaling, by the fused ops through the dispatcher, with no per-param Python.
// Returns the total norm, or None when the list is not of that case or no param has a grad.
py::object clip_grad_norm_plain(const py::list& params, double max_norm, double norm_type) {
  using namespace op_signatures;
  const auto& norm_op = typed_op<kTotalNormName, TotalNorm>();
  const auto& clip_op = typed_op<kClipByTotalNormName, ClipByTotalNorm>();
  std::optional<std::vector<at::Tensor>> grads = plain_grads(params);
  if (!grads || grads->empty() || refused_by_torch(*grads, norm_type)) return py::none();
  at::Tensor total;
  {
    py::gil_scoped_release no_gil;
    total = norm_op.call(*grads, norm_type);
    clip_op.call(*grads, total, max_norm);
  }
  return py::cast(total);
}

// The total norm of the grads of the optimizer's collected groups (folded clipping), when they are
// all on one device and dense: one fused call on the grads the groups already hold. None otherwise
// (the Python path then takes them, as get_total_norm would).
py::object collected_total_norm(const std::vector<const CollectedGroup*>& groups, double norm_type) {
  const auto& norm_op = op_signatures::typed_op<op_signatures::kTotalNormName, op_signatures::TotalNorm>();
  std::optional<at::Device> device;
  size_t count = 0;
  for (const CollectedGroup* g : groups) {
    for (const at::Tensor& grad : g->grads) {
      if (!device) device = grad.device();
      if (!plain_dense_on(grad, *device)) return py::none();
    }
    count += g->grads.size();
  }
  if (count == 0) return py::none();
  std::vector<at::Tensor> joined;
  if (groups.size() > 1) {
    joined.reserve(count);
    for (const CollectedGroup* g : groups) joined.insert(joined.end(), g->grads.begin(), g->grads.end());
  }
  const std::vector<at::Tensor>& grads = groups.size() > 1 ? joined : groups[0]->grads.tensors();
  if (refused_by_torch(grads, norm_type)) return py::none();
  at::Tensor total;
  {
    py::gil_scoped_release no_gil;
    total = norm_op.call(grads, norm_type);
  }
  return py::cast(total);
}

}  // namespace

void add_clip_helpers(py::module& m) {
  m.def("clip_grad_norm_plain", &clip_grad_norm_plain, py::arg("params"), py::arg("max_norm"),
        py::arg("norm_type"),
        "clip_grad_norm_ without per-param Python for plain tensors/Parameters with dense grads on "
        "one device; returns the total norm, or None to leave the call to the Python path.");
  m.def("collected_total_norm", &collected_total_norm, py::arg("groups"), py::arg("norm_type"),
        "The total norm of the grads of CollectedGroups on one device, or None (see clip_helpers.cpp).");
  m.def("check_clip_tensors", [](const std::vector<at::Tensor>& tensors) { check_clip_tensors(tensors); },
        py::arg("tensors"),
        "clip_by_total_norm_'s checks of its tensors, raising as it does, without scaling them: for "
        "callers that split a list by device and must refuse before the first call writes.");
  m.def("survey_tensors", &survey_tensors, py::arg("tensors"),
        "(first_bad, n_dtensors, all_dense, one_device) of a list of tensors to clip, in one pass "
        "(see csrc/python/clip_helpers.cpp).");
}

}  // namespace fusedopt::python
