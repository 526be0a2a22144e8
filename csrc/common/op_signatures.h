// The names and C++ signatures of the op schemas (csrc/schemas/) that C++ calls unboxed through the
// dispatcher (typed_op): the optimizer and clipping ops (from the launchers in
// csrc/python/<family>_step.cpp and clip_helpers.cpp, and the Autograd-key kernels in
// csrc/common/autograd_passthrough.cpp), and the dropout and batch norm ops (from their autograd,
// csrc/common/<family>_autograd.cpp). A schema change is mirrored here once.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

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
using Dropout = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, int64_t, std::optional<int64_t>,
                                                   std::optional<int64_t>, bool);
using DropoutInplace = at::Tensor(at::Tensor&, double, int64_t, std::optional<int64_t>, std::optional<int64_t>,
                                  bool);
using DropoutBackward = at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, at::OptionalIntArrayRef);
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using BatchNormTrain = Tensor3(const at::Tensor&, OptTensor, OptTensor, double);
using BatchNormTrainBackward = Tensor3(const at::Tensor&, const at::Tensor&, OptTensor, const at::Tensor&,
                                       const at::Tensor&, double);
using BatchNormElemt = at::Tensor(const at::Tensor&, OptTensor, OptTensor, const at::Tensor&, const at::Tensor&,
                                  double);
using BatchNormBackwardReduce = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                   const at::Tensor&);
using BatchNormUpdateRunningStats = void(OptTensor, OptTensor, const at::Tensor&, const at::Tensor&, int64_t,
                                         double);

inline constexpr char kSgdName[] = "fusedopt::sgd_";
inline constexpr char kAdamName[] = "fusedopt::adam_";
inline constexpr char kRmspropName[] = "fusedopt::rmsprop_";
inline constexpr char kAdagradName[] = "fusedopt::adagrad_";
inline constexpr char kClipByTotalNormName[] = "fusedopt::clip_by_total_norm_";
inline constexpr char kTotalNormName[] = "fusedopt::total_norm";
inline constexpr char kDropoutName[] = "fusedopt::dropout";
inline constexpr char kDropoutInplaceName[] = "fusedopt::dropout_";
inline constexpr char kDropoutBackwardName[] = "fusedopt::dropout_backward";
inline constexpr char kBatchNormTrainName[] = "fusedopt::batch_norm_train";
inline constexpr char kBatchNormTrainBackwardName[] = "fusedopt::batch_norm_train_backward";
inline constexpr char kBatchNormElemtName[] = "fusedopt::batch_norm_elemt";
inline constexpr char kBatchNormBackwardReduceName[] = "fusedopt::batch_norm_backward_reduce";
inline constexpr char kBatchNormUpdateRunningStatsName[] = "fusedopt::batch_norm_update_running_stats_";

// The op kName with C++ signature Signature, looked up in the dispatcher once.
template <const char* kName, class Signature>
const c10::TypedOperatorHandle<Signature>& typed_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").template typed<Signature>();
  return op;
}

}  // namespace fusedopt::op_signatures
