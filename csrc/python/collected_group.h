// The lockstep lists of one param group (params with grads, grads, state tensors), gathered and checked
// by collect_group() in step_helpers.cpp. Each op family's launchers (csrc/python/<family>_step.cpp)
// call their op on a CollectedGroup through the dispatcher, so tensors never go back through Python
// lists on the hot path.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <torch/extension.h>

namespace fusedopt::python {

namespace py = pybind11;

// The tensors of one list of a CollectedGroup, for an op call: each either owned (a reference counted
// here) or borrowed from a Python tensor object that the group itself keeps alive. Borrowing is what
// makes a group cheap: a tensor that only its Python object references counts a C++ reference as
// the PyObject's too (the TensorImpl takes a reference to the object on the count's step from 1 to 2,
// and gives it back under the GIL on the step down), which made taking and dropping references a
// third of collect_group's time at 20,000 params. Copies of a TensorRefs own all their tensors.
class TensorRefs {
 public:
  TensorRefs() = default;
  TensorRefs(const TensorRefs& other) : tensors_(other.tensors_), borrowed_(other.tensors_.size(), 0) {}
  TensorRefs(TensorRefs&& other) noexcept
      : tensors_(std::move(other.tensors_)), borrowed_(std::move(other.borrowed_)) {
    other.tensors_.clear();
    other.borrowed_.clear();
  }
  TensorRefs& operator=(const TensorRefs& other) {
    if (this != &other) {
      clear();
      tensors_ = other.tensors_;
      borrowed_.assign(tensors_.size(), 0);
    }
    return *this;
  }
  TensorRefs& operator=(TensorRefs&& other) noexcept {
    if (this != &other) {
      clear();
      tensors_ = std::move(other.tensors_);
      borrowed_ = std::move(other.borrowed_);
      other.tensors_.clear();
      other.borrowed_.clear();
    }
    return *this;
  }
  ~TensorRefs() { clear(); }

  // The op's argument (valid while this lives and is not modified).
  const std::vector<at::Tensor>& tensors() const { return tensors_; }
  size_t size() const { return tensors_.size(); }
  const at::Tensor& operator[](size_t i) const { return tensors_[i]; }
  const at::Tensor& at(size_t i) const { return tensors_.at(i); }
  const at::Tensor& back() const { return tensors_.back(); }
  std::vector<at::Tensor>::const_iterator begin() const { return tensors_.begin(); }
  std::vector<at::Tensor>::const_iterator end() const { return tensors_.end(); }
  void reserve(size_t n) {
    tensors_.reserve(n);
    borrowed_.reserve(n);
  }

  void push_owned(at::Tensor t) {
    tensors_.push_back(std::move(t));
    borrowed_.push_back(0);
  }
  // `t` must stay alive, unchanged in identity, as long as this list holds it.
  void push_borrowed(const at::Tensor& t) {
    tensors_.push_back(c10::MaybeOwnedTraits<at::Tensor>::createBorrow(t));
    borrowed_.push_back(1);
  }
  void set_owned(size_t i, at::Tensor t) {
    TORCH_CHECK(i < tensors_.size(), "index ", i, " out of range");
    forget(i);
    tensors_[i] = std::move(t);
  }

  // Drops every reference, owned ones with their TensorImpls' counts prefetched for writing a few
  // tensors ahead: a group is dropped at the end of step(), after the update has streamed every
  // array through the caches, and each release is an atomic decrement that waits for its miss
  // before the next starts (a plain release of 10,000 tensors cost ~1.3 ms of misses in a row).
  void clear() {
    constexpr size_t kAhead = 16;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const size_t next = i + kAhead;
      if (next < tensors_.size() && !borrowed_[next] && tensors_[next].defined()) {
        __builtin_prefetch(tensors_[next].unsafeGetTensorImpl(), 1, 3);
      }
      forget(i);
      tensors_[i].reset();
    }
    tensors_.clear();
    borrowed_.clear();
  }

 private:
  // A borrowed entry becomes an undefined (owned) one without touching the count.
  void forget(size_t i) {
    if (borrowed_[i]) {
      c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(tensors_[i]);
      borrowed_[i] = 0;
    }
  }

  std::vector<at::Tensor> tensors_;
  std::vector<uint8_t> borrowed_;
};

// How a collected per-param scalar state (a step count) suits the kernels: as it is; to be moved or
// retyped first (they take a float32 0-dim tensor on the param's device; torch's non-fused optimizers
// keep steps on the CPU); or not at all (not a single value).
enum class ScalarFit { kOk, kFix, kBad };

inline ScalarFit scalar_fit(const at::Tensor& s, const at::Device& param_device) {
  if (s.layout() != at::kStrided || s.numel() != 1) return ScalarFit::kBad;
  if (s.scalar_type() != at::kFloat || s.device() != param_device || s.dim() != 0) return ScalarFit::kFix;
  return ScalarFit::kOk;
}

// The scalar_fit of one scalar key's collected states: the indices to fix, and the first index that
// cannot be a count (-1 if none) with its numel (-1 for a sparse tensor).
struct ScalarCheck {
  bool valid = false;  // false until collected, and again once a state of the key is replaced
  std::vector<int64_t> fixes;
  int64_t bad = -1;
  int64_t bad_numel = 0;

