// Prefetching the host-side metadata of many tensors (Python objects, TensorImpls, autograd metadata,
// storages) before a pass that reads it, for the launchers that walk every param on every call
// (collect_group, clip_grad_norm_'s fused path).
//
// A training step finds this metadata evicted by forward and backward. A pass that walks one param at
// a time meets it as a chain of dependent cache misses per param (object -> TensorImpl -> autograd
// metadata -> grad -> ...), each waiting for the one before. These helpers are short loops over a
// block of params that follow one more pointer per param per loop and prefetch what it points to, so
// the CPU overlaps the misses of many params. Reads and prefetches only, and no Python API
// call: safe on threads without the GIL.
#pragma once

#include <cstdint>

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/extension.h>

namespace fusedopt::python {

// Params per prefetched block: what a block brings in stays within L2 until the pass reads it.
constexpr int64_t kPrefetchBlock = 256;

inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// Every cache line of [p, p + bytes).
inline void prefetch_bytes(const void* p, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
  const uintptr_t last = reinterpret_cast<uintptr_t>(p) + bytes - 1;
  for (uintptr_t line = first; line <= last; line += 64) prefetch(reinterpret_cast<const void*>(line));
}

// All the lines of a TensorImpl: its refcount, sizes and strides, dtype and device are each read.
inline void prefetch_tensor_impl(const c10::TensorImpl* t) { prefetch_bytes(t, sizeof(c10::TensorImpl)); }

// Null for a tensor without storage (e.g. a DTensor's wrapper).
inline const c10::StorageImpl* storage_impl(const c10::TensorImpl* t) {
  return t->unsafe_storage().unsafeGetStorageImpl();
}

// Null for anything but a Tensor or Parameter object. Only their exact types are compared: these
// helpers also run on threads that do not hold the GIL (collect_group's parallel read), where
// THPVariable_Check's isinstance calls into Python for a tensor subclass (DTensor) or a non-tensor (it
// allocates a bound __instancecheck__) and can corrupt the interpreter's heap. Subclasses are not
// prefetched.
inline c10::TensorImpl* tensor_impl_or_null(PyObject* obj) {
  return obj != nullptr && THPVariable_CheckExact(obj) ? THPVariable_Unpack(obj).unsafeGetTensorImpl() : nullptr;
}

// The grad of a tensor object (what Tensor.grad returns, without its non-leaf warning), null when it
// is not a tensor or has no grad.
inline const at::Tensor* grad_or_null(PyObject* obj) {
  auto* t = tensor_impl_or_null(obj);
  if (t == nullptr || t->autograd_meta() == nullptr) return nullptr;
  const at::Tensor& g = t->grad();
  return g.defined() ? &g : nullptr;
}

// For the entries [begin, end) of `items` (a list's items; non-tensors are skipped): the objects,
// their TensorImpls, the autograd metadata that holds their grads, the grads' TensorImpls, and the
// params' and grads' storages.
inline void prefetch_params_and_grads(PyObject* const* items, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) prefetch(items[i]);
  for (int64_t i = begin; i < end; ++i) {
    if (auto* t = tensor_impl_or_null(items[i])) prefetch_tensor_impl(t);
  }
  for (int64_t i = begin; i < end; ++i) {
    auto* t = tensor_impl_or_null(items[i]);
    if (t != nullptr && t->autograd_meta() != nullptr) {
      prefetch(&static_cast<torch::autograd::AutogradMeta*>(t->autograd_meta())->grad_);
    }
  }
  for (int64_t i = begin; i < end; ++i) {
    if (const at::Tensor* g = grad_or_null(items[i])) {
      prefetch_tensor_impl(g->unsafeGetTensorImpl());
      if (auto* s = storage_impl(tensor_impl_or_null(items[i]))) prefetch(s);
    }
  }
  for (int64_t i = begin; i < end; ++i) {
    if (const at::Tensor* g = grad_or_null(items[i])) {
      if (auto* s = storage_impl(g->unsafeGetTensorImpl())) prefetch(s);
    }
  }
}

}  // namespace fusedopt::python
