// Host-side helper of fusedopt.nn.utils' clipping functions, in C++ because it touches every tensor on
// every call: at 2,000 gradients a Python loop of checks costs milliseconds, as much as the fused
// norm pass itself on a 2-core CPU.
#include <torch/csrc/autograd/python_variable.h>

#include "common/tensor_lists.h"
#include "python/collected_group.h"
#include "python/local_shards.h"

namespace fusedopt::python {
namespace {

// One pass over a list of tensors for clipping. Returns (first_bad, n_dtensors, all_dense,
// one_device): first_bad is the index of the first entry the fused kernels cannot take (not a tensor,
// an unsupported dtype, not strided, not on CPU/CUDA), -1 if none: the caller re-checks that entry in
// Python to raise torch-style errors naming it. all_dense: every plain tensor fills its memory (what
// the kernels walk); one_device: every entry is on the device of the first.
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

}  // namespace

void add_clip_helpers(py::module& m) {
  m.def("survey_tensors", &survey_tensors, py::arg("tensors"),
        "(first_bad, n_dtensors, all_dense, one_device) of a list of tensors to clip, in one pass "
        "(see csrc/python/clip_helpers.cpp).");
}

}  // namespace fusedopt::python