  void add(int64_t i, const at::Tensor& s, const at::Device& param_device) {
    if (bad >= 0) return;
    const ScalarFit fit = scalar_fit(s, param_device);
    if (fit == ScalarFit::kBad) {
      bad = i;
      bad_numel = s.layout() != at::kStrided ? -1 : s.numel();
    } else if (fit == ScalarFit::kFix) {
      fixes.push_back(i);
    }
  }

  // add() for a state whose fit is known not to be kBad.
  void add_fit(int64_t i, ScalarFit fit) {
    if (bad < 0 && fit == ScalarFit::kFix) fixes.push_back(i);
  }
};

// The params of one param group that have a grad, with their grads and state tensors.
struct CollectedGroup {
  // The Python params (for writing state back) and state objects: they keep alive the tensors that
  // params and states borrow. Declared before the lists, so destroyed after them.
  py::list param_objects;
  py::list state_objects;
  TensorRefs params;
  TensorRefs grads;  // owned: a grad is held by its param, which could drop it
  std::vector<std::string> keys;
  std::vector<TensorRefs> states;  // [key][i]; undefined where missing
  // Keys whose state is a per-param scalar (e.g. 'step'): not shape-checked, never layout-repaired.
  std::vector<std::string> scalar_keys;
  // [key]: scalar_fit of a scalar key's states, taken by collect_group as it collects them (so the
  // step-count check needs no second walk over them); invalid for other keys.
  std::vector<ScalarCheck> scalar_checks;
  std::vector<int64_t> grad_fixes;              // grads laid out unlike their param
  std::vector<int64_t> partial_grads;           // DTensor grads Partial where the param is Replicate
  std::vector<std::pair<int64_t, int64_t>> state_fixes;  // (key, i): dtype/device/layout differs
  std::vector<at::Device> devices;
  bool has_dtensor = false;  // some param is a DTensor (stepped as its local shard)
  // Set (and collection stopped) when a state tensor's shape differs from its param's: the caller
  // raises ValueError. (Returned rather than thrown: a C++ exception meant to become ValueError
  // crashed the interpreter under torch 2.11 / Python 3.12.)
  std::optional<std::tuple<int64_t, std::string, std::vector<int64_t>, std::vector<int64_t>>> bad_state;

  int64_t size() const { return static_cast<int64_t>(params.size()); }

  size_t key_index(const std::string& key) const {
    auto it = std::find(keys.begin(), keys.end(), key);
    TORCH_CHECK(it != keys.end(), "no state key '", key, "' was collected");
    return static_cast<size_t>(it - keys.begin());
  }

  std::vector<int64_t> missing(const std::string& key) const {
    std::vector<int64_t> out;
    const auto& list = states[key_index(key)];
    for (int64_t i = 0; i < size(); ++i) {
      if (!list[i].defined()) out.push_back(i);
    }
    return out;
  }

  py::list state_list(const std::string& key) const {
    py::list out;
    for (const auto& t : states[key_index(key)]) {
      if (t.defined()) out.append(py::cast(t));
      else out.append(py::none());
    }
    return out;
  }

  // The entries at `indices`, in that order.
  CollectedGroup select(const std::vector<int64_t>& indices) const {
    CollectedGroup out;
    out.keys = keys;
    out.scalar_keys = scalar_keys;
    out.has_dtensor = has_dtensor;  // conservative: of the whole group
    out.states.resize(keys.size());
    out.scalar_checks.resize(keys.size());  // not carried over: walked again if asked for
    for (int64_t i : indices) {
      TORCH_CHECK(i >= 0 && i < size(), "index ", i, " out of range");
      out.param_objects.append(param_objects[i]);
      out.params.push_owned(params[i]);
      out.grads.push_owned(grads[i]);
      for (size_t k = 0; k < keys.size(); ++k) out.states[k].push_owned(states[k][i]);
      if (std::find(out.devices.begin(), out.devices.end(), params[i].device()) == out.devices.end()) {
        out.devices.push_back(params[i].device());
      }
    }
    return out;
  }

  // One group per device, in order of first appearance.
  std::vector<CollectedGroup> by_device() const {
    if (devices.size() <= 1) return {*this};
    std::vector<CollectedGroup> out;
    for (const at::Device& d : devices) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < size(); ++i) {
        if (params[i].device() == d) idx.push_back(i);
      }
      out.push_back(select(idx));
    }
    return out;
  }

  TensorRefs& state_tensors(const std::string& key) { return states[key_index(key)]; }
};

// Registers each family's launchers on the module (definitions in csrc/python/<family>_step.cpp).
void add_sgd_step(py::module& m);
void add_adam_step(py::module& m);
void add_rmsprop_adagrad_step(py::module& m);
// fusedopt.nn.utils' per-call helper (csrc/python/clip_helpers.cpp).
void add_clip_helpers(py::module& m);
// Optimizer state for many CPU params from one allocation (csrc/python/state_allocation.cpp).
void add_state_allocation(py::module& m);

}  // namespace fusedopt::python
