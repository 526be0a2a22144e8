// The C++ signatures of the optimizer and clipping op schemas (csrc/schemas/), for the code that calls
// those ops unboxed through the dispatcher: the launchers in csrc/python/<family>_step.cpp and the
// Autograd-key kernels in csrc/common/autograd_passthrough.cpp. A schema change is mirrored here once.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

namespace fusedopt::op_signatures {

using at::TensorList;
using OptTensor = const std::optional<at::Tensor>&;

using Sgd = void(TensorList, TensorList, TensorList, double, double, double, double, bool, bool, bool,
                 OptTensor, OptTensor, OptTensor, bool);
using Adam = void(TensorList, TensorList, TensorList, TensorList, TensorList, TensorList, double, double,
                  double, double, double, bool, bool, bool, TensorList, OptTensor, OptTensor, OptTensor,
                  bool);
using Rmsprop = void(TensorList, TensorList, TensorList, TensorList, TensorList, TensorList, double, double,
                     double, double, double, bool, bool, OptTensor, OptTensor, OptTensor, bool);
using Adagrad = void(TensorList, TensorList, TensorList, TensorList, double, double, double, double, bool,
                     OptTensor, OptTensor, OptTensor, bool);
using ClipByTotalNorm = void(TensorList, const at::Tensor&, double);
using TotalNorm = at::Tensor(TensorList, double);

}  // namespace fusedopt::op_signatures
