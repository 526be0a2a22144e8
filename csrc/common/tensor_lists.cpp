#include "common/tensor_lists.h"

#include <algorithm>
#include <atomic>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

namespace fusedopt {

bool is_supported_dtype(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

bool same_memory_order(const at::Tensor& a, const at::Tensor& b) {
  if (a.is_contiguous() && b.is_contiguous()) return true;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

namespace {

// Long lists are checked on all threads: the checks read each tensor's metadata, which a step finds
// evicted by the update before it, so they wait on cache and TLB misses, which more cores overlap
// (AdamW over 2,000 params on the 2-core Xeon of benchmarks/: ~0.5 -> ~0.35 ms). Reads only; a
// failure is found again serially, so the error names the first failing entry as before.
constexpr size_t kParallelCheckMin = 512;
constexpr int64_t kParallelCheckGrain = 256;
// Entries ahead whose TensorImpls the checks prefetch: each entry's own misses are too few to keep the
// core's fill buffers busy.
constexpr size_t kCheckAhead = 8;

// fn over the blocks of [begin, end).
void for_blocks_of(size_t begin, size_t end, const EntryBlockFn& fn) {
  for (size_t b = begin; b < end; b += kEntryBlock) fn(b, std::min(end, b + kEntryBlock));
}

}  // namespace

bool entries_in_parallel(size_t n) {
  return n >= kParallelCheckMin && at::get_num_threads() > 1 && !at::in_parallel_region();
}

void for_entry_blocks(size_t n, const EntryBlockFn& fn) {
  if (entries_in_parallel(n)) {
    at::parallel_for(0, static_cast<int64_t>(n), kParallelCheckGrain, [&](int64_t begin, int64_t end) {
      for_blocks_of(static_cast<size_t>(begin), static_cast<size_t>(end), fn);
    });
  } else {
    for_blocks_of(0, n, fn);
  }
}

void run_entry_checks(size_t n, const EntryBlockFn& check, const EntryBlockFn& then) {
  const auto check_then = [&](size_t begin, size_t end) {
    check(begin, end);
    if (then) then(begin, end);
  };
  if (entries_in_parallel(n)) {
    std::atomic<bool> failed{false};
    for_entry_blocks(n, [&](size_t begin, size_t end) {
      if (failed) return;
      try {
        check_then(begin, end);
      } catch (...) {
        failed = true;
      }
    });
    if (!failed) return;
  }
  for_blocks_of(0, n, check_then);
}

void check_list_lengths(const char* op, c10::ArrayRef<NamedTensorList> lists) {
  TORCH_CHECK(!lists.empty(), op, ": no tensor lists given");
  const NamedTensorList& ref = lists[0];
  const size_t n = ref.tensors.size();
  for (const auto& list : lists) {
    if (list.may_be_empty && list.tensors.empty()) continue;
    TORCH_CHECK(list.tensors.size() == n, op, ": ", list.name, " has ", list.tensors.size(),
                " tensors but ", ref.name, " has ", n, "; expected one per ", ref.name, " entry");
  }
}

void check_list_entries(const char* op, c10::ArrayRef<NamedTensorList> lists, const at::Device& device,
                        size_t begin, size_t end) {
  const NamedTensorList& ref = lists[0];
  for (size_t i = begin; i < end; ++i) {
    // The metadata the checks read (sizes, strides, dtype, flags), a few entries ahead.
    for (const auto& list : lists) {
      if (i + kCheckAhead >= list.tensors.size()) continue;
      const auto* t = reinterpret_cast<const char*>(list.tensors[i + kCheckAhead].unsafeGetTensorImpl());
      for (size_t line = 0; line < sizeof(c10::TensorImpl); line += 64) __builtin_prefetch(t + line, 0, 3);
    }
    const at::Tensor& r = ref.tensors[i];
    for (const auto& list : lists) {
      if (list.may_be_empty && list.tensors.empty()) continue;
      const at::Tensor& t = list.tensors[i];
      TORCH_CHECK(t.defined(), op, ": ", list.name, "[", i, "] is undefined; expected a tensor");
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", list.name, "[", i, "] has layout ",
                  t.layout(), "; sparse tensors are not supported, expected strided");
      TORCH_CHECK(!at::isComplexType(t.scalar_type()), op, ": ", list.name, "[", i,
                  "] is complex (", t.scalar_type(), "); complex tensors are not supported");
      TORCH_CHECK(is_supported_dtype(t.scalar_type()), op, ": ", list.name, "[", i, "] has dtype ",
                  t.scalar_type(), "; expected float32, float64, float16 or bfloat16");
      TORCH_CHECK(t.device() == device, op, ": ", list.name, "[", i, "] is on ", t.device(),
                  " but ", ref.name, "[0] is on ", device, "; expected one device per call");
      TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": ", list.name, "[", i,
                  "] is not dense (strides ", t.strides(), " for shape ", t.sizes(),
                  "); expected a tensor whose elements fill its memory without gaps or overlap");
      if (&list == &ref) continue;
      TORCH_CHECK(t.scalar_type() == r.scalar_type(), op, ": ", list.name, "[", i, "] has dtype ",
                  t.scalar_type(), " but ", ref.name, "[", i, "] has dtype ", r.scalar_type(),
                  "; expected the same dtype");
      TORCH_CHECK(t.sizes() == r.sizes(), op, ": ", list.name, "[", i, "] has shape ", t.sizes(),
                  " but ", ref.name, "[", i, "] has shape ", r.sizes(), "; expected the same shape");
      TORCH_CHECK(same_memory_order(t, r), op, ": ", list.name, "[", i,
                  "] has strides ", t.strides(), " but ", ref.name, "[", i, "] has strides ",
                  r.strides(), "; expected the same memory layout");
    }
  }
}

void check_lockstep_lists(const char* op, c10::ArrayRef<NamedTensorList> lists,
                          std::optional<at::TensorList> state_steps, const EntryBlockFn& then) {
  check_list_lengths(op, lists);
  const at::TensorList params = lists[0].tensors;
  if (state_steps) check_state_steps_length(op, params, *state_steps);
  if (params.empty()) return;
  const at::Device device = params[0].device();
  run_entry_checks(params.size(), [&](size_t begin, size_t end) {
    check_list_entries(op, lists, device, begin, end);
    if (state_steps) check_state_step_entries(op, params, *state_steps, begin, end);
  }, then);
}

void check_state_steps_length(const char* op, at::TensorList params, at::TensorList state_steps) {
  TORCH_CHECK(state_steps.size() == params.size(), op, ": state_steps has ", state_steps.size(),
              " tensors but params has ", params.size(), "; expected one step count per param");
}

void check_state_step_entries(const char* op, at::TensorList params, at::TensorList state_steps,
                              size_t begin, size_t end) {
  for (size_t i = begin; i < end; ++i) {
    const at::Tensor& s = state_steps[i];
    TORCH_CHECK(s.defined(), op, ": state_steps[", i, "] is undefined; expected a tensor");
    TORCH_CHECK(s.layout() == at::kStrided, op, ": state_steps[", i, "] has layout ", s.layout(),
                "; expected a strided float32 tensor of one element");
    TORCH_CHECK(s.scalar_type() == at::kFloat, op, ": state_steps[", i, "] has dtype ",
                s.scalar_type(), "; expected float32");
    TORCH_CHECK(s.numel() == 1, op, ": state_steps[", i, "] has ", s.numel(),
                " elements; expected a 1-element tensor");
    TORCH_CHECK(s.device() == params[i].device(), op, ": state_steps[", i, "] is on ", s.device(),
                " but params[", i, "] is on ", params[i].device(), "; expected the same device");
  }
}

namespace {

void check_tensor_argument(const char* op, const char* name, const at::Tensor& t, const at::Device& device,
                         bool allow_float64) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || (allow_float64 && t.scalar_type() == at::kDouble), op,
              ": ", name, " has dtype ", t.scalar_type(),
              allow_float64 ? "; expected float32 or float64" : "; expected float32");
  TORCH_CHECK(t.device() == device, op, ": ", name, " is on ", t.device(),
              " but the tensors are on ", device, "; expected the same device");
}

}  // namespace

