// The one TORCH_LIBRARY block of fusedopt (schemas per family in csrc/schemas/) and the module fusedopt._C.
//
// Backends register implementations with TORCH_LIBRARY_IMPL in csrc/cpu and csrc/cuda; fake (meta)
// implementations for torch.compile live in fusedopt/_ops/<family>.py. Conventions: mutating ops end in '_',
// mark what they write with (x!) and return nothing; optimizer ops take lockstep tensor lists (one call
// per param group and device) and hyperparameters as floats, with lr also accepted as a 1-element
// device tensor (lr_tensor, which wins when given) so that CUDA-graph capture can replay a changing lr.
// lr_tensor and found_inf are 1-element float32 tensors on the params' device; grad_scale too, or
// float64 (fusedopt/grad_scale.h).
#include <string>

#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "common/large_outputs.h"
#include "cpu/dispatch.h"
#include "schemas/schemas.h"

TORCH_LIBRARY(fusedopt, m) {
  fusedopt::schemas::define_optimizer_ops(m);
  fusedopt::schemas::define_adam_ops(m);
  fusedopt::schemas::define_rmsprop_adagrad_ops(m);
  fusedopt::schemas::define_clipping_ops(m);
  fusedopt::schemas::define_batch_norm_ops(m);
  fusedopt::schemas::define_dropout_ops(m);
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
  info["version"] = FUSEDOPT_VERSION;  // without the local version tag
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
  m.def("output_cache_stats", [] {
    const fusedopt::OutputCacheStats s = fusedopt::output_cache_stats();
    pybind11::dict d;
    d["cached_bytes"] = s.cached_bytes;
    d["cached_blocks"] = s.cached_blocks;
    d["limit_bytes"] = s.limit_bytes;
    d["reuses"] = s.reuses;
    return d;
  }, "The CPU output cache (csrc/common/large_outputs.h): freed blocks kept, limit, reuses so far.");
  m.def("release_output_cache", &fusedopt::release_output_cache,
        "Unmaps the CPU output cache's freed blocks; returns the bytes released.");
  m.def("set_output_cache_limit", &fusedopt::set_output_cache_limit, pybind11::arg("bytes"),
        "Sets the most bytes of freed blocks the CPU output cache keeps (0: none).");
  m.def("cuda_version", [] {
#ifdef FUSEDOPT_WITH_CUDA
    return pybind11::object(pybind11::int_(fusedopt::cuda::compiled_cuda_version()));
#else
    return pybind11::object(pybind11::none());
#endif
  }, "CUDA_VERSION of the toolkit the CUDA kernels were compiled with (e.g. 13000), or None.");
}
