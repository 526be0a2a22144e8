// Every op schema of fusedopt, defined once, and the Python module fusedopt._C.
//
// Backends register implementations with TORCH_LIBRARY_IMPL in csrc/cpu and csrc/cuda; fake (meta)
// implementations for torch.compile live in fusedopt/_ops.py. Conventions: mutating ops end in '_',
// mark what they write with (x!) and return nothing; optimizer ops take lockstep tensor lists (one call
// per param group and device) and hyperparameters as floats, with lr also accepted as a 1-element
// device tensor (lr_tensor, which wins when given) so that CUDA-graph capture can replay a changing lr.
#include <string>

#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "cpu/dispatch.h"

TORCH_LIBRARY(fusedopt, m) {
  // SGD with momentum/dampening/Nesterov/weight decay/maximize, as torch.optim.SGD. is_first_step sets
  // each buffer to its (decayed) gradient. With grad_scale, grads are divided by it and written back;
  // with found_inf != 0 nothing is written.
  m.def(
      "sgd_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, *, float lr, "
      "float weight_decay, float momentum, float dampening, bool nesterov, bool maximize, "
      "bool is_first_step, Tensor? lr_tensor=None, Tensor? grad_scale=None, "
      "Tensor? found_inf=None) -> ()");
}

namespace fusedopt::python {
void add_step_helpers(pybind11::module& m);  // csrc/python/step_helpers.cpp
}

#ifdef FUSEDOPT_WITH_CUDA
namespace fusedopt::cuda {
int compiled_cuda_version();  // csrc/cuda/cuda_info.cu
}
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = FUSEDOPT_VERSION;
  info["torch_version"] = FUSEDOPT_TORCH_VERSION;
#ifdef FUSEDOPT_WITH_CUDA
  info["with_cuda"] = true;
  info["cuda_arch_list"] = FUSEDOPT_CUDA_ARCH_LIST;
#else
  info["with_cuda"] = false;
  info["cuda_arch_list"] = "";
#endif
  pybind11::list caps;
  caps.append("DEFAULT");
#ifdef FUSEDOPT_CPU_HAVE_AVX2
  caps.append("AVX2");
#endif
#ifdef FUSEDOPT_CPU_HAVE_AVX512
  caps.append("AVX512");
#endif
  info["cpu_capabilities"] = caps;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedopt's compiled kernels; the ops themselves are torch.ops.fusedopt.*";
  m.def("build_info", &build_info, "How this extension was built.");
  fusedopt::python::add_step_helpers(m);
  m.def("cpu_capability",
        [] { return std::string(fusedopt::cpu::capability_name(fusedopt::cpu::active_capability())); },
        "The CPU kernel variant in use (DEFAULT, AVX2 or AVX512).");
  m.def("cuda_version", [] {
#ifdef FUSEDOPT_WITH_CUDA
    return pybind11::object(pybind11::int_(fusedopt::cuda::compiled_cuda_version()));
#else
    return pybind11::object(pybind11::none());
#endif
  }, "CUDA_VERSION of the toolkit the CUDA kernels were compiled with (e.g. 13000), or None.");
}
