#include "common/adam_checks.h"

#include <array>

#include "common/tensor_lists.h"

namespace fusedopt {

namespace {

// With master_params: half-precision params, float32 masters of their shape and layout on their device.
void check_master_entries(const char* op, at::TensorList params, at::TensorList master_params, size_t begin,
                          size_t end) {
  for (size_t i = begin; i < end; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& m = master_params[i];
    TORCH_CHECK(p.scalar_type() == at::kHalf || p.scalar_type() == at::kBFloat16, op, ": params[", i,
                "] has dtype ", p.scalar_type(), "; with master_params, expected float16 or bfloat16 params");
    TORCH_CHECK(m.scalar_type() == at::kFloat, op, ": master_params[", i, "] has dtype ", m.scalar_type(),
                "; expected float32");
    TORCH_CHECK(m.device() == p.device(), op, ": master_params[", i, "] is on ", m.device(), " but params[", i,
                "] is on ", p.device(), "; expected the same device");
    TORCH_CHECK(m.sizes() == p.sizes(), op, ": master_params[", i, "] has shape ", m.sizes(), " but params[", i,
                "] has shape ", p.sizes(), "; expected the same shape");
    TORCH_CHECK(same_memory_order(m, p), op, ": master_params[", i, "] has strides ", m.strides(),
                " but params[", i, "] has strides ", p.strides(), "; expected the same memory layout");
  }
}

}  // namespace

void check_adam_inputs(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                       at::TensorList state_steps, bool amsgrad, at::TensorList master_params,
                       const std::optional<at::Tensor>& lr_tensor,
                       const std::optional<at::Tensor>& grad_scale,
                       const std::optional<at::Tensor>& found_inf, const EntryBlockFn& then) {
  constexpr const char* op = "fusedopt.adam_";
  const size_t n = params.size();
  TORCH_CHECK(!amsgrad || max_exp_avg_sqs.size() == n, op, ": amsgrad is set but max_exp_avg_sqs has ",
              max_exp_avg_sqs.size(), " tensors; expected one per param");
  TORCH_CHECK(amsgrad || max_exp_avg_sqs.empty(), op, ": amsgrad is not set but max_exp_avg_sqs has ",
              max_exp_avg_sqs.size(), " tensors; expected none");
  const bool has_master = !master_params.empty();
  // Lockstep groups: without masters all lists; with them, the half-precision params and grads, and
  // the float32 masters leading the states.
  const std::array<NamedTensorList, 5> all{{{"params", params},
                                            {"grads", grads},
                                            {"exp_avgs", exp_avgs},
                                            {"exp_avg_sqs", exp_avg_sqs},
                                            {"max_exp_avg_sqs", max_exp_avg_sqs, /*may_be_empty=*/!amsgrad}}};
  const std::array<NamedTensorList, 2> halves{{{"params", params}, {"grads", grads}}};
  const std::array<NamedTensorList, 4> masters{{{"master_params", master_params},
                                                {"exp_avgs", exp_avgs},
                                                {"exp_avg_sqs", exp_avg_sqs},
                                                {"max_exp_avg_sqs", max_exp_avg_sqs, /*may_be_empty=*/!amsgrad}}};
  if (!has_master) {
    check_list_lengths(op, all);
  } else {
    TORCH_CHECK(master_params.size() == n, op, ": master_params has ", master_params.size(),
                " tensors but params has ", n, "; expected none or one per param");
    check_list_lengths(op, halves);
    check_list_lengths(op, masters);
  }
  check_state_steps_length(op, params, state_steps);
  if (n == 0) return;
  const at::Device device = params[0].device();
  const at::Device master_device = has_master ? master_params[0].device() : device;
  run_entry_checks(n, [&](size_t begin, size_t end) {
    if (!has_master) {
      check_list_entries(op, all, device, begin, end);
    } else {
      check_list_entries(op, halves, device, begin, end);
      check_list_entries(op, masters, master_device, begin, end);
      check_master_entries(op, params, master_params, begin, end);
    }
    check_state_step_entries(op, params, state_steps, begin, end);
  }, then);
  check_scalar_tensor(op, "lr_tensor", lr_tensor, device);
  check_grad_scale(op, grad_scale, device);
  check_scalar_tensor(op, "found_inf", found_inf, device);
}

}  // namespace fusedopt