void check_scalar_tensor(const char* op, const char* name, const std::optional<at::Tensor>& t,
                         const at::Device& device) {
  if (!t.has_value()) return;
  TORCH_CHECK(!t->defined() || t->numel() == 1, op, ": ", name, " has ", t->numel(),
              " elements; expected a 1-element tensor");
  check_tensor_argument(op, name, *t, device, /*allow_float64=*/false);
}

void check_grad_scale(const char* op, const std::optional<at::Tensor>& grad_scale, const at::Device& device) {
  if (!grad_scale.has_value()) return;
  const at::Tensor& t = *grad_scale;
  TORCH_CHECK(!t.defined() || t.numel() == 1 || (t.numel() == 2 && t.is_contiguous()), op,
              ": grad_scale has ", t.numel(), " elements", t.numel() == 2 ? " (not contiguous)" : "",
              "; expected 1 element (the divisor) or 2 contiguous ones (divisor, multiplier)");
  check_tensor_argument(op, "grad_scale", t, device, /*allow_float64=*/true);
}

double read_cpu_scalar(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? *t.const_data_ptr<double>() : *t.const_data_ptr<float>();
}

GradScaleRef grad_scale_ref(const std::optional<at::Tensor>& grad_scale) {
  if (!grad_scale.has_value()) return {};
  return {grad_scale->const_data_ptr(), grad_scale->scalar_type() == at::kDouble, grad_scale->numel() == 2};
}

}  // namespace fusedopt
