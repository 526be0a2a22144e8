#include <cuda_runtime_api.h>

namespace fusedopt::cuda {

int compiled_cuda_version() { return CUDART_VERSION; }

}  // namespace fusedopt::cuda
