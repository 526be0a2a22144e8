// Host-side helpers of the Python optimizers, in C++ because they touch every parameter every step:
// at 20,000 parameters a Python loop, or passing Python lists to an op, costs milliseconds.
//
// collect_group() makes one checked pass over a param group and keeps the lockstep lists in C++
// (CollectedGroup, collected_group.h); the <op>_group() launchers in csrc/python/<family>_step.cpp call
// the op through the dispatcher with those lists.
#include <algorithm>
#include <array>
#include <sstream>

#include "common/tensor_lists.h"
#include "python/collected_group.h"
#include "python/local_shards.h"
#include "python/metadata_prefetch.h"

namespace fusedopt::python {
namespace {

// state[param] without calling Tensor.__hash__, a Python function (~80 ns, most of the per-param cost
// of a step). torch.Tensor.__hash__ returns id(self), so for params whose type inherits exactly that
// method (Tensor, Parameter) the dict lookup can be handed the hash; anything else takes the normal
// path. Types are checked once (the GIL guards the cache).
bool hashes_by_id(PyObject* param) {
  static std::vector<PyTypeObject*> verified;
  PyTypeObject* type = Py_TYPE(param);
  if (std::find(verified.begin(), verified.end(), type) != verified.end()) return true;
  static PyObject* tensor_hash = PyObject_GetAttrString(THPVariableClass, "__hash__");
  PyObject* hash = PyObject_GetAttrString(reinterpret_cast<PyObject*>(type), "__hash__");
  if (hash == nullptr) PyErr_Clear();
  bool ok = hash != nullptr && hash == tensor_hash;
  Py_XDECREF(hash);
  if (ok) {
    const Py_hash_t h = PyObject_Hash(param);  // and it does return id(self)
    if (h == -1) PyErr_Clear();
    ok = h == reinterpret_cast<Py_hash_t>(param);
  }
  if (ok && verified.size() < 16) verified.push_back(type);
  return ok;
}

PyObject* state_entry(PyObject* state, PyObject* param) {
#if PY_VERSION_HEX < 0x030D0000
  if (hashes_by_id(param)) {
    PyObject* entry = _PyDict_GetItem_KnownHash(state, param, reinterpret_cast<Py_hash_t>(param));
    if (entry != nullptr || !PyErr_Occurred()) return entry;
    PyErr_Clear();
  }
#endif
  return PyDict_GetItem(state, param);  // borrowed; no defaultdict insertion
}

[[noreturn]] void fail(const std::string& where, int64_t index, const std::string& what) {
  throw std::runtime_error(where + ", param " + std::to_string(index) + ": " + what);
}

std::string describe(const at::Tensor& t) {
  std::ostringstream os;
  os << t.scalar_type() << " " << t.sizes() << " on " << t.device();
  return os.str();
}

// ---- Skipping the state lookups of an unchanged param group ----------------------------------------
// CPython 3.11 to 3.13 stamp every dict with a tag (ma_version_tag, PEP 509) drawn from a global
// counter when the dict is created and whenever it is modified. So if `optimizer.state` carries the tag
// it had when a param's state was looked up, that param still maps to the same state dict, alive
// (the state dict holds it); if that dict carries its tag too, its values are the same objects. A
// step of a group that lists the same param objects as the one before, with no state added, removed
// or replaced in between (every step of a training loop after the first two), then skips the
// lookups: a probe of the dict of all params' states and one per state key, most of collect_group's
// cost at 20,000 params. Only the lookups are skipped: everything found is checked as before (a
// tensor may have changed in place, e.g. through `.data`). Python 3.14 dropped the tag: there, and
// in free-threaded builds, every step looks up.
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define FUSEDOPT_DICT_TAGS 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // ma_version_tag, from 3.12
uint64_t dict_tag(PyObject* dict) { return reinterpret_cast<PyDictObject*>(dict)->ma_version_tag; }
#pragma GCC diagnostic pop
#else
#define FUSEDOPT_DICT_TAGS 0
#endif

// What collect_group looked up for one param group, kept by the optimizer between steps. Holds no
// references: objects are compared by address, and dereferenced only once the tags prove them alive.
struct StateLookups {
  std::vector<std::string> keys;
  PyObject* state = nullptr;   // optimizer.state when recorded, and its tag then
  uint64_t state_tag = 0;
  std::vector<PyObject*> params;  // the group's list of params then
  // Per position in that list: whether recorded (a param with a grad, hashed by id, whose state was
  // missing or a dict), state[param] (null when missing), its tag, and [i * keys + s] its values.
  std::vector<uint8_t> recorded;
  std::vector<PyObject*> entries;
  std::vector<uint64_t> entry_tags;
  std::vector<PyObject*> values;
  int64_t reuses = 0;   // steps that found this group unchanged (for tests)
  int64_t settled = 0;  // params taken as read on all threads (read_settled_entry; for tests)

