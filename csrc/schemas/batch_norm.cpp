#include "schemas/schemas.h"

namespace fusedopt::schemas {

// Batch norm in the four steps that SyncBatchNorm needs apart (statistics can be merged across ranks
// between the two forward ops, and the two sums between the two backward ops). Inputs are (N, C, *)
// in float32/float64/float16/bfloat16; per-channel tensors (weight, bias, mean, var, sums) are 1-d of C
// values in float32, or float64 for float64 inputs. Outputs keep the input's memory format.
void define_batch_norm_ops(torch::Library& m) {
  // Per-channel mean and biased variance over the N * prod(spatial) values of each channel
  // (NaN for a channel with no values).
  m.def("batch_norm_stats(Tensor input) -> (Tensor mean, Tensor var)");
  // y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (weight, bias optional).
  m.def("batch_norm_elemt(Tensor input, Tensor? weight, Tensor? bias, Tensor mean, Tensor var, float eps) -> Tensor");
  // sum_dy = sum(grad_output), sum_dy_xmu = sum(grad_output * (input - mean)), per channel.
  m.def("batch_norm_backward_reduce(Tensor grad_output, Tensor input, Tensor mean) -> (Tensor sum_dy, Tensor sum_dy_xmu)");
  // grad_input of training-mode batch norm whose statistics came from `count` values per channel
  // (the global count under SyncBatchNorm), given the two sums over those values.
  m.def(
      "batch_norm_backward_elemt(Tensor grad_output, Tensor input, Tensor? weight, Tensor mean, Tensor var, "
      "Tensor sum_dy, Tensor sum_dy_xmu, int count, float eps) -> Tensor");
  // One-process training, each direction in one call (the CPU kernels then read each channel from
  // memory about once): batch_norm_stats + batch_norm_elemt, and batch_norm_backward_reduce +
  // batch_norm_backward_elemt with count = the values per channel. Same results as the split ops.
  m.def(
      "batch_norm_train(Tensor input, Tensor? weight, Tensor? bias, float eps) -> "
      "(Tensor out, Tensor mean, Tensor var)");
  // torch's running-statistics update, in place, from a batch's mean and biased var over `count` values
  // per channel: running = momentum * batch + (1 - momentum) * running, with the unbiased variance
  // var * count / (count - 1) (var itself when count <= 1). Either buffer may be absent; buffers are
  // 1-d of C values of any floating dtype on mean's device, updated in float32 (float64 when a buffer or
  // the statistics are float64).
  m.def(
      "batch_norm_update_running_stats_(Tensor(a!)? running_mean, Tensor(b!)? running_var, Tensor mean, "
      "Tensor var, int count, float momentum) -> ()");
  m.def(
      "batch_norm_train_backward(Tensor grad_output, Tensor input, Tensor? weight, Tensor mean, Tensor var, "
      "float eps) -> (Tensor grad_input, Tensor sum_dy, Tensor sum_dy_xmu)");
}

}  // namespace fusedopt::schemas