  // Whether what was recorded still holds for this call; if not, starts recording afresh.
  bool reusable(PyObject* list, PyObject* state_dict, const std::vector<std::string>& call_keys) {
#if FUSEDOPT_DICT_TAGS
    const auto n = static_cast<size_t>(PyList_GET_SIZE(list));
    PyObject** items = PySequence_Fast_ITEMS(list);
    if (state == state_dict && state_tag == dict_tag(state_dict) && keys == call_keys && params.size() == n &&
        std::equal(params.begin(), params.end(), items)) {
      ++reuses;
      return true;
    }
    keys = call_keys;
    state = state_dict;
    state_tag = dict_tag(state_dict);
    params.assign(items, items + n);
    recorded.assign(n, 0);
    entries.assign(n, nullptr);
    entry_tags.assign(n, 0);
    values.assign(n * keys.size(), nullptr);
#endif
    return false;
  }
};

// What collect_group reads of one block of params, gathered ahead of its checking pass
// (metadata_prefetch.h): the params' and grads' metadata, then each param's state dict entry, its
// table, the state objects, their TensorImpls and storages, and the values of per-param scalar states
// (the op reads them). Collecting 2,000 params took ~5.3 ms cold against ~1.4 ms warm with none of
// this, ~3 ms with it (most of the rest is TLB misses: each param's metadata sits on pages of its
// own, beside its data). The state lookups made on the way are kept (strong references), not
// repeated; the op that runs next finds the storages cached too.
struct BlockLookahead {
  std::vector<py::object> entries;  // state[param] of the block's params with grads, else null
  std::vector<py::object> values;   // [i * keys + s]: entries[i][key s], else null
};

// `lookups` (may be null): the group's StateLookups, `reuse` whether its records hold for this call
// (taken instead of looking up, per param where its state dict's tag still matches; otherwise what is
// looked up is recorded).
void look_ahead(PyObject* list, int64_t begin, int64_t end, PyObject* state,
                const std::vector<py::object>& keys, const std::vector<bool>& is_scalar,
                StateLookups* lookups, bool reuse, BlockLookahead& ahead) {
  PyObject** items = PySequence_Fast_ITEMS(list);
  const int64_t n = end - begin;
  const size_t nkeys = keys.size();
  ahead.entries.assign(n, py::object());
  ahead.values.assign(n * nkeys, py::object());
  prefetch_params_and_grads(items, begin, end);
  if (nkeys == 0) return;
  for (int64_t i = 0; i < n; ++i) {  // the state entries of params with grads
    PyObject* param = items[begin + i];
    if (grad_or_null(param) == nullptr) continue;
    PyObject* entry = nullptr;
    if (reuse && lookups->recorded[begin + i]) {
      entry = lookups->entries[begin + i];
    } else {
      entry = state_entry(state, param);
      if (lookups != nullptr && hashes_by_id(param) &&
          (entry == nullptr || PyDict_Check(entry))) {
        lookups->recorded[begin + i] = 1;
        lookups->entries[begin + i] = entry;
        lookups->entry_tags[begin + i] = 0;  // values not recorded yet (tags are never 0)
      }
    }
    if (entry != nullptr) {
      prefetch(entry);
      ahead.entries[i] = py::reinterpret_borrow<py::object>(entry);
    }
  }
  // Per param: whether the recorded values hold (its state dict unchanged since they were recorded).
  std::vector<uint8_t> recorded_values(n, 0);
  for (int64_t i = 0; i < n; ++i) {  // their tables, or the recorded values
    PyObject* entry = ahead.entries[i].ptr();
    if (entry == nullptr || !PyDict_Check(entry)) continue;
#if FUSEDOPT_DICT_TAGS
    if (reuse && lookups->recorded[begin + i] && lookups->entry_tags[begin + i] == dict_tag(entry)) {
      recorded_values[i] = 1;
      for (size_t s = 0; s < nkeys; ++s) {
        if (PyObject* value = lookups->values[(begin + i) * nkeys + s]) prefetch(value);
      }
      continue;
    }
#endif
    const auto* dict = reinterpret_cast<const PyDictObject*>(entry);
    prefetch_bytes(dict->ma_keys, 128);
    if (dict->ma_values != nullptr) prefetch(dict->ma_values);
  }
  for (int64_t i = 0; i < n; ++i) {  // the state objects
    PyObject* entry = ahead.entries[i].ptr();
    if (entry == nullptr || !PyDict_Check(entry)) continue;
    PyObject** recorded = lookups != nullptr ? lookups->values.data() + (begin + i) * nkeys : nullptr;
    if (recorded_values[i]) {
      for (size_t s = 0; s < nkeys; ++s) {
        if (recorded[s] != nullptr) ahead.values[i * nkeys + s] = py::reinterpret_borrow<py::object>(recorded[s]);
      }
      continue;
    }
    const bool record = lookups != nullptr && lookups->recorded[begin + i];
#if FUSEDOPT_DICT_TAGS
    if (record) lookups->entry_tags[begin + i] = dict_tag(entry);  // read before the lookups
#endif
    for (size_t s = 0; s < nkeys; ++s) {
      PyObject* value = PyDict_GetItem(entry, keys[s].ptr());  // borrowed
      if (record) recorded[s] = value;
      if (value != nullptr) {
        prefetch(value);
        ahead.values[i * nkeys + s] = py::reinterpret_borrow<py::object>(value);
      }
    }
  }
  for (const auto& value : ahead.values) {
    if (auto* t = tensor_impl_or_null(value.ptr())) prefetch_tensor_impl(t);
  }
  for (const auto& value : ahead.values) {
    if (auto* t = tensor_impl_or_null(value.ptr())) {
      if (auto* s = storage_impl(t)) prefetch(s);
    }
  }
  for (size_t j = 0; j < ahead.values.size(); ++j) {  // per-param scalars: the op reads their values
    auto* t = is_scalar[j % nkeys] ? tensor_impl_or_null(ahead.values[j].ptr()) : nullptr;
    if (t == nullptr) continue;
    if (auto* s = storage_impl(t)) prefetch(s->data_ptr().get());
  }
}

// ---- What the kernels take: one set of rules for the full pass and the settled read ----------------
// The first reason a param with a grad cannot be stepped by a fused kernel (kOk: none).
enum class GradProblem { kOk, kSparse, kComplex, kDtype, kMismatch, kGaps };

GradProblem grad_problem(const at::Tensor& p, const at::Tensor& g) {
  if (g.layout() != at::kStrided) return GradProblem::kSparse;
  if (at::isComplexType(p.scalar_type())) return GradProblem::kComplex;
  if (!is_supported_dtype(p.scalar_type())) return GradProblem::kDtype;
  if (g.scalar_type() != p.scalar_type() || g.device() != p.device() || g.sizes() != p.sizes()) {
    return GradProblem::kMismatch;
  }
  if (!p.is_non_overlapping_and_dense()) return GradProblem::kGaps;
  return GradProblem::kOk;
}

// Whether a grad or state tensor of the param's shape is laid out unlike the param (gaps, or another
// memory order); a state also needs a repair when of another dtype or device (repair_layouts).
bool laid_out_unlike(const at::Tensor& p, const at::Tensor& t) {
  return !t.is_non_overlapping_and_dense() || !same_memory_order(p, t);
}
bool state_needs_fix(const at::Tensor& p, const at::Tensor& t) {
  return t.scalar_type() != p.scalar_type() || t.device() != p.device() || laid_out_unlike(p, t);
}

#if FUSEDOPT_DICT_TAGS
// ---- Reading an unchanged group on all threads -----------------------------------------------------
// Once a group's lookups are kept (StateLookups), what is left of collect_group per param is reading
// and checking metadata, ~200 ns per param on the 2-core Xeon of benchmarks/ whether or not it is in
// cache. For long groups that reading runs first on all threads (read_settled_entry), and only reads:
// no Python call, no reference taken, nothing that raises. A param it vouches for is "settled": a
// plain Tensor or Parameter (not a subclass, not a DTensor) without a grad, or with a grad that passes
// every check, whose state dict is the one recorded, unchanged, holding plain tensors of the param's
// shape. collect_group then takes references to a block of settled params in order on the calling
// thread; a block with any other param takes the full pass, which raises, records and looks up as
// before.
constexpr size_t kMaxSettledKeys = 8;
constexpr int64_t kTakeAhead = 16;  // params ahead whose counts take_settled prefetches

struct SettledEntry {
  c10::TensorImpl* grad = nullptr;                   // the grad's, when it has one
  bool settled = false;
  bool has_grad = false;
  bool grad_fix = false;
  uint32_t state_fixes = 0;                          // bit s: state s laid out unlike the param
  uint32_t scalar_fixes = 0;                         // bit s: scalar state s to be moved or retyped
  at::Device device{at::kCPU};                       // the param's
  std::array<PyObject*, kMaxSettledKeys> values{};  // state[param][key s], borrowed; null when missing
};

// The tensor of a plain tensor object (Tensor or Parameter, not a subclass) that no Python code
// handles (not a DTensor or other Python tensor subclass), else null.
const at::Tensor* plain_tensor(PyObject* obj) {
  if (obj == nullptr || !THPVariable_CheckExact(obj)) return nullptr;
  const at::Tensor& t = THPVariable_Unpack(obj);
  return t.unsafeGetTensorImpl()->is_python_dispatch() ? nullptr : &t;
}

// Param i of the group (`obj`) as collect_group's full pass would take it, when settled (above).
// `lookups` are reusable for this call.
SettledEntry read_settled_entry(PyObject* obj, size_t i, const StateLookups& lookups,
                                const std::vector<bool>& is_scalar) {
  SettledEntry e;
  try {
    const at::Tensor* param = plain_tensor(obj);
    if (param == nullptr) return e;
    const at::Tensor& p = *param;
    const at::Tensor& g = p.grad();
    if (!g.defined()) {
      e.settled = true;
      return e;
    }
    if (g.unsafeGetTensorImpl()->is_python_dispatch() || grad_problem(p, g) != GradProblem::kOk) return e;
    e.has_grad = true;
    e.grad = g.unsafeGetTensorImpl();
    e.device = p.device();
    e.grad_fix = laid_out_unlike(p, g);
    const size_t nkeys = is_scalar.size();
    if (nkeys > 0) {
      if (!lookups.recorded[i]) return e;
      PyObject* entry = lookups.entries[i];
      if (entry != nullptr) {  // recorded entries are dicts
        if (lookups.entry_tags[i] != dict_tag(entry)) return e;
        for (size_t s = 0; s < nkeys; ++s) e.values[s] = lookups.values[i * nkeys + s];
      }
    }
    for (size_t s = 0; s < nkeys; ++s) {
      if (e.values[s] == nullptr) continue;
      const at::Tensor* state = plain_tensor(e.values[s]);
      if (state == nullptr) return e;
      const at::Tensor& t = *state;
      if (is_scalar[s]) {
        const ScalarFit fit = scalar_fit(t, e.device);
        if (fit == ScalarFit::kBad) return e;  // the full pass records it
        if (fit == ScalarFit::kFix) e.scalar_fixes |= 1u << s;
        continue;
      }
      if (t.sizes() != p.sizes()) return e;
      if (state_needs_fix(p, t)) e.state_fixes |= 1u << s;
    }
    e.settled = true;
  } catch (...) {
    e.settled = false;
  }
  return e;
}

// What read_settled_entry reads of the params [begin, end) of an unchanged group, prefetched in stages
// (one pointer further per loop, as look_ahead does for the full pass). Read one param at a time, each
// param is a chain of dependent misses (object, TensorImpl, autograd metadata, grad, state dict, state
// objects, their TensorImpls).
void prefetch_settled_block(PyObject* const* items, size_t begin, size_t end, const StateLookups& lookups,
                            size_t nkeys) {
  prefetch_params_and_grads(items, static_cast<int64_t>(begin), static_cast<int64_t>(end));
  if (nkeys == 0) return;
  for (size_t i = begin; i < end; ++i) {
    if (lookups.recorded[i] && lookups.entries[i] != nullptr) prefetch(lookups.entries[i]);
  }
  for (size_t i = begin; i < end; ++i) {
    // Recorded values are alive only while their state dict is unchanged (its tag, which
    // read_settled_entry checks again); a stale one is not followed.
    PyObject* entry = lookups.recorded[i] ? lookups.entries[i] : nullptr;
    if (entry == nullptr || lookups.entry_tags[i] != dict_tag(entry)) continue;
    for (size_t s = 0; s < nkeys; ++s) {
      if (PyObject* value = lookups.values[i * nkeys + s]) prefetch(value);
    }
  }
  for (size_t i = begin; i < end; ++i) {
    PyObject* entry = lookups.recorded[i] ? lookups.entries[i] : nullptr;
    if (entry == nullptr || lookups.entry_tags[i] != dict_tag(entry)) continue;
    for (size_t s = 0; s < nkeys; ++s) {
      if (auto* t = tensor_impl_or_null(lookups.values[i * nkeys + s])) prefetch_tensor_impl(t);
    }
  }
}

// Prefetches for writing what take_settled changes for a settled param, kTakeAhead params ahead: the
// reference counts of its object, its grad and its state objects. Without it, taking 20,000 settled
// params was ~3 ms of misses in a row (half of them read last by the other thread).
void prefetch_take(PyObject* obj, const SettledEntry& e, size_t nkeys) {
  __builtin_prefetch(obj, 1, 3);
  if (!e.has_grad) return;
  __builtin_prefetch(e.grad, 1, 3);
  for (size_t s = 0; s < nkeys; ++s) {
    if (e.values[s] != nullptr) __builtin_prefetch(e.values[s], 1, 3);
  }
}

// Appends a settled param (read_settled_entry) to `out` as collect_group's full pass would.
void take_settled(CollectedGroup& out, PyObject* obj, const SettledEntry& e, const std::vector<bool>& is_scalar) {
  if (!e.has_grad) return;
  const at::Tensor& p = THPVariable_Unpack(obj);
  const int64_t k = out.size();
  if (e.grad_fix) out.grad_fixes.push_back(k);
  for (size_t s = 0; s < is_scalar.size(); ++s) {
    PyObject* value = e.values[s];
    if (value == nullptr) {
      out.states[s].push_owned(at::Tensor());
      continue;
    }
    const at::Tensor& t = THPVariable_Unpack(value);
    out.state_objects.append(py::handle(value));
    out.states[s].push_borrowed(t);
    if (is_scalar[s]) {
      out.scalar_checks[s].add_fit(k, e.scalar_fixes >> s & 1u ? ScalarFit::kFix : ScalarFit::kOk);
    } else if (e.state_fixes >> s & 1u) {
      out.state_fixes.emplace_back(static_cast<int64_t>(s), k);
    }
  }
  if (std::find(out.devices.begin(), out.devices.end(), e.device) == out.devices.end()) {
    out.devices.push_back(e.device);
  }
  out.param_objects.append(py::handle(obj));
  out.params.push_borrowed(p);
  out.grads.push_owned(at::Tensor(c10::intrusive_ptr<c10::TensorImpl>::reclaim_copy(e.grad)));  // p.grad()
}
#endif  // FUSEDOPT_DICT_TAGS

// One pass over a param group before its step: keeps the params that have a grad, their grads and
// their state tensors under `keys`, and notes what needs a layout repair. Raises, naming `where` and
// the param's index in the group, for what no fused kernel can take: sparse grads, complex or
// non-floating params, a grad of another dtype/shape/device, a param with gaps in its memory; a
// state tensor of another shape than its param is reported in bad_state. Modifies nothing but
// `lookups` (may be null), the group's lookups kept between steps (StateLookups).
CollectedGroup collect_group(const py::list& group_params, const py::dict& state,
                             const std::vector<std::string>& keys, const std::string& where,
                             const std::vector<std::string>& scalar_keys, StateLookups* lookups) {
  CollectedGroup out;
  out.keys = keys;
  out.scalar_keys = scalar_keys;
  std::vector<bool> is_scalar;
  for (const auto& k : keys) {
    is_scalar.push_back(std::find(scalar_keys.begin(), scalar_keys.end(), k) != scalar_keys.end());
  }
  out.states.resize(keys.size());
  out.scalar_checks.resize(keys.size());
  std::vector<py::object> key_objects;  // interned once: per-param lookups then hash nothing new
  for (const auto& k : keys) key_objects.push_back(py::reinterpret_steal<py::object>(PyUnicode_InternFromString(k.c_str())));
  const int64_t n = static_cast<int64_t>(group_params.size());
  out.params.reserve(n);
  out.grads.reserve(n);
  for (auto& s : out.states) s.reserve(n);
  if (!FUSEDOPT_DICT_TAGS) lookups = nullptr;  // nothing can prove a record current
  const bool reuse = lookups != nullptr && lookups->reusable(group_params.ptr(), state.ptr(), keys);
#if FUSEDOPT_DICT_TAGS
  // An unchanged long group: its params read on all threads first (read_settled_entry).
  std::vector<SettledEntry> settled;
  if (reuse && keys.size() <= kMaxSettledKeys && entries_in_parallel(static_cast<size_t>(n))) {
    settled.resize(n);
    PyObject** items = PySequence_Fast_ITEMS(group_params.ptr());
    for_entry_blocks(static_cast<size_t>(n), [&](size_t begin, size_t end) {
      prefetch_settled_block(items, begin, end, *lookups, keys.size());
      for (size_t i = begin; i < end; ++i) settled[i] = read_settled_entry(items[i], i, *lookups, is_scalar);
    });
  }
#endif
  BlockLookahead ahead;
  int64_t block_begin = 0;
  bool block_settled = false;
  for (int64_t i = 0; i < n; ++i) {
    if (i % kPrefetchBlock == 0) {
      block_begin = i;
      const int64_t block_end = std::min(n, i + kPrefetchBlock);
#if FUSEDOPT_DICT_TAGS
      block_settled = !settled.empty() && std::all_of(settled.begin() + i, settled.begin() + block_end,
                                                      [](const SettledEntry& e) { return e.settled; });
#endif
      if (!block_settled) {
        look_ahead(group_params.ptr(), i, block_end, state.ptr(), key_objects, is_scalar, lookups, reuse, ahead);
      }
    }
    PyObject* obj = PyList_GET_ITEM(group_params.ptr(), i);
#if FUSEDOPT_DICT_TAGS
    if (block_settled) {
      if (i + kTakeAhead < n) {
        prefetch_take(PyList_GET_ITEM(group_params.ptr(), i + kTakeAhead), settled[i + kTakeAhead], keys.size());
      }
      take_settled(out, obj, settled[i], is_scalar);
      ++lookups->settled;
      continue;
    }
#endif
    if (!THPVariable_Check(obj)) fail(where, i, "is not a tensor");
    const at::Tensor& p_arg = THPVariable_Unpack(obj);
    const at::Tensor& g_arg = p_arg.grad();
    if (!g_arg.defined()) continue;
    // A DTensor param is checked and stepped as its local shard (local_shards.h); the rest unchanged.
    const bool sharded = is_dtensor(p_arg);
    out.has_dtensor = out.has_dtensor || sharded;
    std::pair<at::Tensor, at::Tensor> shard;
    bool partial_grad = false;
    if (sharded) shard = local_param_and_grad(obj, g_arg, where, i, &partial_grad);
    const at::Tensor& p = sharded ? shard.first : p_arg;
    const at::Tensor& g = sharded ? shard.second : g_arg;
    switch (grad_problem(p, g)) {
      case GradProblem::kOk: break;
      case GradProblem::kSparse: fail(where, i, "has a sparse gradient; fused kernels need dense gradients");
      case GradProblem::kComplex:
        fail(where, i, "is complex (" + std::string(c10::toString(p.scalar_type())) +
                           "); complex parameters are not supported");
      case GradProblem::kDtype:
        fail(where, i, "has dtype " + std::string(c10::toString(p.scalar_type())) +
                           "; expected float32, float64, float16 or bfloat16");
      case GradProblem::kMismatch:
        fail(where, i, "is " + describe(p) + " but its grad is " + describe(g) +
                           "; expected the same dtype, shape and device");
      case GradProblem::kGaps:
        fail(where, i, "is a strided view with gaps in its memory; fused kernels need parameters "
                       "that fill their memory");
    }
    const int64_t k = out.size();
    if (laid_out_unlike(p, g)) out.grad_fixes.push_back(k);
    if (partial_grad) out.partial_grads.push_back(k);
    // state[obj] as looked up ahead; looked up here when it was not (a param without state yet).
    PyObject* entry = keys.empty() ? nullptr : ahead.entries[i - block_begin].ptr();
    const bool looked_ahead = entry != nullptr;
    if (!keys.empty() && !looked_ahead) entry = state_entry(state.ptr(), obj);
    for (size_t s = 0; s < keys.size(); ++s) {
      PyObject* value = looked_ahead ? ahead.values[(i - block_begin) * keys.size() + s].ptr()
                        : entry && PyDict_Check(entry) ? PyDict_GetItem(entry, key_objects[s].ptr())
                                                       : nullptr;
      if (value == nullptr || value == Py_None) {  // none yet: the optimizer creates it
        out.states[s].push_owned(at::Tensor());
        continue;
      }
      // Anything else that is not a tensor comes from a corrupt or foreign checkpoint (torch fails on it
      // too): replacing it would train on with a fresh state under an old step count.
      if (!THPVariable_Check(value)) {
        fail(where, i, "state '" + keys[s] + "' is a " + Py_TYPE(value)->tp_name + ", expected a tensor");
      }
      const at::Tensor& t_arg = THPVariable_Unpack(value);
      if (is_scalar[s]) {
        if (is_dtensor(t_arg)) {
          out.states[s].push_owned(local_or_self(t_arg));
        } else {
          out.state_objects.append(py::handle(value));
          out.states[s].push_borrowed(t_arg);
        }
        out.scalar_checks[s].add(out.size(), out.states[s].back(), p.device());
        continue;
      }
      if (t_arg.sizes() != p_arg.sizes()) {  // global shapes for DTensors
        out.bad_state = std::make_tuple(i, keys[s], t_arg.sizes().vec(), p_arg.sizes().vec());
        return out;
      }
      const bool state_sharded = sharded || is_dtensor(t_arg);
      at::Tensor local;
      if (state_sharded) local = local_state(obj, sharded, value, t_arg, where, i, keys[s]);
      const at::Tensor& t = state_sharded ? local : t_arg;
      if (state_needs_fix(p, t)) out.state_fixes.emplace_back(static_cast<int64_t>(s), k);
      if (state_sharded) {
        out.states[s].push_owned(local);
      } else {
        out.state_objects.append(py::handle(value));
        out.states[s].push_borrowed(t);
      }
    }
    if (std::find(out.devices.begin(), out.devices.end(), p.device()) == out.devices.end()) {
      out.devices.push_back(p.device());
    }
    out.param_objects.append(py::handle(obj));
    if (sharded) out.params.push_owned(p);
    else out.params.push_borrowed(p);
    out.grads.push_owned(g);
  }
  for (size_t s = 0; s < keys.size(); ++s) out.scalar_checks[s].valid = is_scalar[s];
  return out;
}

}  // namespace

void add_step_helpers(py::module& m) {
  py::class_<CollectedGroup>(m, "CollectedGroup",
                             "Params of a param group that have grads, their grads and state "
                             "tensors, checked (see collect_group).")
      .def("__len__", &CollectedGroup::size)
      .def_property_readonly("params", [](const CollectedGroup& g) { return g.param_objects; })
      .def_property_readonly("grads", [](const CollectedGroup& g) { return g.grads.tensors(); })
      .def_property_readonly("keys", [](const CollectedGroup& g) { return g.keys; })
      .def_property_readonly("grad_fixes", [](const CollectedGroup& g) { return g.grad_fixes; })
      .def_property_readonly("partial_grads", [](const CollectedGroup& g) { return g.partial_grads; },
                             "Indices of DTensor grads that are Partial where their param is Replicate.")
      .def_property_readonly("state_fixes", [](const CollectedGroup& g) { return g.state_fixes; })
      .def_property_readonly("bad_state", [](const CollectedGroup& g) -> py::object {
        if (!g.bad_state) return py::none();
        return py::cast(*g.bad_state);
      }, "(param index in group, key, state shape, param shape) of a state of the wrong shape")
      .def_property_readonly("num_devices", [](const CollectedGroup& g) { return g.devices.size(); })
      .def_property_readonly("devices", [](const CollectedGroup& g) {
        py::list out;
        for (const auto& d : g.devices) out.append(py::cast(d));
        return out;
      }, "The params' devices, in order of first appearance.")
      .def_property_readonly("has_dtensor", [](const CollectedGroup& g) { return g.has_dtensor; },
                             "Whether some param is a DTensor (its local shard is what the kernels see).")
      .def_property_readonly("device", [](const CollectedGroup& g) { return py::cast(g.params.at(0).device()); })
      .def("state", &CollectedGroup::state_list, py::arg("key"),
           "State tensors under key, None where missing.")
      .def("missing", &CollectedGroup::missing, py::arg("key"), "Indices whose state key is missing.")
      .def("local_param", [](const CollectedGroup& g, int64_t i) { return g.params.at(i); },
           "The tensor the kernel updates for param i: the param, or a DTensor's local shard.")
      .def("set_grad", [](CollectedGroup& g, int64_t i, const at::Tensor& t) { g.grads.set_owned(i, local_or_self(t)); })
      .def("set_state", [](CollectedGroup& g, const std::string& key, int64_t i, const at::Tensor& t) {
        g.state_tensors(key).set_owned(i, local_or_self(t));
        g.scalar_checks.at(g.key_index(key)).valid = false;
      })
      .def("select", &CollectedGroup::select, py::arg("indices"))
      .def("by_device", [](py::object self) {
        // One device (the usual case): the group itself, not a copy of its lists.
        const auto& g = self.cast<const CollectedGroup&>();
        py::list out;
        if (g.devices.size() <= 1) {
          out.append(self);
          return out;
        }
        for (auto& part : g.by_device()) out.append(py::cast(std::move(part)));
        return out;
      }, "One group per device, in order of first appearance (the group itself when it has one).");
  py::class_<StateLookups>(m, "StateLookups",
                           "What collect_group looked up for one param group, kept between steps to "
                           "skip the lookups while the group and its state are unchanged.")
      .def(py::init<>())
      .def_property_readonly("reuses", [](const StateLookups& l) { return l.reuses; },
                             "Calls that found the group and the state dict unchanged.")
      .def_property_readonly("settled", [](const StateLookups& l) { return l.settled; },
                             "Params collected from the read of an unchanged group on all threads.")
      .def_property_readonly_static("supported", [](py::object) { return FUSEDOPT_DICT_TAGS != 0; },
                                    "Whether this Python has dict tags (3.11 to 3.13).");
  m.def("collect_group", &collect_group, py::arg("params"), py::arg("state"), py::arg("keys"),
        py::arg("where"), py::arg("scalar_keys") = std::vector<std::string>{},
        py::arg("lookups") = static_cast<StateLookups*>(nullptr),
        "Check and collect a param group in one pass (see step_helpers.cpp). States under scalar_keys "
        "(e.g. 'step') are collected without comparing their shape to the param's.");
  add_sgd_step(m);
  add_adam_step(m);
  add_rmsprop_adagrad_step(m);
  add_clip_helpers(m);
  add_state_allocation(m);
}

}  // namespace fusedopt::python
